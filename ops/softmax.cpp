// Fused softmax kernels; equations and layout in ops/softmax.h (Note [stable softmax]).
#include "ops/softmax.h"

#include <cmath>
#include <limits>
#include <vector>

#include "ops/parallel.h"
#include "ops/reduce.h"
#include "ops/simd.h"

namespace tapegrad::ops {
namespace {

struct Lines {
  int64_t outer = 1, R = 1, inner = 1;
};

Lines split(const Tensor& x, int axis, const char* op) {
  const Shape& s = x.shape();
  const int a = s.normalize_axis(axis, op);
  Lines l;
  for (int k = 0; k < a; ++k) l.outer *= s[k];
  l.R = s[a];
  for (int k = a + 1; k < s.rank(); ++k) l.inner *= s[k];
  return l;
}

void check_same(const char* op, const Tensor& a, const Tensor& b) {
  if (!(a.shape() == b.shape()) || a.dtype() != b.dtype())
    fail<ShapeError>(op, ": tensors must share shape and dtype, got ", a.shape(), " ", dtype_name(a.dtype()), " and ",
                     b.shape(), " ", dtype_name(b.dtype()));
}

// The shift of Note [stable softmax]: a line that is all -inf is shifted by 0, so that exp gives 0, not NaN.
template <class T>
T shift_of(T m) {
  return m == -std::numeric_limits<T>::infinity() ? T(0) : m;
}

// ---- Contiguous lines (inner == 1): SIMD along the row. ----
// Rows are often short (10 classes), so the helpers below avoid per-row calls into the generic reduce kernels.
// A row is always handled by one thread with the same code, whatever the split: the scalar tails below do not
// break determinism. Tails that need exp go through the batch function on a padded copy (Note [simd tail]).

template <class T>
simd::Batch<T> load_padded(const T* x, int64_t count, T fill) {
  alignas(64) T lanes[simd::width<T>];
  for (int64_t k = 0; k < simd::width<T>; ++k) lanes[k] = k < count ? x[k] : fill;
  return simd::Batch<T>::load_aligned(lanes);
}

template <class T>
T row_max(const T* x, int64_t n) {  // exact, so any order gives the same result
  using B = simd::Batch<T>;
  B acc(-std::numeric_limits<T>::infinity());
  int64_t i = 0;
  for (; i + simd::width<T> <= n; i += simd::width<T>) acc = xsimd::max(acc, B::load_unaligned(x + i));
  T m = simd::horizontal_max(acc);
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

// sum_i a_i (b == nullptr) or sum_i a_i b_i, in a fixed order.
template <class T>
T row_sum(const T* a, const T* b, int64_t n) {
  using B = simd::Batch<T>;
  B acc(T(0));
  int64_t i = 0;
  for (; i + simd::width<T> <= n; i += simd::width<T>)
    acc = b ? simd::fma(B::load_unaligned(a + i), B::load_unaligned(b + i), acc) : acc + B::load_unaligned(a + i);
  T s = simd::horizontal_sum(acc);
  for (; i < n; ++i) s += b ? a[i] * b[i] : a[i];
  return s;
}

template <class T, bool kLog>
void forward_row(const T* x, T* y, int64_t n) {
  using B = simd::Batch<T>;
  constexpr int64_t W = simd::width<T>;
  const T m = shift_of(row_max(x, n));
  const B shift(m);
  B acc(T(0));  // sum exp(x - m)
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const B e = xsimd::exp(B::load_unaligned(x + i) - shift);
    if constexpr (!kLog) e.store_unaligned(y + i);  // softmax keeps exp(x - m) and divides below
    acc += e;
  }
  if (i < n) {  // padded with -inf, whose exp adds 0
    const B e = xsimd::exp(load_padded(x + i, n - i, -std::numeric_limits<T>::infinity()) - shift);
    if constexpr (!kLog) {
      alignas(64) T lanes[W];
      e.store_aligned(lanes);
      std::copy(lanes, lanes + (n - i), y + i);
    }
    acc += e;
  }
  const T s = simd::horizontal_sum(acc);
  if constexpr (kLog) {
    const T log_s = std::log(s);
    const B blog_s(log_s);
    for (i = 0; i + W <= n; i += W) ((B::load_unaligned(x + i) - shift) - blog_s).store_unaligned(y + i);
    for (; i < n; ++i) y[i] = (x[i] - m) - log_s;
  } else {
    const B bs(s);
    for (i = 0; i + W <= n; i += W) (B::load_unaligned(y + i) / bs).store_unaligned(y + i);
    for (; i < n; ++i) y[i] = y[i] / s;
  }
}

template <class T, bool kLog>
void backward_row(const T* dy, const T* y, T* dx, int64_t n) {
  using B = simd::Batch<T>;
  constexpr int64_t W = simd::width<T>;
  const T s = kLog ? row_sum<T>(dy, nullptr, n) : row_sum<T>(dy, y, n);  // sum(dy) or sum(dy * y)
  const B bs(s);
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const B g = B::load_unaligned(dy + i), v = B::load_unaligned(y + i);
    (B::load_unaligned(dx + i) + (kLog ? g - xsimd::exp(v) * bs : v * (g - bs))).store_unaligned(dx + i);
  }
  if (i == n) return;
  if constexpr (kLog) {
    alignas(64) T e[W];
    xsimd::exp(load_padded(y + i, n - i, T(0))).store_aligned(e);
    for (int64_t k = 0; i + k < n; ++k) dx[i + k] += dy[i + k] - e[k] * s;
  } else {
    for (; i < n; ++i) dx[i] += y[i] * (dy[i] - s);
  }
}

// ---- Strided lines (inner > 1): all `inner` lines of one outer index at once, scalar loops over columns. ----

template <class T, bool kLog>
void forward_columns(const T* x, T* y, int64_t R, int64_t inner, T* m, T* s) {
  std::fill(m, m + inner, -std::numeric_limits<T>::infinity());
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < inner; ++j) m[j] = std::max(m[j], x[r * inner + j]);
  for (int64_t j = 0; j < inner; ++j) m[j] = shift_of(m[j]);
  std::fill(s, s + inner, T(0));
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < inner; ++j) s[j] += std::exp(x[r * inner + j] - m[j]);
  if constexpr (kLog) {
    for (int64_t j = 0; j < inner; ++j) s[j] = std::log(s[j]);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < inner; ++j) y[r * inner + j] = (x[r * inner + j] - m[j]) - s[j];
  } else {
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < inner; ++j) y[r * inner + j] = std::exp(x[r * inner + j] - m[j]) / s[j];
  }
}

