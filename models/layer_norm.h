// LayerNorm (Ba, Kiros & Hinton 2016, "Layer Normalization", eq. 4), over the last axis of size D:
//   y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias,   var the biased (1/D) variance, as in PyTorch.
// weight starts at 1 and bias at 0 (nn.LayerNorm's default). This layer is the worked example of
// docs/adding-a-layer.md: it is built from existing differentiable ops, so it needs no backward of its own.
#pragma once

#include <string>

#include "models/module.h"

namespace tapegrad {

class LayerNorm : public Layer {
 public:
  explicit LayerNorm(int64_t features, double eps = 1e-5, DType dtype = DType::f32);
  Var forward(const Var& x) override;  // x: (..., D) -> (..., D)
  std::string type_name() const override { return "LayerNorm"; }
  std::string describe() const override;

 private:
  int64_t features_;
  double eps_;
  Parameter* weight_;
  Parameter* bias_;
};

}  // namespace tapegrad
