// Gradient checks and edge cases for autograd/reduction.cpp. To test a new reduction: add a CHECK_GRADCHECK line
// over kAxisCases (the lambda receives the axes and keepdims), plus its edge cases (infinities, ties, bad axes).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "autograd/arithmetic.h"
#include "autograd/reduction.h"
#include "gradcheck.h"

using namespace tapegrad;
using testing::uniform;

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

struct AxisCase {
  Shape shape;
  std::vector<int> axes;
};
// Sizes 1, 3, 17 and 1000+; negative, non-adjacent and empty (= all) axis lists.
const std::vector<AxisCase> kAxisCases = {
    {{1}, {0}},       {{3}, {-1}},         {{17}, {}},          {{1003}, {0}},      {{3, 17}, {1}},
    {{3, 17}, {-2}},  {{17, 3}, {0, 1}},   {{3, 4, 5}, {0, 2}}, {{3, 4, 5}, {-1, 0}}, {{3, 4, 5}, {1}},
    {{2, 1, 3}, {1}}, {{2, 3, 2, 2}, {1, 3}}, {{2, 520}, {-1}}, {{1001, 2}, {0}},
};

Tensor from_values(std::initializer_list<double> values, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::f64);
  int64_t i = 0;
  for (double v : values) t.set_item(i++, v);
  return t;
}
}  // namespace

TEST_CASE("sum, mean, max, logsumexp: gradients match central differences over axes, with and without keepdims") {
  for (const AxisCase& c : kAxisCases) {
    for (bool keep : {false, true}) {
      CAPTURE(c.shape);
      CAPTURE(keep);
      const Tensor x = uniform(c.shape, -3, 3, 5 + c.shape.numel());  // continuous values: no ties for max
      const auto axes = c.axes;
      CHECK_GRADCHECK([&](Tape&, const std::vector<Var>& v) { return sum(v[0], axes, keep); }, {x});
      CHECK_GRADCHECK([&](Tape&, const std::vector<Var>& v) { return mean(v[0], axes, keep); }, {x});
      CHECK_GRADCHECK([&](Tape&, const std::vector<Var>& v) { return max(v[0], axes, keep); }, {x});
      CHECK_GRADCHECK([&](Tape&, const std::vector<Var>& v) { return logsumexp(v[0], axes, keep); }, {x});
    }
  }
}

TEST_CASE("reductions give the documented shapes: keepdims keeps size-1 axes, an empty axis list reduces all") {
  Tape tape;
  Var x = tape.leaf(uniform({3, 4, 5}, -1, 1, 1));
  CHECK(sum(x, {0, 2}).shape() == Shape{4});
  CHECK(sum(x, {0, 2}, true).shape() == Shape{1, 4, 1});
  CHECK(mean(x, {-1}).shape() == Shape{3, 4});
  CHECK(max(x, {}, true).shape() == Shape{1, 1, 1});
  CHECK(logsumexp(x, {}).shape() == Shape{});
  CHECK(sum(x).shape() == Shape{});
  CHECK(mean(x).shape() == Shape{});
  CHECK(sum(x).item() == doctest::Approx(sum(x, {0, 1, 2}).item()));
}

TEST_CASE("full sum and mean: values and gradients (dx = dy and dy / N)") {
  for (int64_t n : {1, 3, 17, 1001}) {
    const Tensor x = uniform({n}, -2, 2, 40 + n);
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return sum(v[0]); }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return mean(v[0] * v[0]); }, {x});
    Tape tape;
    Var a = tape.leaf(x);
    Var m = mean(a);
    double expected = 0;
    for (int64_t i = 0; i < n; ++i) expected += x.item(i);
    CHECK(m.item() == doctest::Approx(expected / n));
    tape.backward(m);
    CHECK(a.grad().item(n - 1) == doctest::Approx(1.0 / n));
  }
}

TEST_CASE("max: the gradient is split evenly among tied maxima (like torch.amax)") {
  Tape tape;
  Var x = tape.leaf(from_values({1, 3, 3, 2, 5, 0}, {2, 3}));
  Var y = max(x, {1});
  CHECK(y.value().item(0) == 3.0);
  tape.backward(y, from_values({1, 2}, {2}));
  const Tensor g = x.grad();
  CHECK(g.item(0) == 0.0);
  CHECK(g.item(1) == 0.5);
  CHECK(g.item(2) == 0.5);
  CHECK(g.item(4) == 2.0);
  CHECK(g.item(5) == 0.0);
}

