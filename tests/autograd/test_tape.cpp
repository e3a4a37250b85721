#include <doctest/doctest.h>

#include <cmath>

#include "autograd/arithmetic.h"
#include "autograd/linalg.h"
#include "autograd/reduction.h"
#include "autograd/tape.h"

using namespace tapegrad;

TEST_CASE("tape: backward walks nodes in reverse and accumulates into parameters") {
  Parameter w("w", Tensor::from({2.0f, -1.0f}, {2}));
  Tape tape;
  for (int step = 0; step < 2; ++step) {
    Var x = tape.constant(Tensor::from({3.0f, 4.0f}, {2}));
    Var y = tape.param(w) * x + tape.param(w);  // dy/dw = x + 1, parameter used twice
    tape.backward(y, Tensor::full({2}, 1.0));
    tape.reset();
  }
  // Two steps without zero_grad: gradients add up, as in PyTorch.
  CHECK(w.grad.item(0) == 8.0);
  CHECK(w.grad.item(1) == 10.0);
}

// Note [first contribution writes]: a stale gradient buffer (after zero_grad) holds garbage; the first rule to
// reach it writes, later ones add, and a parameter no rule reached reads as zeros.
TEST_CASE("tape: after zero_grad the first contribution writes, later ones add, and unreached gradients are zero") {
  Parameter w("w", Tensor::from({2.0f, -1.0f}, {2})), unused("unused", Tensor::from({5.0f}, {1}));
  for (Parameter* p : {&w, &unused}) {
    p->grad.fill(1e30);  // what a stale buffer may hold
    p->grad_stale = true;
  }
  Tape tape;
  Var x = tape.constant(Tensor::from({3.0f, 4.0f}, {2}));
  tape.param(unused);
  Var y = tape.param(w) * x + tape.param(w);  // dy/dw = x + 1: one write, one add
  tape.backward(y, Tensor::full({2}, 1.0));
  CHECK(!w.grad_stale);
  CHECK(w.grad.item(0) == 4.0);
  CHECK(w.grad.item(1) == 5.0);
  CHECK(unused.grad_stale);
  CHECK(unused.current_grad().item(0) == 0.0);
  CHECK(!unused.grad_stale);
}

TEST_CASE("tape: linear writes or adds its input and weight gradients in either order of use, at both batch paths") {
  // L = sum(linear(x, w)) + sum(x), recorded in both orders: dL/dx[r][i] = sum_o w[o][i] + 1, dL/dw[o][i] =
  // sum_r x[r][i]. 2 rows take linear's transposed small-batch path, 20 rows the direct one.
  for (int64_t rows : {2, 20}) {
    for (bool linear_first : {true, false}) {
      CAPTURE(rows);
      CAPTURE(linear_first);
      std::vector<float> xs(static_cast<size_t>(rows * 3)), ws(12);
      for (size_t k = 0; k < xs.size(); ++k) xs[k] = 0.25f * static_cast<float>(k % 7) - 0.5f;
      for (size_t k = 0; k < ws.size(); ++k) ws[k] = 0.5f * static_cast<float>(k) - 2.0f;
      Parameter w("w", Tensor::from(ws, {4, 3}));
      w.grad.fill(-7.0);
      w.grad_stale = true;
      Tape tape;
      Var x = tape.leaf(Tensor::from(xs, {rows, 3}));
      Var loss = linear_first ? sum(linear(x, tape.param(w))) + sum(x) : sum(x) + sum(linear(x, tape.param(w)));
      tape.backward(loss);
      const Tensor dx = x.grad();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < 3; ++i) {
          double expected = 1;
          for (int64_t o = 0; o < 4; ++o) expected += ws[static_cast<size_t>(o * 3 + i)];
          CHECK(dx.item(r * 3 + i) == doctest::Approx(expected));
        }
      for (int64_t o = 0; o < 4; ++o)
        for (int64_t i = 0; i < 3; ++i) {
          double expected = 0;
          for (int64_t r = 0; r < rows; ++r) expected += xs[static_cast<size_t>(r * 3 + i)];
          CHECK(w.grad.item(o * 3 + i) == doctest::Approx(expected));
        }
    }
  }
}

TEST_CASE("tape: a Var used after reset throws instead of reading recycled memory") {
  Tape tape;
  Var x = tape.leaf(Tensor::from({1.0f}, {1}));
  tape.reset();
  CHECK_THROWS_AS(x.value(), TapeError);
  CHECK_THROWS_WITH(x + x, doctest::Contains("used after its tape was reset"));
}

TEST_CASE("tape: backward on a non-scalar without a seed, or with a wrong seed shape, is an error") {
  Tape tape;
  Var x = tape.leaf(Tensor::from({1.0f, 2.0f}, {2}));
  Var y = x * x;
  CHECK_THROWS_WITH_AS(tape.backward(y), doctest::Contains("backward: output must be a single element"), TapeError);
  CHECK_THROWS_WITH_AS(tape.backward(y, Tensor::zeros({3})), doctest::Contains("seed gradient must match the output, got (3,)"),
                       ShapeError);
  Var c = tape.constant(Tensor::from({1.0f}, {1}));
  CHECK_THROWS_AS(tape.backward(c * 2.0), TapeError);
}

