// Tests for autograd/linalg.cpp: matmul and linear against central differences, a naive triple loop, and
// themselves under a different thread count.
#include <doctest/doctest.h>

#include "autograd/arithmetic.h"
#include "autograd/linalg.h"
#include "gradcheck.h"
#include "ops/parallel.h"

using namespace tapegrad;
using testing::uniform;

namespace {
Var mm(Tape&, const std::vector<Var>& v) { return matmul(v[0], v[1]); }

// C[b] = A[b] B[b] (or B shared), straight from the definition.
Tensor naive_matmul(const Tensor& a, const Tensor& b) {
  const bool batched = a.rank() == 3;
  const int64_t batch = batched ? a.dim(0) : 1, M = a.dim(-2), K = a.dim(-1), N = b.dim(-1);
  const bool b_batched = b.rank() == 3;
  Tensor c = Tensor::zeros(batched ? Shape{batch, M, N} : Shape{M, N}, DType::f64);
  for (int64_t p = 0; p < batch; ++p)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double sum = 0;
        for (int64_t k = 0; k < K; ++k)
          sum += a.item(p * M * K + i * K + k) * b.item((b_batched ? p * K * N : 0) + k * N + j);
        c.set_item(p * M * N + i * N + j, sum);
      }
  return c;
}
}  // namespace

TEST_CASE("matmul: gradient matches central differences (2-D, batched, batched @ shared matrix)") {
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{1, 1}, {1, 1}}, {{3, 17}, {17, 1}}, {{17, 3}, {3, 33}}, {{3, 4, 5}, {3, 5, 2}}, {{3, 4, 5}, {5, 2}},
      {{40, 30}, {30, 35}},  // 1000+ elements per operand: checked by random projections
  };
  for (const auto& [sa, sb] : cases) {
    CAPTURE(sa);
    CAPTURE(sb);
    CHECK_GRADCHECK(mm, {uniform(sa, -1, 1, 1), uniform(sb, -1, 1, 2)});
  }
  // An input used twice: d(x x)/dx gets both the left and the right contribution.
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return matmul(v[0], v[0]); }, {uniform({5, 5}, -1, 1, 3)});
}

TEST_CASE("matmul: value equals a naive triple loop") {
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{1, 1}, {1, 1}}, {{3, 17}, {17, 1}}, {{17, 3}, {3, 33}}, {{3, 4, 5}, {3, 5, 2}}, {{2, 7, 3}, {3, 9}}};
  for (const auto& [sa, sb] : cases) {
    CAPTURE(sa);
    const Tensor a = uniform(sa, -1, 1, 4), b = uniform(sb, -1, 1, 5);
    Tape tape;
    Var y = matmul(tape.constant(a), tape.constant(b));
    const Tensor expected = naive_matmul(a, b);
    REQUIRE(y.shape() == expected.shape());
    CHECK(max_abs_diff(y.value(), expected) < 1e-12);
  }
}

TEST_CASE("matmul: forward and backward are bit-identical for 1 and 2 threads on (128, 784) @ (784, 400)") {
  const Tensor a = uniform({128, 784}, -1, 1, 6).to(DType::f32), b = uniform({784, 400}, -0.1, 0.1, 7).to(DType::f32);
  const Tensor seed = uniform({128, 400}, -1, 1, 8).to(DType::f32);
  auto run = [&](int threads) {
    set_num_threads(threads);
    Tape tape(size_t{1} << 24);
    Var va = tape.leaf(a), vb = tape.leaf(b);
    Var y = matmul(va, vb);
    tape.backward(y, seed);
    std::vector<Tensor> results = {y.value().clone(), va.grad().clone(), vb.grad().clone()};
    set_num_threads(0);
    return results;
  };
  const auto one = run(1), two = run(2);
  for (size_t i = 0; i < one.size(); ++i) CHECK(bitwise_equal(one[i], two[i]));
}

TEST_CASE("linear: gradient of x w^T + b matches central differences for all three inputs") {
  // out <= 4 takes the thin path (Note [thin linear]); the others the GEMM, at small and large batch.
  for (auto [rows, in, out] :
       {std::array<int64_t, 3>{1, 1, 1}, {3, 17, 5}, {17, 3, 33}, {40, 30, 35}, {17, 33, 2}, {3, 17, 4}, {20, 1, 3}}) {
    CAPTURE(rows);
    const Tensor x = uniform({rows, in}, -1, 1, 9), w = uniform({out, in}, -1, 1, 10), b = uniform({out}, -1, 1, 11);
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return linear(v[0], v[1], v[2]); }, {x, w, b});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return linear(v[0], v[1]); }, {x, w});
  }
  // Leading batch axes flatten into rows.
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return linear(v[0], v[1], v[2]); },
                  {uniform({2, 3, 4}, -1, 1, 12), uniform({5, 4}, -1, 1, 13), uniform({5}, -1, 1, 14)});
}

