// Elementwise kernels over whole tensors: unary maps, broadcasting binary ops, and the in-place accumulation
// every backward rule ends with. The functions `f` are generic lambdas over xsimd::batch<T>, for example
//   ops::unary(x, y, [](auto v) { return xsimd::exp(v); });
// Each fast kernel has a `naive::` twin written with plain loops that the tests compare against.
#pragma once

#include <array>

#include "ops/parallel.h"
#include "ops/simd.h"
#include "ops/tensor.h"

namespace tapegrad::ops {

// Elements per parallel task: big enough to amortise scheduling, a multiple of every SIMD width.
inline constexpr int64_t kElementwiseGrain = 1 << 14;

// y = f(x), shapes equal (checked by the caller; y may alias x).
template <class T, class F>
void unary(const T* x, T* y, int64_t n, F f) {
  parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) { simd::map(x + begin, y + begin, end - begin, f); });
}

// y = f(a, b, c), all of the same length (backward rules: dx = f(dy, x, y)).
template <class T, class F>
void ternary(const T* a, const T* b, const T* c, T* y, int64_t n, F f) {
  parallel_for(n, kElementwiseGrain,
               [&](int64_t i, int64_t end) { simd::zip3(a + i, b + i, c + i, y + i, end - i, f); });
}

// The iteration plan of a broadcasting binary op: output dims with both operands' strides, after dropping
// size-1 axes and merging axes that are contiguous in both operands (so (B, N) + (N,) becomes rows of N).
struct BroadcastPlan {
  int rank = 0;
  std::array<int64_t, kMaxRank> dims{}, stride_a{}, stride_b{};
  int64_t inner() const { return rank ? dims[rank - 1] : 1; }
  int64_t rows() const;
  // Offsets of row `row` (all axes but the last) into a and b.
  void row_offsets(int64_t row, int64_t& offset_a, int64_t& offset_b) const;
};
BroadcastPlan plan_broadcast(const Shape& a, const Shape& b, const Shape& out);

// out = f(a, b) with NumPy broadcasting; `out` has broadcast_shapes(a, b) and is preallocated.
template <class T, class F>
void binary(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const BroadcastPlan plan = plan_broadcast(a.shape(), b.shape(), out.shape());
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* py = out.data<T>();
  const int64_t inner = plan.inner();
  const int64_t sa = plan.rank ? plan.stride_a[plan.rank - 1] : 0, sb = plan.rank ? plan.stride_b[plan.rank - 1] : 0;
  // Tasks are (row, chunk of the row) pairs, so one long row is split across threads as well as many short rows.
  const int64_t chunk = std::max<int64_t>(1, std::min(inner, kElementwiseGrain));
  const int64_t chunks_per_row = (inner + chunk - 1) / chunk;
  parallel_for(plan.rows() * chunks_per_row, std::max<int64_t>(1, kElementwiseGrain / chunk), [&](int64_t t0, int64_t t1) {
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t row = task / chunks_per_row, j0 = (task % chunks_per_row) * chunk;
      int64_t oa, ob;
      plan.row_offsets(row, oa, ob);
      simd::zip(pa + oa + j0 * sa, sa, pb + ob + j0 * sb, sb, py + row * inner + j0, std::min(chunk, inner - j0), f);
    }
  }, chunk);
}

// The same three kernels for a runtime dtype (all tensors share it).
template <class F>
void unary(const Tensor& x, Tensor& y, F f) {
  dispatch(x.dtype(), [&]<class T>() { unary<T>(x.data<T>(), y.data<T>(), x.numel(), f); });
}
template <class F>
void binary(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  dispatch(a.dtype(), [&]<class T>() { binary<T>(a, b, out, f); });
}
// dst += f(a, b, c), or dst = f(a, b, c) without `accumulate`, all of one shape: a backward rule
// dx (+)= f(dy, x, y) in one pass.
template <class F>
void ternary_into(const Tensor& a, const Tensor& b, const Tensor& c, Tensor& dst, F f, bool accumulate) {
  dispatch(a.dtype(), [&]<class T>() {
    const T *pa = a.data<T>(), *pb = b.data<T>(), *pc = c.data<T>();
    T* pd = dst.data<T>();
    parallel_for(a.numel(), kElementwiseGrain, [&](int64_t i, int64_t end) {
      simd::zip3(pa + i, pb + i, pc + i, pd + i, end - i, f, accumulate);
    });
  });
}

// dst += src, same shape: the one accumulation point of every gradient.
void add_into(Tensor& dst, const Tensor& src);
// dst = 0.
void zero(Tensor& dst);

namespace naive {
// out[i] = f(a[ia], b[ib]) with broadcasting, by explicit multi-index arithmetic.
template <class T, class F>
void binary(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const Shape& shape = out.shape();
  const auto sa = broadcast_strides(a.shape(), shape), sb = broadcast_strides(b.shape(), shape);
  std::array<int64_t, kMaxRank> index{};
  for (int64_t flat = 0; flat < shape.numel(); ++flat) {
    int64_t rest = flat, oa = 0, ob = 0;
    for (int axis = shape.rank() - 1; axis >= 0; --axis) {
      index[axis] = rest % shape[axis];
      rest /= shape[axis];
      oa += index[axis] * sa[axis];
      ob += index[axis] * sb[axis];
    }
    out.data<T>()[flat] = f(a.data<T>()[oa], b.data<T>()[ob]);
  }
}
}  // namespace naive

}  // namespace tapegrad::ops
