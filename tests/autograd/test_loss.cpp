// Gradient checks, closed forms, stability and errors for autograd/loss.cpp. To test a new loss: a
// CHECK_GRADCHECK line per reduction (kReductions), a value against its closed form, extreme inputs.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "autograd/loss.h"
#include "autograd/reduction.h"
#include "autograd/shape.h"
#include "gradcheck.h"

using namespace tapegrad;
using testing::uniform;

namespace {
const Reduction kReductions[] = {Reduction::none, Reduction::sum, Reduction::mean};
const std::vector<Shape> kShapes = {{1}, {3}, {17}, {3, 17}, {2, 3, 2}, {2, 517}};

Tensor from_values(std::initializer_list<double> values, const Shape& shape, DType dtype = DType::f64) {
  Tensor t = Tensor::empty(shape, dtype);
  int64_t i = 0;
  for (double v : values) t.set_item(i++, v);
  return t;
}

// Reduction::sum over a thousand elements makes |L| ~ 1e3, and the central difference's rounding error
// eps |L| / h (~2e-7 at h = 1e-6) swamps small partials. A larger step keeps it ~1e-9; the truncation error
// h^2 f''' / 6 of these smooth losses stays below 1e-8.
testing::GradcheckOptions options_for(Reduction r) {
  testing::GradcheckOptions o;
  if (r == Reduction::sum) o.step = 1e-4;
  return o;
}

std::vector<int32_t> labels_for(int64_t B, int64_t C) {
  std::vector<int32_t> labels(B);
  for (int64_t b = 0; b < B; ++b) labels[b] = static_cast<int32_t>((7 * b + 3) % C);
  return labels;
}
}  // namespace

TEST_CASE("binary_cross_entropy_with_logits, mse_loss: gradients for both inputs match central differences") {
  for (const Shape& shape : kShapes) {
    for (Reduction r : kReductions) {
      CAPTURE(shape);
      CAPTURE(static_cast<int>(r));
      const Tensor logits = uniform(shape, -6, 6, 1 + shape.numel()), targets = uniform(shape, 0, 1, 2);
      CHECK_GRADCHECK([r](Tape&, const std::vector<Var>& v) { return binary_cross_entropy_with_logits(v[0], v[1], r); },
                      {logits, targets}, options_for(r));
      CHECK_GRADCHECK([r](Tape&, const std::vector<Var>& v) { return mse_loss(v[0], v[1], r); }, {logits, targets},
                      options_for(r));
    }
  }
}

TEST_CASE("binary_cross_entropy_with_logits_row_sum: the row sums of BCE, broadcast targets, gradients of both") {
  struct Case {
    Shape logits, targets;
  };
  const Case cases[] = {{{1}, {1}},          {{17}, {17}},          {{3, 17}, {3, 17}},     {{3, 1}, {3, 1}},
                        {{2, 3, 17}, {3, 17}}, {{3, 2, 5}, {3, 1, 5}}, {{4, 3}, {1, 3}},       {{2, 517}, {2, 517}},
                        {{5, 1, 3}, {3}}};
  for (DType dtype : {DType::f64, DType::f32}) {
    for (const Case& c : cases) {
      CAPTURE(c.logits);
      CAPTURE(c.targets);
      const Tensor logits = uniform(c.logits, -6, 6, 1 + c.logits.numel()).to(dtype);
      const Tensor targets = uniform(c.targets, 0, 1, 2 + c.targets.numel()).to(dtype);
      Tape tape;
      Var l = tape.leaf(logits), t = tape.leaf(targets);
      // The reference: the targets copied to the logits' shape, per-element BCE, then sum over the last axis.
      const Var reference = sum(binary_cross_entropy_with_logits(l, broadcast_to(t, c.logits), Reduction::none), {-1});
      const Var fused = binary_cross_entropy_with_logits_row_sum(l, t);
      REQUIRE(fused.shape() == reference.shape());
      for (int64_t i = 0; i < fused.numel(); ++i)
        CHECK(fused.value().item(i) ==
              doctest::Approx(reference.value().item(i)).epsilon(dtype == DType::f64 ? 1e-12 : 1e-5));
      if (dtype == DType::f64)
        CHECK_GRADCHECK(
            [](Tape&, const std::vector<Var>& v) { return binary_cross_entropy_with_logits_row_sum(v[0], v[1]); },
            {logits, targets});
    }
  }
}

