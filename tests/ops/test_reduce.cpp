// Kernel tests for ops/reduce and ops/softmax: each fast kernel against its naive:: twin over odd shapes (SIMD
// tails, column blocks, chunked rows), and bit-identical results for 1 and 2 threads (Note [determinism]).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "gradcheck.h"
#include "ops/parallel.h"
#include "ops/reduce.h"
#include "ops/softmax.h"

using namespace tapegrad;
using testing::uniform;

namespace {

struct Case {
  Shape shape;
  std::vector<int> axes;
};

// Odd sizes for the SIMD tails; a (3, 4, 5) with non-adjacent axes; rows over kReduceChunk (chunked).
const std::vector<Case> kCases = {
    {{1}, {0}},           {{3}, {0}},           {{17}, {0}},           {{33}, {0}},         {{1001}, {0}},
    {{3, 17}, {1}},       {{3, 17}, {0}},       {{17, 33}, {0, 1}},    {{33, 1000}, {0}},   {{3, 4, 5}, {0, 2}},
    {{3, 4, 5}, {1}},     {{3, 4, 5}, {0, 1}},  {{3, 4, 5}, {1, 2}},   {{2, 1, 17}, {1, 2}}, {{1, 1}, {0, 1}},
    {{100000}, {0}},      {{2, 100003}, {1}},   {{100003, 2}, {0}},    {{3, 1, 4, 5}, {0, 3}},
};

ops::AxisMask mask_of(const std::vector<int>& axes) {
  ops::AxisMask m{};
  for (int a : axes) m[a] = true;
  return m;
}

// Runs `kernel(x, y)` with 1 and 2 threads; the results must agree bit for bit.
template <class Kernel>
void check_thread_invariant(const Tensor& x, const Shape& out, Kernel kernel) {
  Tensor one = Tensor::empty(out, x.dtype()), two = Tensor::empty(out, x.dtype());
  set_num_threads(1);
  kernel(x, one);
  set_num_threads(2);
  kernel(x, two);
  set_num_threads(0);
  CHECK(bitwise_equal(one, two));
}

}  // namespace

TEST_CASE("sum_axes and max_axes match their naive twins over odd shapes and axis sets") {
  for (DType dtype : {DType::f32, DType::f64}) {
    for (const Case& c : kCases) {
      CAPTURE(c.shape);
      CAPTURE(c.axes.size());
      const ops::AxisMask mask = mask_of(c.axes);
      const Shape out = ops::reduced_shape(c.shape, mask);
      const Tensor x = uniform(c.shape, -1, 1, 7 + c.shape.numel(), dtype);
      Tensor fast = Tensor::empty(out, dtype), slow = Tensor::empty(out, dtype), bound = Tensor::empty(out, DType::f64);
      ops::sum_axes(x, mask, fast);
      ops::naive::sum_axes(x, mask, slow);
      Tensor abs_x = x.to(DType::f64);  // error bound: eps * sum |x| per output
      for (int64_t i = 0; i < abs_x.numel(); ++i) abs_x.set_item(i, std::abs(abs_x.item(i)));
      ops::naive::sum_axes(abs_x, mask, bound);
      const double eps = dtype == DType::f32 ? 1e-6 : 1e-15;
      for (int64_t i = 0; i < out.numel(); ++i) REQUIRE(std::abs(fast.item(i) - slow.item(i)) <= eps * (bound.item(i) + 1));
      ops::max_axes(x, mask, fast);
      ops::naive::max_axes(x, mask, slow);
      CHECK(bitwise_equal(fast, slow));  // max is exact
    }
  }
}

TEST_CASE("sum_axes and max_axes are bit-identical for 1 and 2 threads, including a 1M-element full sum") {
  std::vector<Case> cases = kCases;
  cases.push_back({{1000003}, {0}});
  cases.push_back({{1000, 1001}, {0, 1}});
  for (const Case& c : cases) {
    CAPTURE(c.shape);
    const ops::AxisMask mask = mask_of(c.axes);
    const Tensor x = uniform(c.shape, -1, 1, 99, DType::f32);
    const Shape out = ops::reduced_shape(c.shape, mask);
    check_thread_invariant(x, out, [&](const Tensor& in, Tensor& y) { ops::sum_axes(in, mask, y); });
    check_thread_invariant(x, out, [&](const Tensor& in, Tensor& y) { ops::max_axes(in, mask, y); });
  }
}

TEST_CASE("softmax and log_softmax kernels match their naive twins, forward and backward, along any axis") {
  const std::vector<std::pair<Shape, int>> cases = {
      {{1}, 0},     {{3}, 0},       {{17}, -1},      {{33, 10}, 1},    {{128, 10}, -1}, {{3, 4, 5}, 0},
      {{3, 4, 5}, 1}, {{3, 4, 5}, -1}, {{2, 1001}, -1}, {{1001, 3}, 0},  {{2, 3, 17}, -2},
  };
  for (DType dtype : {DType::f32, DType::f64}) {
    const double tol = dtype == DType::f32 ? 2e-5 : 1e-12;
    for (const auto& [shape, axis] : cases) {
      CAPTURE(shape);
      CAPTURE(axis);
      const Tensor x = uniform(shape, -8, 8, 3 + shape.numel(), dtype), dy = uniform(shape, -1, 1, 4, dtype);
      for (bool log : {true, false}) {
        CAPTURE(log);
        Tensor fast = Tensor::empty(shape, dtype), slow = Tensor::empty(shape, dtype);
        (log ? ops::log_softmax : ops::softmax)(x, axis, fast);
        (log ? ops::naive::log_softmax : ops::naive::softmax)(x, axis, slow);
        CHECK(max_abs_diff(fast, slow) <= tol * 8);
        Tensor dfast = Tensor::full(shape, 0.5, dtype), dslow = Tensor::full(shape, 0.5, dtype);
        (log ? ops::log_softmax_backward : ops::softmax_backward)(dy, slow, axis, dfast);
        (log ? ops::naive::log_softmax_backward : ops::naive::softmax_backward)(dy, slow, axis, dslow);
        CHECK(max_abs_diff(dfast, dslow) <= tol * std::sqrt(double(shape.numel())));
      }
    }
  }
}

TEST_CASE("softmax kernels are bit-identical for 1 and 2 threads") {
  for (const auto& [shape, axis] : std::vector<std::pair<Shape, int>>{{{4096, 10}, 1}, {{64, 50, 20}, 1}, {{3, 100003}, 1}}) {
    CAPTURE(shape);
    const Tensor x = uniform(shape, -5, 5, 11, DType::f32);
    check_thread_invariant(x, shape, [&](const Tensor& in, Tensor& y) { ops::log_softmax(in, axis, y); });
    check_thread_invariant(x, shape, [&](const Tensor& in, Tensor& y) { ops::softmax(in, axis, y); });
    Tensor y = Tensor::empty(shape, DType::f32);
    ops::softmax(x, axis, y);
    check_thread_invariant(x, shape, [&](const Tensor& dy, Tensor& dx) {
      dx.fill(0);
      ops::softmax_backward(dy, y, axis, dx);
    });
    check_thread_invariant(x, shape, [&](const Tensor& dy, Tensor& dx) {
      dx.fill(0);
      ops::log_softmax_backward(dy, y, axis, dx);
    });
  }
}