template <class T, bool kLog>
void backward_columns(const T* dy, const T* y, T* dx, int64_t R, int64_t inner, T* s) {
  std::fill(s, s + inner, T(0));
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < inner; ++j) s[j] += kLog ? dy[r * inner + j] : dy[r * inner + j] * y[r * inner + j];
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < inner; ++j) {
      const int64_t k = r * inner + j;
      dx[k] += kLog ? dy[k] - std::exp(y[k]) * s[j] : y[k] * (dy[k] - s[j]);
    }
}

// Threads split the outer index only; each outer index owns R * inner values.
template <bool kLog>
void forward(const Tensor& x, int axis, Tensor& y, const char* op) {
  check_same(op, x, y);
  if (x.numel() == 0) return;
  const Lines l = split(x, axis, op);
  dispatch(x.dtype(), [&]<class T>() {
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const int64_t line = l.R * l.inner;
    parallel_for(l.outer, std::max<int64_t>(1, kReduceChunk / line), [&](int64_t o0, int64_t o1) {
      if (l.inner == 1) {
        for (int64_t o = o0; o < o1; ++o) forward_row<T, kLog>(px + o * line, py + o * line, l.R);
        return;
      }
      thread_local std::vector<T> buffer;
      buffer.resize(2 * l.inner);
      for (int64_t o = o0; o < o1; ++o)
        forward_columns<T, kLog>(px + o * line, py + o * line, l.R, l.inner, buffer.data(), buffer.data() + l.inner);
    }, line);
  });
}

