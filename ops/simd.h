// SIMD loop helpers: every elementwise kernel is "a batch loop plus a tail" over xsimd::batch<T>.
//
// Note [simd tail]: the tail is not computed with scalar std:: math but with the same batch function on a
// zero-padded copy. So element i always goes through the same instructions, whatever the length of the array
// or the way threads split it: results cannot depend on the thread count (Note [determinism]).
#pragma once

#include <algorithm>
#include <cstdint>

#include <xsimd/xsimd.hpp>

namespace tapegrad::simd {

template <class T>
using Batch = xsimd::batch<T>;
template <class T>
inline constexpr int64_t width = static_cast<int64_t>(Batch<T>::size);

// y[i] = f(x[i]) for i in [0, n), f taking and returning Batch<T>.
template <class T, class F>
inline void map(const T* x, T* y, int64_t n, F&& f) {
  constexpr int64_t W = width<T>;
  int64_t i = 0;
  for (; i + W <= n; i += W) f(Batch<T>::load_unaligned(x + i)).store_unaligned(y + i);
  if (i < n) {
    alignas(64) T in[W] = {}, out[W];
    std::copy(x + i, x + n, in);
    f(Batch<T>::load_aligned(in)).store_aligned(out);
    std::copy(out, out + (n - i), y + i);
  }
}

// y[i] = f(a[i * sa], b[i * sb]) with strides sa, sb in {0, 1} (0: a broadcast scalar).
template <class T, class F>
inline void zip(const T* a, int64_t sa, const T* b, int64_t sb, T* y, int64_t n, F&& f) {
  constexpr int64_t W = width<T>;
  auto load = [](const T* p, int64_t stride, int64_t i) {
    return stride == 0 ? Batch<T>(p[0]) : Batch<T>::load_unaligned(p + i);
  };
  int64_t i = 0;
  for (; i + W <= n; i += W) f(load(a, sa, i), load(b, sb, i)).store_unaligned(y + i);
  if (i < n) {
    alignas(64) T pa[W] = {}, pb[W] = {}, out[W];
    for (int64_t k = i; k < n; ++k) {
      pa[k - i] = a[k * sa];
      pb[k - i] = b[k * sb];
    }
    f(Batch<T>::load_aligned(pa), Batch<T>::load_aligned(pb)).store_aligned(out);
    std::copy(out, out + (n - i), y + i);
  }
}

// y[i] = f(a[i], b[i], c[i]), or y[i] += f(...) when accumulating: the shape of most backward rules,
// dx += f(dy, x, y).
template <class T, class F>
inline void zip3(const T* a, const T* b, const T* c, T* y, int64_t n, F&& f, bool accumulate = false) {
  constexpr int64_t W = width<T>;
  auto finish = [&](const Batch<T>& v, T* dst) { return accumulate ? v + Batch<T>::load_unaligned(dst) : v; };
  int64_t i = 0;
  for (; i + W <= n; i += W)
    finish(f(Batch<T>::load_unaligned(a + i), Batch<T>::load_unaligned(b + i), Batch<T>::load_unaligned(c + i)), y + i)
        .store_unaligned(y + i);
  if (i < n) {
    alignas(64) T pa[W] = {}, pb[W] = {}, pc[W] = {}, out[W] = {};
    std::copy(a + i, a + n, pa);
    std::copy(b + i, b + n, pb);
    std::copy(c + i, c + n, pc);
    std::copy(y + i, y + n, out);
    finish(f(Batch<T>::load_aligned(pa), Batch<T>::load_aligned(pb), Batch<T>::load_aligned(pc)), out)
        .store_aligned(out);
    std::copy(out, out + (n - i), y + i);
  }
}

// Horizontal sum of one batch (xsimd 8.1 calls it hadd; later versions renamed it reduce_add).
template <class T>
inline T horizontal_sum(const Batch<T>& v) {
  return xsimd::hadd(v);
}

template <class T>
inline T horizontal_max(const Batch<T>& v) {
  alignas(64) T lanes[width<T>];
  v.store_aligned(lanes);
  T m = lanes[0];
  for (int64_t k = 1; k < width<T>; ++k) m = std::max(m, lanes[k]);
  return m;
}

}  // namespace tapegrad::simd