TEST_CASE("binary_cross_entropy_with_logits_row_sum with target_rows: each logits row against the row it names") {
  struct Case {
    Shape logits;
    int64_t target_count;
    std::vector<int64_t> target_rows;
  };
  // Rows in order, repeated, out of order, unused targets, a rank-3 logits tensor, one column, 517 columns.
  const Case cases[] = {{{1, 1}, 1, {0}},          {{3, 17}, 3, {0, 1, 2}},     {{5, 17}, 2, {1, 0, 1, 1, 0}},
                        {{4, 3}, 5, {4, 2, 2, 0}}, {{2, 3, 5}, 3, {2, 0, 1, 1, 2, 0}}, {{3, 1}, 1, {0, 0, 0}},
                        {{2, 517}, 3, {2, 0}}};
  for (DType dtype : {DType::f64, DType::f32}) {
    for (const Case& c : cases) {
      CAPTURE(c.logits);
      CAPTURE(c.target_count);
      const int64_t D = c.logits[c.logits.rank() - 1];
      const Tensor logits = uniform(c.logits, -6, 6, 1 + c.logits.numel()).to(dtype);
      const Tensor targets = uniform({c.target_count, D}, 0, 1, 2 + D).to(dtype);
      Tape tape;
      Var l = tape.leaf(logits), t = tape.leaf(targets);
      // The reference: the named rows copied out of the targets, per-element BCE, then sum over the last axis.
      const Shape rows_shape = c.logits.without_axis(c.logits.rank() - 1);
      const Var gathered = reshape(index_select(t, 0, c.target_rows), c.logits);
      const Var reference = sum(binary_cross_entropy_with_logits(l, gathered, Reduction::none), {-1});
      const Var fused = binary_cross_entropy_with_logits_row_sum(l, t, c.target_rows);
      REQUIRE(fused.shape() == rows_shape);
      for (int64_t i = 0; i < fused.numel(); ++i)
        CHECK(fused.value().item(i) ==
              doctest::Approx(reference.value().item(i)).epsilon(dtype == DType::f64 ? 1e-12 : 1e-5));
      if (dtype == DType::f64)
        CHECK_GRADCHECK(
            [&c](Tape&, const std::vector<Var>& v) {
              return binary_cross_entropy_with_logits_row_sum(v[0], v[1], c.target_rows);
            },
            {logits, targets});
    }
  }
}

TEST_CASE("binary_cross_entropy_with_logits_row_sum with target_rows refuses rows it cannot serve") {
  Tape tape;
  Var l = tape.leaf(uniform({3, 17}, -1, 1, 1));
  Var t = tape.leaf(uniform({2, 17}, 0, 1, 2));
  const std::vector<int64_t> good{0, 1, 1};
  CHECK_THROWS_WITH_AS(binary_cross_entropy_with_logits_row_sum(l, tape.leaf(uniform({2, 16}, 0, 1, 2)), good),
                       doctest::Contains("targets must be (rows, 17) to serve the logits (3, 17), got (2, 16)"),
                       ShapeError);
  CHECK_THROWS_WITH_AS(binary_cross_entropy_with_logits_row_sum(l, tape.leaf(uniform({17}, 0, 1, 2)), good),
                       doctest::Contains("targets must be (rows, 17)"), ShapeError);
  CHECK_THROWS_WITH_AS(binary_cross_entropy_with_logits_row_sum(l, t, std::vector<int64_t>{0, 1}),
                       doctest::Contains("one targets row per logits row, 3 for (3, 17), got 2"), ShapeError);
  CHECK_THROWS_WITH_AS(binary_cross_entropy_with_logits_row_sum(l, t, std::vector<int64_t>{0, 2, 1}),
                       doctest::Contains("target_rows must be in [0, 2), got 2 at index 1"), ValueError);
  CHECK_THROWS_WITH_AS(binary_cross_entropy_with_logits_row_sum(l, t, std::vector<int64_t>{0, -1, 1}),
                       doctest::Contains("got -1 at index 1"), ValueError);
  CHECK_THROWS_WITH_AS(
      binary_cross_entropy_with_logits_row_sum(l, tape.leaf(uniform({2, 17}, 0, 1, 2).to(DType::f32)), good),
      doctest::Contains("dtypes must match"), ValueError);
}