TEST_CASE("linear: value equals matmul by the transposed weight plus the bias") {
  const Tensor x = uniform({6, 4}, -1, 1, 15), w = uniform({3, 4}, -1, 1, 16), b = uniform({3}, -1, 1, 17);
  Tape tape;
  Var y = linear(tape.constant(x), tape.constant(w), tape.constant(b));
  Tensor wt = Tensor::zeros({4, 3}, DType::f64);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) wt.set_item(j * 3 + i, w.item(i * 4 + j));
  Tensor expected = naive_matmul(x, wt);
  for (int64_t r = 0; r < 6; ++r)
    for (int64_t c = 0; c < 3; ++c) expected.set_item(r * 3 + c, expected.item(r * 3 + c) + b.item(c));
  CHECK(max_abs_diff(y.value(), expected) < 1e-12);
}

TEST_CASE("linear with at most 4 outputs: each row has the same bits alone as in a batch, on 1 and 2 threads") {
  for (int64_t out : {1, 2, 4}) {
    CAPTURE(out);
    const Tensor x = uniform({40, 517}, -1, 1, 21).to(DType::f32), w = uniform({out, 517}, -1, 1, 22).to(DType::f32);
    const Tensor b = uniform({out}, -1, 1, 23).to(DType::f32);
    auto forward = [&](const Tensor& input) {
      Tape tape;
      return linear(tape.constant(input), tape.constant(w), tape.constant(b)).value().clone();
    };
    set_num_threads(1);
    const Tensor one = forward(x);
    set_num_threads(2);
    const Tensor two = forward(x);
    set_num_threads(0);
    CHECK(bitwise_equal(one, two));
    for (int64_t r : {0, 17, 39}) {
      Tensor row = Tensor::empty({1, 517}, DType::f32);
      for (int64_t k = 0; k < 517; ++k) row.set_item(k, x.item(r * 517 + k));
      const Tensor alone = forward(row);
      for (int64_t j = 0; j < out; ++j) CHECK(alone.item(j) == one.item(r * out + j));
    }
    for (int64_t r = 0; r < 40; ++r)  // and the values are x w^T + b
      for (int64_t j = 0; j < out; ++j) {
        double expected = b.item(j);
        for (int64_t k = 0; k < 517; ++k) expected += x.item(r * 517 + k) * w.item(j * 517 + k);
        CHECK(one.item(r * out + j) == doctest::Approx(expected).epsilon(1e-4));
      }
  }
}

TEST_CASE("matmul and linear: bad shapes throw and name the op and both shapes") {
  Tape tape;
  Var a = tape.constant(Tensor::zeros({128, 784})), b = tape.constant(Tensor::zeros({400, 20}));
  CHECK_THROWS_WITH_AS(matmul(a, b), "matmul: inner dimensions must match, got (128, 784) @ (400, 20)", ShapeError);
  Var v = tape.constant(Tensor::zeros({3}));
  CHECK_THROWS_WITH_AS(matmul(v, b),
                       "matmul: operands must be (M, K) @ (K, N), (B, M, K) @ (B, K, N) or (B, M, K) @ (K, N), "
                       "got (3,) @ (400, 20)",
                       ShapeError);
  Var p = tape.constant(Tensor::zeros({3, 4, 5})), q = tape.constant(Tensor::zeros({2, 5, 2}));
  CHECK_THROWS_WITH_AS(matmul(p, q), "matmul: batch dimensions must match, got (3, 4, 5) @ (2, 5, 2)", ShapeError);
  Var w = tape.constant(Tensor::zeros({10, 783}));
  CHECK_THROWS_WITH_AS(linear(a, w), "linear: input features must match the weight's (out, in), got (128, 784) and (10, 783)",
                       ShapeError);
  Var w2 = tape.constant(Tensor::zeros({10, 784})), bias = tape.constant(Tensor::zeros({9}));
  CHECK_THROWS_WITH_AS(linear(a, w2, bias), "linear: bias must have shape (10,), got (9,)", ShapeError);
}