template <bool kLog>
void backward(const Tensor& dy, const Tensor& y, int axis, Tensor& dx, const char* op) {
  check_same(op, dy, y);
  check_same(op, dy, dx);
  if (y.numel() == 0) return;
  const Lines l = split(y, axis, op);
  dispatch(y.dtype(), [&]<class T>() {
    const T *pdy = dy.data<T>(), *py = y.data<T>();
    T* pdx = dx.data<T>();
    const int64_t line = l.R * l.inner;
    parallel_for(l.outer, std::max<int64_t>(1, kReduceChunk / line), [&](int64_t o0, int64_t o1) {
      if (l.inner == 1) {
        for (int64_t o = o0; o < o1; ++o) backward_row<T, kLog>(pdy + o * line, py + o * line, pdx + o * line, l.R);
        return;
      }
      thread_local std::vector<T> buffer;
      buffer.resize(l.inner);
      for (int64_t o = o0; o < o1; ++o)
        backward_columns<T, kLog>(pdy + o * line, py + o * line, pdx + o * line, l.R, l.inner, buffer.data());
    }, line);
  });
}

}  // namespace

void log_softmax(const Tensor& x, int axis, Tensor& y) { forward<true>(x, axis, y, "log_softmax"); }
void softmax(const Tensor& x, int axis, Tensor& y) { forward<false>(x, axis, y, "softmax"); }
void log_softmax_backward(const Tensor& dy, const Tensor& y, int axis, Tensor& dx) {
  backward<true>(dy, y, axis, dx, "log_softmax");
}
void softmax_backward(const Tensor& dy, const Tensor& y, int axis, Tensor& dx) {
  backward<false>(dy, y, axis, dx, "softmax");
}

namespace naive {
namespace {
// Calls f(offset, stride, R) for each line along `axis`.
template <class F>
void for_each_line(const Tensor& x, int axis, const char* op, F f) {
  const Lines l = split(x, axis, op);
  for (int64_t o = 0; o < l.outer; ++o)
    for (int64_t j = 0; j < l.inner; ++j) f(o * l.R * l.inner + j, l.inner, l.R);
}

void forward(const Tensor& x, int axis, Tensor& y, bool log, const char* op) {
  for_each_line(x, axis, op, [&](int64_t at, int64_t stride, int64_t R) {
    long double m = -std::numeric_limits<long double>::infinity(), s = 0;
    for (int64_t r = 0; r < R; ++r) m = std::max(m, static_cast<long double>(x.item(at + r * stride)));
    if (std::isinf(m) && m < 0) m = 0;
    for (int64_t r = 0; r < R; ++r) s += std::exp(static_cast<long double>(x.item(at + r * stride)) - m);
    for (int64_t r = 0; r < R; ++r) {
      const long double v = static_cast<long double>(x.item(at + r * stride)) - m;
      y.set_item(at + r * stride, static_cast<double>(log ? v - std::log(s) : std::exp(v) / s));
    }
  });
}

void backward(const Tensor& dy, const Tensor& y, int axis, Tensor& dx, bool log, const char* op) {
  for_each_line(y, axis, op, [&](int64_t at, int64_t stride, int64_t R) {
    long double s = 0;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t k = at + r * stride;
      s += log ? static_cast<long double>(dy.item(k)) : static_cast<long double>(dy.item(k)) * y.item(k);
    }
    for (int64_t r = 0; r < R; ++r) {
      const int64_t k = at + r * stride;
      const long double g = dy.item(k), v = y.item(k);
      dx.set_item(k, static_cast<double>(dx.item(k) + (log ? g - std::exp(v) * s : v * (g - s))));
    }
  });
}
}  // namespace

void log_softmax(const Tensor& x, int axis, Tensor& y) { forward(x, axis, y, true, "log_softmax"); }
void softmax(const Tensor& x, int axis, Tensor& y) { forward(x, axis, y, false, "softmax"); }
void log_softmax_backward(const Tensor& dy, const Tensor& y, int axis, Tensor& dx) {
  backward(dy, y, axis, dx, true, "log_softmax");
}
void softmax_backward(const Tensor& dy, const Tensor& y, int axis, Tensor& dx) {
  backward(dy, y, axis, dx, false, "softmax");
}
}  // namespace naive

}  // namespace tapegrad::ops