TEST_CASE("binary_cross_entropy_with_logits_row_sum refuses targets that do not broadcast over the leading axes") {
  Tape tape;
  Var l = tape.leaf(uniform({3, 17}, -1, 1, 1));
  const Shape bad[] = {{3, 16}, {2, 17}, {4, 3, 17}, {3, 1}};
  for (const Shape& shape : bad) {
    CAPTURE(shape);
    CHECK_THROWS_WITH_AS(binary_cross_entropy_with_logits_row_sum(l, tape.leaf(uniform(shape, 0, 1, 2))),
                         doctest::Contains("binary_cross_entropy_with_logits_row_sum: targets must broadcast to the "
                                           "logits (3, 17) over the leading axes only"),
                         ShapeError);
  }
  CHECK_THROWS_WITH_AS(binary_cross_entropy_with_logits_row_sum(l, tape.leaf(uniform({3, 17}, 0, 1, 2).to(DType::f32))),
                       doctest::Contains("dtypes must match"), ValueError);
}

TEST_CASE("cross_entropy: gradients match central differences for every reduction") {
  for (const Shape& shape : std::vector<Shape>{{1, 1}, {1, 3}, {3, 1}, {3, 17}, {17, 3}, {128, 10}, {2, 1001}}) {
    for (Reduction r : kReductions) {
      CAPTURE(shape);
      CAPTURE(static_cast<int>(r));
      const std::vector<int32_t> labels = labels_for(shape[0], shape[1]);
      const Tensor logits = uniform(shape, -5, 5, 3 + shape.numel());
      CHECK_GRADCHECK([&labels, r](Tape&, const std::vector<Var>& v) { return cross_entropy(v[0], labels, r); },
                      {logits}, options_for(r));
    }
  }
}

TEST_CASE("losses equal their closed forms for each reduction") {
  Tape tape;
  const Tensor l = from_values({-1.5, 0.25, 2}, {3}), t = from_values({0, 0.5, 1}, {3});
  Var logits = tape.leaf(l), targets = tape.leaf(t);
  double bce = 0, mse = 0;
  for (int i = 0; i < 3; ++i) {
    const double sig = 1 / (1 + std::exp(-l.item(i)));
    bce += -(t.item(i) * std::log(sig) + (1 - t.item(i)) * std::log(1 - sig));
    mse += (l.item(i) - t.item(i)) * (l.item(i) - t.item(i));
  }
  CHECK(binary_cross_entropy_with_logits(logits, targets, Reduction::sum).item() == doctest::Approx(bce));
  CHECK(binary_cross_entropy_with_logits(logits, targets).item() == doctest::Approx(bce / 3));
  CHECK(mse_loss(logits, targets, Reduction::sum).item() == doctest::Approx(mse));
  CHECK(mse_loss(logits, targets).item() == doctest::Approx(mse / 3));
  CHECK(mse_loss(logits, targets, Reduction::none).shape() == Shape{3});

  // cross_entropy row b = logsumexp(x_b) - x_b[k_b].
  Var x = tape.leaf(from_values({1, 2, 3, -1, 0, 4}, {2, 3}));
  const std::vector<int32_t> labels = {2, 0};
  Var per_row = cross_entropy(x, labels, Reduction::none);
  REQUIRE(per_row.shape() == Shape{2});
  const double row0 = std::log(std::exp(1) + std::exp(2) + std::exp(3)) - 3;
  const double row1 = std::log(std::exp(-1) + std::exp(0) + std::exp(4)) + 1;
  CHECK(per_row.value().item(0) == doctest::Approx(row0));
  CHECK(per_row.value().item(1) == doctest::Approx(row1));
  CHECK(cross_entropy(x, labels, Reduction::sum).item() == doctest::Approx(row0 + row1));
  CHECK(cross_entropy(x, labels).item() == doctest::Approx((row0 + row1) / 2));
}

