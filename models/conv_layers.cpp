#include "models/conv_layers.h"

#include "autograd/shape.h"
#include "models/init.h"

namespace tapegrad {

Convolution::Convolution(const ConvSpec& s, bool transposed, Generator& generator, bool bias)
    : spec_(s), transposed_(transposed) {
  const char* layer = transposed ? "ConvTranspose2d" : "Conv2d";
  if (s.in_channels <= 0 || s.out_channels <= 0 || s.kernel_size <= 0 || s.stride <= 0 || s.dilation <= 0 ||
      s.padding < 0)
    fail<ValueError>(layer, ": channels, kernel_size, stride, dilation must be > 0 and padding >= 0, got in=",
                     s.in_channels, " out=", s.out_channels, " k=", s.kernel_size, " stride=", s.stride,
                     " padding=", s.padding, " dilation=", s.dilation);
  const int64_t k = s.kernel_size;
  const Shape weight_shape = transposed ? Shape{s.in_channels, s.out_channels, k, k} : Shape{s.out_channels, s.in_channels, k, k};
  const int64_t fan_in = weight_shape[1] * k * k;  // PyTorch: weight.size(1) * receptive field, for both
  weight_ = &register_parameter("weight", default_uniform_init(weight_shape, fan_in, generator));
  if (bias) bias_ = &register_parameter("bias", default_uniform_init({s.out_channels}, fan_in, generator));
}

Var Convolution::forward(const Var& x) {
  Tape& tape = x.tape();
  const Conv2dOptions options{.stride = {spec_.stride, spec_.stride}, .padding = {spec_.padding, spec_.padding},
                              .dilation = {spec_.dilation, spec_.dilation},
                              .output_padding = {spec_.output_padding, spec_.output_padding}};
  const Var weight = tape.param(*weight_);
  if (transposed_)
    return bias_ ? conv_transpose2d(x, weight, tape.param(*bias_), options) : conv_transpose2d(x, weight, options);
  return bias_ ? conv2d(x, weight, tape.param(*bias_), options) : conv2d(x, weight, options);
}

std::string Convolution::describe() const {
  std::string out = cat(spec_.in_channels, ", ", spec_.out_channels, ", kernel_size=", spec_.kernel_size,
                        ", stride=", spec_.stride, ", padding=", spec_.padding);
  if (spec_.dilation != 1) out += cat(", dilation=", spec_.dilation);
  if (transposed_ && spec_.output_padding) out += cat(", output_padding=", spec_.output_padding);
  return out;
}

Var Flatten::forward(const Var& x) { return reshape(x, Shape{x.dim(0), x.numel() / std::max<int64_t>(x.dim(0), 1)}); }

Var Unflatten::forward(const Var& x) {
  if (x.rank() != 2 || x.dim(1) != c_ * h_ * w_)
    fail<ShapeError>("Unflatten: input must be (B, ", c_ * h_ * w_, "), got ", x.shape());
  return reshape(x, Shape{x.dim(0), c_, h_, w_});
}

std::string Unflatten::describe() const { return cat(c_, ", ", h_, ", ", w_); }

namespace {
void check_quarterable(int64_t height, int64_t width, const char* model) {
  if (height <= 0 || width <= 0 || height % 4 || width % 4)
    fail<ValueError>(model, ": the conv architecture halves the image twice, so height and width must be positive "
                     "multiples of 4, got ", height, "x", width);
}
}  // namespace

int64_t add_conv_encoder(Sequential& seq, int64_t height, int64_t width, Generator& gen, const char* model) {
  check_quarterable(height, width, model);
  seq.add<Unflatten>(1, height, width);
  seq.add<Conv2d>(ConvSpec{1, 32, 4, 2, 1}, gen);
  seq.add<Activation>(Activation::Kind::relu);
  seq.add<Conv2d>(ConvSpec{32, 64, 4, 2, 1}, gen);
  seq.add<Activation>(Activation::Kind::relu);
  seq.add<Flatten>();
  return 64 * (height / 4) * (width / 4);
}

void add_conv_decoder(Sequential& seq, int64_t in, int64_t height, int64_t width, Generator& gen, const char* model) {
  check_quarterable(height, width, model);
  seq.add<Linear>(in, 64 * (height / 4) * (width / 4), gen);
  seq.add<Activation>(Activation::Kind::relu);
  seq.add<Unflatten>(64, height / 4, width / 4);
  seq.add<ConvTranspose2d>(ConvSpec{64, 32, 4, 2, 1}, gen);
  seq.add<Activation>(Activation::Kind::relu);
  seq.add<ConvTranspose2d>(ConvSpec{32, 1, 4, 2, 1}, gen);
  seq.add<Flatten>();
}

}  // namespace tapegrad