TEST_CASE("tape: under NoGradGuard nothing is recorded") {
  Tape tape;
  Var x = tape.leaf(Tensor::from({1.0f, 2.0f}, {2}));
  {
    NoGradGuard no_grad(tape);
    Var y = exp(x) * x;
    CHECK_FALSE(y.requires_grad());
    CHECK(tape.node_count() == 0);
    CHECK(y.value().item(1) == doctest::Approx(2 * std::exp(2.0)));
  }
  Var z = exp(x);
  CHECK(tape.node_count() == 1);
  CHECK(z.requires_grad());
}

TEST_CASE("tape: after warm-up a step allocates no new arena block and keeps its node capacity") {
  Parameter w("w", Tensor::full({64, 64}, 0.5f));
  Tape tape;
  size_t blocks_after_warmup = 0;
  for (int step = 0; step < 4; ++step) {
    Var x = tape.constant(Tensor::full({64, 64}, 1.0f));
    Var h = tape.param(w);
    for (int k = 0; k < 200; ++k) h = exp(h * x * 0.001);  // ~600 nodes, several arena blocks on the first step
    tape.backward(h, Tensor::full({64, 64}, 1.0f));
    tape.reset();
    if (step == 1) blocks_after_warmup = tape.arena().system_allocations();
  }
  CHECK(tape.arena().system_allocations() == blocks_after_warmup);
  CHECK(tape.arena().block_count() == 1);
}

#include "autograd/elementwise_op.h"
#include "gradcheck.h"

TEST_CASE("gradcheck itself: a deliberately wrong backward rule is caught") {
  // y = x^3 with the derivative written as 2x^2 instead of 3x^2.
  auto wrong_cube = [](Tape&, const std::vector<Var>& v) {
    return detail::unary_op("wrong_cube", v[0], [](auto x) { return x * x * x; },
                            [](auto dy, auto x, auto) { return dy * x * x * decltype(x)(2); });
  };
  const Tensor small = testing::uniform({5}, 0.5, 1.5, 9), large = testing::uniform({300}, 0.5, 1.5, 10);
  CHECK_FALSE(testing::gradcheck(wrong_cube, {small}).empty());
  CHECK_FALSE(testing::gradcheck(wrong_cube, {large}).empty());
  auto right_cube = [](Tape&, const std::vector<Var>& v) { return v[0] * v[0] * v[0]; };
  CHECK(testing::gradcheck(right_cube, {small}).empty());
  CHECK(testing::gradcheck(right_cube, {large}).empty());
}

// Note [check finite] in autograd/tape.h.
TEST_CASE("tape: check_finite names the op and input shapes that produced inf in forward (log of 0)") {
  Tape tape;
  tape.set_check_finite(true);
  Var x = tape.leaf(Tensor::from({1.0f, 0.0f, 2.0f}, {3}));
  Var ok = exp(x);  // finite: no throw
  CHECK(ok.numel() == 3);
  CHECK_THROWS_WITH_AS(log(x), doctest::Contains("non-finite value: log produced inf in forward, input (3,)"),
                       NonFiniteError);
  // Also under NoGradGuard (evaluation), where nothing is recorded for backward.
  NoGradGuard no_grad(tape);
  Var zero = tape.constant(Tensor::zeros({2, 2}));
  CHECK_THROWS_WITH_AS(zero / zero, doctest::Contains("div produced nan in forward, inputs (2, 2), (2, 2)"),
                       NonFiniteError);
}

TEST_CASE("tape: check_finite names the op whose backward produced an inf gradient (sqrt at 0)") {
  Tape tape;
  tape.set_check_finite(true);
  Var x = tape.leaf(Tensor::from({4.0f, 0.0f}, {2}));
  Var y = sum(sqrt(x) * 3.0);  // forward is finite; d sqrt(x)/dx = 1 / (2 sqrt(x)) is inf at 0
  CHECK_THROWS_WITH_AS(tape.backward(y),
                       doctest::Contains("sqrt produced inf in backward (gradient of input 0 of sqrt, shape (2,))"),
                       NonFiniteError);
}

TEST_CASE("tape: check_finite is off by default, and NonFiniteError is a tapegrad::Error") {
  Tape tape;
  CHECK_FALSE(tape.check_finite());
  Var x = tape.leaf(Tensor::from({0.0f}, {1}));
  Var y = sum(log(x));  // -inf, silently, as without the check
  CHECK(std::isinf(y.item()));
  tape.backward(sum(sqrt(x)));
  CHECK(std::isinf(x.grad().item(0)));
  CHECK(std::is_base_of_v<Error, NonFiniteError>);
}