TEST_CASE("binary_cross_entropy_with_logits is finite and exact for logits of +-100, with finite gradients") {
  for (DType dtype : {DType::f32, DType::f64}) {
    Tape tape;
    Var l = tape.leaf(from_values({100, -100, 100, -100}, {4}, dtype));
    Var t = tape.leaf(from_values({0, 1, 1, 0}, {4}, dtype));
    Var loss = binary_cross_entropy_with_logits(l, t, Reduction::none);
    CHECK(loss.value().item(0) == 100.0);
    CHECK(loss.value().item(1) == 100.0);
    CHECK(loss.value().item(2) == doctest::Approx(0.0));  // log1p(e^-100), about 3.7e-44
    CHECK(loss.value().item(3) == doctest::Approx(0.0));
    tape.backward(sum(loss));
    const double dl[] = {1, -1, 0, 0}, dt[] = {-100, 100, -100, 100};  // sigmoid(l) - t, -l
    for (int i = 0; i < 4; ++i) {
      CHECK(l.grad().item(i) == doctest::Approx(dl[i]));
      CHECK(t.grad().item(i) == dt[i]);
    }
  }
}

TEST_CASE("cross_entropy is finite for logits of +-1e4 and its gradient is softmax - onehot") {
  for (DType dtype : {DType::f32, DType::f64}) {
    Tape tape;
    Var x = tape.leaf(from_values({1e4, -1e4, 0}, {1, 3}, dtype));
    const std::vector<int32_t> labels = {1};
    Var loss = cross_entropy(x, labels);
    CHECK(loss.item() == 2e4);
    tape.backward(loss);
    CHECK(x.grad().item(0) == 1.0);
    CHECK(x.grad().item(1) == -1.0);
    CHECK(x.grad().item(2) == 0.0);
  }
}

TEST_CASE("losses reject mismatched shapes and out-of-range labels, naming the op") {
  Tape tape;
  Var logits = tape.leaf(Tensor::zeros({2, 3}, DType::f64));
  Var targets = tape.leaf(Tensor::zeros({3}, DType::f64));
  CHECK_THROWS_WITH_AS(binary_cross_entropy_with_logits(logits, targets),
                       "binary_cross_entropy_with_logits: targets must have the shape of the input (2, 3), got (3,)",
                       ShapeError);
  CHECK_THROWS_WITH_AS(mse_loss(logits, targets), "mse_loss: targets must have the shape of the input (2, 3), got (3,)",
                       ShapeError);
  Var f32 = tape.leaf(Tensor::zeros({2, 3}, DType::f32));
  CHECK_THROWS_WITH_AS(mse_loss(logits, f32), "mse_loss: dtypes must match, got float64 and float32", ValueError);
  const std::vector<int32_t> bad = {0, 5}, negative = {-1, 0}, short_list = {0};
  CHECK_THROWS_WITH_AS(cross_entropy(logits, bad), "cross_entropy: labels must be in [0, 3), got 5 at index 1 for 3 classes",
                       ValueError);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, negative),
                       "cross_entropy: labels must be in [0, 3), got -1 at index 0 for 3 classes", ValueError);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, short_list),
                       "cross_entropy: labels must hold one class per row of logits (2, 3), got 1 labels", ShapeError);
  CHECK_THROWS_WITH_AS(cross_entropy(targets, short_list), "cross_entropy: logits must have shape (B, C), got (3,)",
                       ShapeError);
}
