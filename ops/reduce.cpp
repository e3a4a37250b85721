#include "ops/reduce.h"

#include <limits>
#include <vector>

#include "ops/parallel.h"
#include "ops/simd.h"

namespace tapegrad::ops {
namespace {

struct SumOp {
  template <class T>
  static T identity() { return T(0); }
  template <class V>
  static V combine(const V& a, const V& b) { return a + b; }
  template <class T>
  static T horizontal(const simd::Batch<T>& v) { return simd::horizontal_sum(v); }
};

struct MaxOp {
  template <class T>
  static T identity() { return -std::numeric_limits<T>::infinity(); }
  template <class V>
  static V combine(const V& a, const V& b) {
    if constexpr (std::is_arithmetic_v<V>) return std::max(a, b);
    else return xsimd::max(a, b);
  }
  template <class T>
  static T horizontal(const simd::Batch<T>& v) { return simd::horizontal_max(v); }
};

// One contiguous run of at most kReduceChunk values, four SIMD accumulators wide, padded tail.
template <class Op, class T>
T reduce_run(const T* x, int64_t n) {
  using B = simd::Batch<T>;
  constexpr int64_t W = simd::width<T>;
  B acc[4] = {B(Op::template identity<T>()), B(Op::template identity<T>()), B(Op::template identity<T>()),
              B(Op::template identity<T>())};
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W)
    for (int k = 0; k < 4; ++k) acc[k] = Op::combine(acc[k], B::load_unaligned(x + i + k * W));
  for (; i + W <= n; i += W) acc[0] = Op::combine(acc[0], B::load_unaligned(x + i));
  if (i < n) {
    alignas(64) T tail[W];
    std::fill(tail, tail + W, Op::template identity<T>());
    std::copy(x + i, x + n, tail);
    acc[1] = Op::combine(acc[1], B::load_aligned(tail));
  }
  return Op::horizontal(Op::combine(Op::combine(acc[0], acc[1]), Op::combine(acc[2], acc[3])));
}

// A row of any length: fixed chunks, partials combined serially in chunk order.
template <class Op, class T>
T reduce_row(const T* x, int64_t n) {
  if (n <= kReduceChunk) return reduce_run<Op>(x, n);
  const int64_t chunks = (n + kReduceChunk - 1) / kReduceChunk;
  std::vector<T> partial(chunks);
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      partial[c] = reduce_run<Op>(x + c * kReduceChunk, std::min(kReduceChunk, n - c * kReduceChunk));
  }, kReduceChunk);
  T total = Op::template identity<T>();
  for (T p : partial) total = Op::combine(total, p);
  return total;
}

template <class Op, class T>
void reduce_3d(const T* x, T* y, int64_t outer, int64_t R, int64_t inner) {
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, kReduceChunk / std::max<int64_t>(R, 1)), [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) y[o] = reduce_row<Op>(x + o * R, R);
    }, R);
    return;
  }
  // Vectors of `inner` outputs, accumulated over r in order; threads split (outer, column block) pairs.
  const int64_t block = 1024;
  const int64_t blocks_per_row = (inner + block - 1) / block;
  parallel_for(outer * blocks_per_row, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t o = t / blocks_per_row, j0 = (t % blocks_per_row) * block, n = std::min(block, inner - j0);
      T* out = y + o * inner + j0;
      std::fill(out, out + n, Op::template identity<T>());
      for (int64_t r = 0; r < R; ++r)
        simd::zip(out, 1, x + (o * R + r) * inner + j0, 1, out, n, [](auto a, auto b) { return Op::combine(a, b); });
    }
  }, R * block);
}

