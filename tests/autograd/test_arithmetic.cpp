// Gradient checks for autograd/arithmetic.cpp. How to add a test for a new op: write its forward as a lambda
// over Vars and call CHECK_GRADCHECK(lambda, {inputs}); keep test points off kinks and out of domain edges.
#include <doctest/doctest.h>

#include "autograd/arithmetic.h"
#include "gradcheck.h"

using namespace tapegrad;
using testing::uniform;
using testing::uniform_off_zero;

namespace {
const std::vector<std::pair<Shape, Shape>> kBroadcastCases = {
    {{1}, {1}},         {{3}, {3}},       {{17}, {17}},       {{1000}, {1000}}, {{3, 4}, {4}},
    {{3, 1}, {1, 5}},   {{2, 1, 5}, {3, 1}}, {{}, {3, 17}},   {{4, 3}, {4, 1}}, {{1, 3, 1}, {2, 1, 4}},
};
}  // namespace

TEST_CASE("add, sub, mul, div: gradients match central differences over broadcasting shapes") {
  for (const auto& [sa, sb] : kBroadcastCases) {
    CAPTURE(sa);
    CAPTURE(sb);
    const Tensor a = uniform(sa, -2, 2, 1), b = uniform(sb, 0.5, 2, 2);  // b away from 0 for div
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return v[0] + v[1]; }, {a, b});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return v[0] - v[1]; }, {a, b});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return v[0] * v[1]; }, {a, b});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return v[0] / v[1]; }, {a, b});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return v[1] / v[0] + v[0]; }, {b, a.shape().numel() ? b : a});
  }
}

TEST_CASE("scalar forms and neg: gradients match central differences") {
  for (int64_t n : {1, 3, 17, 1001}) {
    const Tensor x = uniform({n}, 0.5, 3, n);
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return 2.5 * v[0] + 1.0; }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return 1.0 - v[0] / 4.0; }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return 3.0 / v[0]; }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return -v[0]; }, {x});
  }
}

TEST_CASE("pow, square, sqrt, exp, log, log1p: gradients match central differences") {
  for (int64_t n : {1, 3, 17, 1001}) {
    const Tensor positive = uniform({n}, 0.2, 3, 7 + n), any = uniform({n}, -3, 3, 8 + n);
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return pow(v[0], 2.5); }, {positive});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return pow(v[0], -1.5); }, {positive});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return square(v[0]); }, {any});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return sqrt(v[0]); }, {positive});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return exp(v[0]); }, {any});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return log(v[0]); }, {positive});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return log1p(v[0]); }, {positive});
  }
}

TEST_CASE("abs and clamp: gradients match central differences off their kinks") {
  for (int64_t n : {1, 3, 17, 1001}) {
    const Tensor x = uniform_off_zero({n}, -3, 3, 0.05, 30 + n);
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return abs(v[0]); }, {x});
    Tensor y = x.clone();
    for (int64_t i = 0; i < n; ++i)  // keep points off the clamp edges at -1 and 2
      if (std::abs(y.item(i) + 1) < 0.05 || std::abs(y.item(i) - 2) < 0.05) y.set_item(i, 0.5);
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return clamp(v[0], -1, 2); }, {y});
  }
}

TEST_CASE("an input used twice gets both contributions; an unused input gets zero") {
  const Tensor x = uniform({3, 4}, -1, 1, 3), unused = uniform({2}, -1, 1, 4);
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return v[0] * v[0] + exp(v[0]); }, {x, unused});
  Tape tape;
  Var a = tape.leaf(x), b = tape.leaf(unused);
  Var y = a * a;
  tape.backward(y, Tensor::full(y.shape(), 1.0, DType::f64));
  for (int64_t i = 0; i < 12; ++i) CHECK(a.grad().item(i) == doctest::Approx(2 * x.item(i)));
  CHECK(b.grad().item(0) == 0.0);
  CHECK(b.grad().item(1) == 0.0);
}

TEST_CASE("binary ops name the op and both shapes on a mismatch") {
  Tape tape;
  Var a = tape.constant(Tensor::zeros({2, 3})), b = tape.constant(Tensor::zeros({4}));
  CHECK_THROWS_WITH_AS(a + b, "add: shapes must broadcast, got (2, 3) and (4,)", ShapeError);
  CHECK_THROWS_WITH_AS(a * b, "mul: shapes must broadcast, got (2, 3) and (4,)", ShapeError);
  Var c = tape.constant(Tensor::zeros({2, 3}, DType::f64));
  CHECK_THROWS_WITH_AS(a - c, "sub: dtypes must match, got float32 and float64", ValueError);
  CHECK_THROWS_AS(clamp(a, 1, 0), ValueError);
}
