// Dense layers, activations as modules, Sequential and an MLP builder (PyTorch's nn.Linear, nn.Sequential, ...).
// Shapes: x (B, D_in) -> (B, D_out).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/module.h"
#include "ops/random.h"

namespace tapegrad {

// y = x W^T + b with W: (out, in), b: (out,), PyTorch's layout and initialisation.
class Linear : public Layer {
 public:
  Linear(int64_t in_features, int64_t out_features, Generator& generator, bool bias = true);
  Var forward(const Var& x) override;
  std::string type_name() const override { return "Linear"; }
  std::string describe() const override;
  Parameter& weight() { return *weight_; }
  Parameter* bias() { return bias_; }

 private:
  int64_t in_, out_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
};

// An activation function as a layer (no parameters).
class Activation : public Layer {
 public:
  enum class Kind { relu, leaky_relu, elu, tanh, sigmoid, softplus };
  explicit Activation(Kind kind, double parameter = 0.0);
  static Kind parse(const std::string& name);  // "relu", "tanh", ...; throws ValueError listing the choices
  Var forward(const Var& x) override;
  std::string type_name() const override;
  std::string describe() const override;

 private:
  Kind kind_;
  double parameter_;  // leaky_relu's slope or elu's alpha
};

class Sequential : public Layer {
 public:
  Sequential() = default;
  // Appends a layer built in place: seq.add<Linear>(784, 400, gen). Children are named "0", "1", ...
  template <class L, class... Args>
  L& add(Args&&... args) {
    auto layer = std::make_unique<L>(std::forward<Args>(args)...);
    L& ref = *layer;
    register_module(std::to_string(layers_.size()), ref);
    layers_.push_back(std::move(layer));
    return ref;
  }
  Var forward(const Var& x) override;
  std::string type_name() const override { return "Sequential"; }
  size_t size() const { return layers_.size(); }

 private:
  std::vector<std::unique_ptr<Layer>> layers_;
};

// Linear layers of the given sizes with `activation` between them (none after the last):
// mlp({784, 400, 20}) = Linear(784, 400), ReLU, Linear(400, 20).
void build_mlp(Sequential& seq, const std::vector<int64_t>& sizes, Generator& generator,
               Activation::Kind activation = Activation::Kind::relu);

}  // namespace tapegrad