TEST_CASE("logsumexp: -inf entries contribute nothing, a row of all -inf gives -inf, gradients stay finite") {
  for (DType dtype : {DType::f32, DType::f64}) {
    Tape tape;
    Var x = tape.leaf(from_values({0, -kInf, 0, -kInf, -kInf, -kInf, 1e4, -1e4, 1e4}, {3, 3}).to(dtype));
    Var y = logsumexp(x, {-1});
    CHECK(y.value().item(0) == doctest::Approx(std::log(2.0)));
    CHECK(y.value().item(1) == -kInf);
    CHECK(y.value().item(2) == doctest::Approx(1e4 + std::log(2.0)));
    tape.backward(y, Tensor::full({3}, 1.0, dtype));
    const Tensor g = x.grad();
    const double expected[] = {0.5, 0, 0.5, 0, 0, 0, 0.5, 0, 0.5};
    // float32 rounds 1e4 + log 2 to its ulp (~1e-3), so exp(x - y) is only that close to 1/2 there (as in PyTorch).
    const double tol = dtype == DType::f32 ? 1e-3 : 1e-12;
    for (int i = 0; i < 9; ++i) CHECK(g.item(i) == doctest::Approx(expected[i]).epsilon(tol));
  }
}

TEST_CASE("logsumexp of a line holding +inf is +inf (shift by 0, as PyTorch)") {
  Tape tape;
  Var x = tape.leaf(from_values({1, kInf, 0}, {3}));
  CHECK(logsumexp(x, {0}).item() == kInf);
}

TEST_CASE("an input used twice gets both contributions; an unused input gets zero") {
  const Tensor x = uniform({3, 4, 5}, -2, 2, 8), unused = uniform({2}, -1, 1, 9);
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return logsumexp(v[0], {0, 2}) * max(v[0], {-1, 0}); },
                  {x, unused});
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return log_softmax(v[0], 1) + softmax(v[0], 1); }, {x, unused});
}

TEST_CASE("softmax, log_softmax: gradients match central differences along any axis") {
  const std::vector<std::pair<Shape, int>> cases = {
      {{1}, 0},       {{3}, -1},      {{17}, 0},      {{3, 17}, 1},   {{17, 3}, 0},     {{3, 4, 5}, 0},
      {{3, 4, 5}, 1}, {{3, 4, 5}, -1}, {{3, 4, 5}, -3}, {{2, 1003}, -1}, {{1001, 2}, 0},
  };
  for (const auto& [shape, axis] : cases) {
    CAPTURE(shape);
    CAPTURE(axis);
    const Tensor x = uniform(shape, -4, 4, 60 + shape.numel());
    const int a = axis;
    CHECK_GRADCHECK([a](Tape&, const std::vector<Var>& v) { return softmax(v[0], a); }, {x});
    CHECK_GRADCHECK([a](Tape&, const std::vector<Var>& v) { return log_softmax(v[0], a); }, {x});
  }
}

TEST_CASE("log_softmax of [1e4, -1e4, 0] is exactly [0, -2e4, -1e4]; softmax is [1, 0, 0]; gradients finite") {
  for (DType dtype : {DType::f32, DType::f64}) {
    Tape tape;
    Var x = tape.leaf(from_values({1e4, -1e4, 0}, {1, 3}).to(dtype));
    Var ls = log_softmax(x, -1), s = softmax(x, -1);
    CHECK(ls.value().item(0) == 0.0);
    CHECK(ls.value().item(1) == -2e4);
    CHECK(ls.value().item(2) == -1e4);
    CHECK(s.value().item(0) == 1.0);
    CHECK(s.value().item(1) == 0.0);
    CHECK(s.value().item(2) == 0.0);
    tape.backward(sum(ls * s + ls));
    for (int i = 0; i < 3; ++i) CHECK(std::isfinite(x.grad().item(i)));
  }
}

TEST_CASE("reductions and softmax reject bad and repeated axes, naming the op") {
  Tape tape;
  Var x = tape.leaf(Tensor::zeros({2, 3}, DType::f64));
  CHECK_THROWS_WITH_AS(sum(x, {2}), "sum: axis must be in [-2, 2), got 2 for shape (2, 3)", ValueError);
  CHECK_THROWS_WITH_AS(mean(x, {-3}), "mean: axis must be in [-2, 2), got -3 for shape (2, 3)", ValueError);
  CHECK_THROWS_WITH_AS(max(x, {0, -2}), "max: axes must be distinct, got [0, -2] for shape (2, 3)", ValueError);
  CHECK_THROWS_WITH_AS(logsumexp(x, {1, 1}), "logsumexp: axes must be distinct, got [1, 1] for shape (2, 3)",
                       ValueError);
  CHECK_THROWS_WITH_AS(softmax(x, 2), "softmax: axis must be in [-2, 2), got 2 for shape (2, 3)", ValueError);
  CHECK_THROWS_WITH_AS(log_softmax(x, -3), "log_softmax: axis must be in [-2, 2), got -3 for shape (2, 3)", ValueError);
}
