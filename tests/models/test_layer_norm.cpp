// Tests of the worked example in docs/adding-a-layer.md.
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/arithmetic.h"
#include "autograd/reduction.h"
#include "ops/elementwise.h"
#include "gradcheck.h"
#include "models/layer_norm.h"

using namespace tapegrad;

TEST_CASE("LayerNorm: each row of the output has mean 0 and variance 1 before the affine part") {
  LayerNorm norm(5);
  Tape tape;
  Var x = tape.constant(Tensor::from({1, 2, 3, 4, 10, -3, 0, 0, 0, 3}, {2, 5}));
  const Tensor y = norm(x).value();
  for (int r = 0; r < 2; ++r) {
    double mean = 0, var = 0;
    for (int k = 0; k < 5; ++k) mean += y.item(5 * r + k) / 5;
    for (int k = 0; k < 5; ++k) var += (y.item(5 * r + k) - mean) * (y.item(5 * r + k) - mean) / 5;
    CHECK(mean == doctest::Approx(0).epsilon(1e-6));
    CHECK(var == doctest::Approx(1).epsilon(1e-4));  // 1 - eps / (var + eps)
  }
  CHECK_THROWS_WITH_AS(norm(tape.constant(Tensor::zeros({2, 4}))), "LayerNorm: last dimension must be 5, got shape (2, 4)",
                       ShapeError);
  CHECK(norm.named_parameters()[0].first == "weight");
}

TEST_CASE("LayerNorm: gradients with respect to the input, weight and bias match central differences") {
  for (int64_t d : {1, 3, 17}) {
    CAPTURE(d);
    LayerNorm norm(d, 1e-5, DType::f64);  // float64 parameters, so that finite differences are exact enough
    Generator gen(d);
    for (auto& [name, p] : norm.named_parameters()) gen.uniform(p->value, 0.5, 1.5);
    const Tensor x = testing::uniform({4, d}, -2, 2, 1), w = testing::uniform({4, d}, -1, 1, 2);
    CHECK_GRADCHECK([&norm](Tape&, const std::vector<Var>& v) { return norm(v[0]); }, {x});
    // Parameters are not gradcheck leaves: perturb them directly. L = sum(norm(x) * w).
    auto loss = [&] {
      Tape tape;
      return sum(norm(tape.constant(x)) * tape.constant(w)).item();
    };
    for (auto& [name, p] : norm.named_parameters()) ops::zero(p->grad);
    {
      Tape tape;
      tape.backward(sum(norm(tape.constant(x)) * tape.constant(w)));
    }
    for (auto& [name, p] : norm.named_parameters())
      for (int64_t k = 0; k < d; ++k) {
        const double saved = p->value.item(k), h = 1e-6;
        p->value.set_item(k, saved + h);
        const double plus = loss();
        p->value.set_item(k, saved - h);
        const double minus = loss();
        p->value.set_item(k, saved);
        CAPTURE(name);
        CHECK(p->grad.item(k) == doctest::Approx((plus - minus) / (2 * h)).epsilon(1e-6));
      }
  }
}
