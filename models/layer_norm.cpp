#include "models/layer_norm.h"

#include "autograd/arithmetic.h"
#include "autograd/reduction.h"

namespace tapegrad {

LayerNorm::LayerNorm(int64_t features, double eps, DType dtype) : features_(features), eps_(eps) {
  if (features <= 0) fail<ValueError>("LayerNorm: features must be > 0, got ", features);
  if (!(eps > 0)) fail<ValueError>("LayerNorm: eps must be > 0, got ", eps);
  weight_ = &register_parameter("weight", Tensor::full({features}, 1.0, dtype));
  bias_ = &register_parameter("bias", Tensor::zeros({features}, dtype));
}

Var LayerNorm::forward(const Var& x) {
  if (x.rank() < 1 || x.dim(-1) != features_)
    fail<ShapeError>("LayerNorm: last dimension must be ", features_, ", got shape ", x.shape());
  Tape& tape = x.tape();
  Var centered = x - mean(x, {-1}, /*keepdims=*/true);
  Var variance = mean(square(centered), {-1}, /*keepdims=*/true);
  Var normalized = centered / sqrt(variance + eps_);
  return normalized * tape.param(*weight_) + tape.param(*bias_);  // (D,) broadcasts over the leading axes
}

std::string LayerNorm::describe() const { return cat(features_, ", eps=", eps_); }

}  // namespace tapegrad
