#include "models/conv_layers.h"

#include "autograd/shape.h"
#include "models/init.h"

namespace tapegrad {

namespace {
Conv2dOptions options_of(const ConvSpec& s) {
  return {.stride = {s.stride, s.stride}, .padding = {s.padding, s.padding}, .dilation = {s.dilation, s.dilation},
          .output_padding = {s.output_padding, s.output_padding}};
}
void check_spec(const char* layer, const ConvSpec& s) {
  if (s.in_channels <= 0 || s.out_channels <= 0 || s.kernel_size <= 0 || s.stride <= 0 || s.dilation <= 0 ||
      s.padding < 0)
    fail<ValueError>(layer, ": channels, kernel_size, stride, dilation must be > 0 and padding >= 0, got in=",
                     s.in_channels, " out=", s.out_channels, " k=", s.kernel_size, " stride=", s.stride,
                     " padding=", s.padding, " dilation=", s.dilation);
}
std::string describe_spec(const ConvSpec& s, bool transposed) {
  std::string out = cat(s.in_channels, ", ", s.out_channels, ", kernel_size=", s.kernel_size, ", stride=", s.stride,
                        ", padding=", s.padding);
  if (s.dilation != 1) out += cat(", dilation=", s.dilation);
  if (transposed && s.output_padding) out += cat(", output_padding=", s.output_padding);
  return out;
}
}  // namespace

Conv2d::Conv2d(const ConvSpec& spec, Generator& generator, bool bias) : spec_(spec) {
  check_spec("Conv2d", spec);
  const int64_t k = spec.kernel_size, fan_in = spec.in_channels * k * k;
  weight_ = &register_parameter("weight", default_uniform_init({spec.out_channels, spec.in_channels, k, k}, fan_in, generator));
  if (bias) bias_ = &register_parameter("bias", default_uniform_init({spec.out_channels}, fan_in, generator));
}

Var Conv2d::forward(const Var& x) {
  Tape& tape = x.tape();
  if (bias_) return conv2d(x, tape.param(*weight_), tape.param(*bias_), options_of(spec_));
  return conv2d(x, tape.param(*weight_), options_of(spec_));
}

std::string Conv2d::describe() const { return describe_spec(spec_, false); }

ConvTranspose2d::ConvTranspose2d(const ConvSpec& spec, Generator& generator, bool bias) : spec_(spec) {
  check_spec("ConvTranspose2d", spec);
  const int64_t k = spec.kernel_size, fan_in = spec.out_channels * k * k;
  weight_ = &register_parameter("weight", default_uniform_init({spec.in_channels, spec.out_channels, k, k}, fan_in, generator));
  if (bias) bias_ = &register_parameter("bias", default_uniform_init({spec.out_channels}, fan_in, generator));
}

Var ConvTranspose2d::forward(const Var& x) {
  Tape& tape = x.tape();
  if (bias_) return conv_transpose2d(x, tape.param(*weight_), tape.param(*bias_), options_of(spec_));
  return conv_transpose2d(x, tape.param(*weight_), options_of(spec_));
}

std::string ConvTranspose2d::describe() const { return describe_spec(spec_, true); }

Var Flatten::forward(const Var& x) { return reshape(x, Shape{x.dim(0), x.numel() / std::max<int64_t>(x.dim(0), 1)}); }

Var Unflatten::forward(const Var& x) {
  if (x.rank() != 2 || x.dim(1) != c_ * h_ * w_)
    fail<ShapeError>("Unflatten: input must be (B, ", c_ * h_ * w_, "), got ", x.shape());
  return reshape(x, Shape{x.dim(0), c_, h_, w_});
}

std::string Unflatten::describe() const { return cat(c_, ", ", h_, ", ", w_); }

}  // namespace tapegrad
