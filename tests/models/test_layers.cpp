#include <doctest/doctest.h>

#include <cmath>

#include "autograd/arithmetic.h"
#include "autograd/reduction.h"
#include "models/layers.h"

using namespace tapegrad;

TEST_CASE("Linear: PyTorch layout and default init bound 1/sqrt(fan_in), named parameters, summary") {
  Generator gen(3);
  Sequential mlp;
  build_mlp(mlp, {784, 400, 20}, gen);
  auto named = mlp.named_parameters();
  REQUIRE(named.size() == 4);
  CHECK(named[0].first == "0.weight");
  CHECK(named[0].second->value.shape() == Shape{400, 784});
  CHECK(named[3].first == "2.bias");
  CHECK(mlp.parameter_count() == 784 * 400 + 400 + 400 * 20 + 20);
  const double bound = 1 / std::sqrt(784.0);
  double lo = 1, hi = -1;
  for (int64_t i = 0; i < named[0].second->value.numel(); ++i) {
    lo = std::min(lo, named[0].second->value.item(i));
    hi = std::max(hi, named[0].second->value.item(i));
  }
  CHECK(lo >= -bound);
  CHECK(hi <= bound);
  CHECK(hi > 0.99 * bound);  // uses the whole range
  const std::string summary = mlp.summary();
  CHECK(summary.find("Linear(in=784, out=400)") != std::string::npos);
  CHECK(summary.find("ReLU") != std::string::npos);
  CHECK_THROWS_AS(Linear(0, 3, gen), ValueError);
  CHECK_THROWS_WITH_AS(Activation::parse("gelu"), doctest::Contains("must be one of relu"), ValueError);
}

TEST_CASE("Linear: same seed, same weights; train/eval mode propagates to children") {
  Generator a(7), b(7);
  Linear la(5, 3, a), lb(5, 3, b);
  CHECK(bitwise_equal(la.weight().value, lb.weight().value));
  Sequential seq;
  build_mlp(seq, {4, 8, 2}, a);
  seq.eval();
  CHECK_FALSE(seq.is_training());
  seq.train();
  CHECK(seq.is_training());
}

TEST_CASE("an MLP forward/backward fills every parameter's gradient, named as in a state_dict") {
  Generator gen(11);
  Sequential mlp;
  build_mlp(mlp, {3, 5, 2}, gen, Activation::Kind::tanh);
  Tape tape;
  Var x = tape.constant(Tensor::from({0.1f, -0.2f, 0.3f, 0.5f, 0.4f, -0.6f}, {2, 3}));
  Var y = mlp(x);
  CHECK(y.shape() == Shape{2, 2});
  tape.backward(sum(y * y));
  for (auto& [name, p] : mlp.named_parameters()) {
    double norm = 0;
    for (int64_t i = 0; i < p->grad.numel(); ++i) norm += std::abs(p->grad.item(i));
    CAPTURE(name);
    CHECK(norm > 0);
  }
}

#include "models/conv_layers.h"

TEST_CASE("Conv2d / ConvTranspose2d layers: PyTorch weight layouts and a conv encoder-decoder round trip of shapes") {
  Generator gen(5);
  Conv2d enc({.in_channels = 1, .out_channels = 32, .kernel_size = 4, .stride = 2, .padding = 1}, gen);
  ConvTranspose2d dec({.in_channels = 32, .out_channels = 1, .kernel_size = 4, .stride = 2, .padding = 1}, gen);
  auto enc_params = enc.named_parameters(), dec_params = dec.named_parameters();
  CHECK(enc_params[0].second->value.shape() == Shape{32, 1, 4, 4});
  CHECK(dec_params[0].second->value.shape() == Shape{32, 1, 4, 4});  // (in, out, k, k) as PyTorch
  CHECK(dec_params[1].second->value.shape() == Shape{1});
  Tape tape;
  Var x = tape.constant(Tensor::zeros({3, 1, 28, 28}));
  Var h = enc(x);
  CHECK(h.shape() == Shape{3, 32, 14, 14});
  CHECK(dec(h).shape() == Shape{3, 1, 28, 28});
  Flatten flatten;
  Unflatten unflatten(32, 14, 14);
  CHECK(unflatten(flatten(h)).shape() == h.shape());
  CHECK_THROWS_AS(Conv2d({.in_channels = 1, .out_channels = 0, .kernel_size = 3}, gen), ValueError);
  CHECK(enc.describe() == "1, 32, kernel_size=4, stride=2, padding=1");
}
