// SIMD loop helpers: every elementwise kernel is "a batch loop plus a tail" over xsimd::batch<T>.
//
// Note [simd tail]: the tail is not computed with scalar std:: math but with the same batch function on a
// zero-padded copy. So element i always goes through the same instructions, whatever the length of the array
// or the way threads split it: results cannot depend on the thread count (Note [determinism]). That needs the
// compiler to emit the same instructions at both places too: Note [no fp contraction] in meson.build.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

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
    if (accumulate) std::copy(y + i, y + n, out);
    finish(f(Batch<T>::load_aligned(pa), Batch<T>::load_aligned(pb), Batch<T>::load_aligned(pc)), out)
        .store_aligned(out);
    std::copy(out, out + (n - i), y + i);
  }
}

// Note [explicit fma]: a * b + c rounded once. The build turns floating-point contraction off (Note [no fp
// contraction] in meson.build), so an FMA happens only where it is written, and it must be written with this
// function: xsimd 8.1 has no AVX-512 fma of its own and falls back to a * b + c, which without contraction
// would be a multiply and an add (two roundings, half the GEMM's speed).
template <class B>
inline B fma(const B& a, const B& b, const B& c) {
#ifdef __AVX512F__
  if constexpr (sizeof(B) == 64 && std::is_same_v<typename B::value_type, float>)
    return B(_mm512_fmadd_ps(a, b, c));
  else if constexpr (sizeof(B) == 64 && std::is_same_v<typename B::value_type, double>)
    return B(_mm512_fmadd_pd(a, b, c));
  else
#endif
    return xsimd::fma(a, b, c);
}

// Note [log1p of exp(-|x|)]: log(1 + e) with e = exp(-|x|) in (0, 1] is the careful part of softplus, log_sigmoid
// and BCE with logits. Its argument 1 + e lies in one binade, [1, 2], so the general log1p (exponent split, range
// reduction, measured at 0.9 ns per float, more than exp) is not needed: with s = e / (2 + e) in [0, 1/3],
//   log(1 + e) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...)                       (Abramowitz & Stegun 4.1.27)
// and s^2 <= 1/9, so the series to s^14/15 leaves a relative error below (1/9)^8 / 17 = 1.4e-9, under a tenth of
// float's rounding unit. There is no cancellation (every term is positive and s ~ e/2 for small e): measured
// over x in [-80, 80] in steps of 1e-4 it is within 3.3 ulp of the double-precision value (xsimd::log1p of the
// same e: 1.9 ulp; most of both is exp's own error), at half the cost: BCE with logits over (128, 784) went
// from 190 to 100 us. float only; double keeps xsimd::log1p (the series would need twice the terms).
template <class B>
inline B log1p_exp_neg_abs(const B& x) {
  const B e = xsimd::exp(-xsimd::abs(x));
  if constexpr (std::is_same_v<typename B::value_type, float>) {
    const B s = e / (B(2) + e), s2 = s * s;
    B p = B(1.0f / 15);
    p = simd::fma(p, s2, B(1.0f / 13));
    p = simd::fma(p, s2, B(1.0f / 11));
    p = simd::fma(p, s2, B(1.0f / 9));
    p = simd::fma(p, s2, B(1.0f / 7));
    p = simd::fma(p, s2, B(1.0f / 5));
    p = simd::fma(p, s2, B(1.0f / 3));
    p = simd::fma(p, s2, B(1));
    return (s + s) * p;
  } else {
    return xsimd::log1p(e);
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
