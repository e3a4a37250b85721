#include "models/layers.h"

#include "autograd/activation.h"
#include "autograd/linalg.h"
#include "models/init.h"

namespace tapegrad {

Linear::Linear(int64_t in_features, int64_t out_features, Generator& generator, bool bias)
    : in_(in_features), out_(out_features) {
  if (in_features <= 0 || out_features <= 0)
    fail<ValueError>("Linear: sizes must be > 0, got in=", in_features, ", out=", out_features);
  weight_ = &register_parameter("weight", default_uniform_init({out_, in_}, in_, generator));
  if (bias) bias_ = &register_parameter("bias", default_uniform_init({out_}, in_, generator));
}

std::string Linear::describe() const {
  return cat("in=", in_, ", out=", out_, bias_ ? "" : ", bias=false");
}

Var Linear::forward(const Var& x) {
  Tape& tape = x.tape();
  if (bias_) return linear(x, tape.param(*weight_), tape.param(*bias_));
  return linear(x, tape.param(*weight_));
}

Activation::Activation(Kind kind, double parameter) : kind_(kind), parameter_(parameter) {
  if (parameter_ == 0.0 && kind == Kind::leaky_relu) parameter_ = 0.01;
  if (parameter_ == 0.0 && kind == Kind::elu) parameter_ = 1.0;
}

Activation::Kind Activation::parse(const std::string& name) {
  if (name == "relu") return Kind::relu;
  if (name == "leaky_relu") return Kind::leaky_relu;
  if (name == "elu") return Kind::elu;
  if (name == "tanh") return Kind::tanh;
  if (name == "sigmoid") return Kind::sigmoid;
  if (name == "softplus") return Kind::softplus;
  fail<ValueError>("activation: name must be one of relu, leaky_relu, elu, tanh, sigmoid, softplus, got '", name, "'");
}

Var Activation::forward(const Var& x) {
  switch (kind_) {
    case Kind::relu: return relu(x);
    case Kind::leaky_relu: return leaky_relu(x, parameter_);
    case Kind::elu: return elu(x, parameter_);
    case Kind::tanh: return tanh(x);
    case Kind::sigmoid: return sigmoid(x);
    case Kind::softplus: return softplus(x);
  }
  return x;
}

std::string Activation::type_name() const {
  switch (kind_) {
    case Kind::relu: return "ReLU";
    case Kind::leaky_relu: return "LeakyReLU";
    case Kind::elu: return "ELU";
    case Kind::tanh: return "Tanh";
    case Kind::sigmoid: return "Sigmoid";
    case Kind::softplus: return "Softplus";
  }
  return "Activation";
}

std::string Activation::describe() const {
  if (kind_ == Kind::leaky_relu) return cat("negative_slope=", parameter_);
  if (kind_ == Kind::elu) return cat("alpha=", parameter_);
  return "";
}

Var Sequential::forward(const Var& x) {
  Var h = x;
  for (auto& layer : layers_) h = layer->forward(h);
  return h;
}

void build_mlp(Sequential& seq, const std::vector<int64_t>& sizes, Generator& generator, Activation::Kind activation) {
  if (sizes.size() < 2) fail<ValueError>("build_mlp: sizes must list at least input and output, got ", sizes.size());
  for (size_t i = 0; i + 1 < sizes.size(); ++i) {
    seq.add<Linear>(sizes[i], sizes[i + 1], generator);
    if (i + 2 < sizes.size()) seq.add<Activation>(activation);
  }
}

}  // namespace tapegrad