// Splits the mask into runs of adjacent reduced axes and performs one 3-d pass per run, last run first.
template <class Op>
void reduce_axes(const Tensor& x, const AxisMask& reduce, Tensor& y, const char* op) {
  const Shape out_shape = reduced_shape(x.shape(), reduce);
  if (y.numel() != out_shape.numel() || y.dtype() != x.dtype())
    fail<ShapeError>(op, ": output must hold ", out_shape, " ", dtype_name(x.dtype()), ", got ", y.shape(), " ",
                     dtype_name(y.dtype()));
  dispatch(x.dtype(), [&]<class T>() {
    Shape current = x.shape();
    const T* src = x.data<T>();
    thread_local std::vector<T> scratch[2];
    int ping = 0;
    int axis = current.rank() - 1;
    // Find the runs from the right; count them first to know which pass writes y.
    std::array<std::pair<int, int>, kMaxRank> runs;  // [first, last] axes of each run, right to left
    size_t run_count = 0;                             // (inline, not a vector: no allocation per call)
    for (int a = axis; a >= 0; --a) {
      if (!reduce[a] || x.shape()[a] == 1) continue;
      int first = a;
      while (first - 1 >= 0 && (reduce[first - 1] || x.shape()[first - 1] == 1)) --first;
      runs[run_count++] = {first, a};
      a = first;
    }
    if (run_count == 0) {  // nothing to reduce: a copy
      std::copy(src, src + x.numel(), y.data<T>());
      return;
    }
    for (size_t k = 0; k < run_count; ++k) {
      auto [first, last] = runs[k];
      int64_t outer = 1, R = 1, inner = 1;
      for (int a = 0; a < first; ++a) outer *= current[a];
      for (int a = first; a <= last; ++a) R *= current[a];
      for (int a = last + 1; a < current.rank(); ++a) inner *= current[a];
      T* dst;
      if (k + 1 == run_count) dst = y.data<T>();
      else {
        scratch[ping].resize(outer * inner);
        dst = scratch[ping].data();
        ping ^= 1;
      }
      reduce_3d<Op, T>(src, dst, outer, R, inner);
      for (int a = first; a <= last; ++a) current[a] = 1;
      src = dst;
    }
  });
}

}  // namespace

Shape reduced_shape(const Shape& shape, const AxisMask& reduce) {
  Shape out = shape;
  for (int a = 0; a < shape.rank(); ++a)
    if (reduce[a]) out[a] = 1;
  return out;
}

void sum_axes(const Tensor& x, const AxisMask& reduce, Tensor& y) { reduce_axes<SumOp>(x, reduce, y, "sum"); }
void max_axes(const Tensor& x, const AxisMask& reduce, Tensor& y) { reduce_axes<MaxOp>(x, reduce, y, "max"); }

template <class T>
void sum_3d(const T* x, T* y, int64_t outer, int64_t R, int64_t inner) {
  reduce_3d<SumOp, T>(x, y, outer, R, inner);
}
template <class T>
void max_3d(const T* x, T* y, int64_t outer, int64_t R, int64_t inner) {
  reduce_3d<MaxOp, T>(x, y, outer, R, inner);
}
template void sum_3d<float>(const float*, float*, int64_t, int64_t, int64_t);
template void sum_3d<double>(const double*, double*, int64_t, int64_t, int64_t);
template void max_3d<float>(const float*, float*, int64_t, int64_t, int64_t);
template void max_3d<double>(const double*, double*, int64_t, int64_t, int64_t);

namespace naive {
namespace {
template <class Combine>
void reduce(const Tensor& x, const AxisMask& reduce, Tensor& y, long double init, Combine combine) {
  const Shape& shape = x.shape();
  const Shape out = reduced_shape(shape, reduce);
  std::vector<long double> acc(out.numel(), init);
  for (int64_t flat = 0; flat < shape.numel(); ++flat) {
    int64_t rest = flat, out_flat = 0, out_stride = 1;
    for (int a = shape.rank() - 1; a >= 0; --a) {
      const int64_t i = rest % shape[a];
      rest /= shape[a];
      if (!reduce[a]) out_flat += i * out_stride;
      out_stride *= out[a];
    }
    acc[out_flat] = combine(acc[out_flat], static_cast<long double>(x.item(flat)));
  }
  for (int64_t i = 0; i < out.numel(); ++i) y.set_item(i, static_cast<double>(acc[i]));
}
}  // namespace

void sum_axes(const Tensor& x, const AxisMask& mask, Tensor& y) {
  reduce(x, mask, y, 0.0L, [](long double a, long double b) { return a + b; });
}
void max_axes(const Tensor& x, const AxisMask& mask, Tensor& y) {
  reduce(x, mask, y, -std::numeric_limits<long double>::infinity(),
         [](long double a, long double b) { return std::max(a, b); });
}
}  // namespace naive

}  // namespace tapegrad::ops
