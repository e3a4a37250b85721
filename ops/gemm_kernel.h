// The inner pieces of the blocked GEMM in ops/gemm.cpp: packing of op(A) and op(B) into micro-panels, and the
// register-tiled xsimd micro-kernel that multiplies one MR-row panel of A by one NR-column panel of B.
//
// The micro-kernel computes an MR x NR block of C as kc rank-1 updates (Goto & van de Geijn 2008, "Anatomy of
// High-Performance Matrix Multiplication", ACM TOMS 34(3), section 4; BLIS, Van Zee & van de Geijn 2015):
//   acc(i, j) = sum_{k < kc} Ap[k][i] * Bp[k][j]          (one fused multiply-add per element per k, in k order)
//   C(i, j)   = alpha * acc(i, j) + beta * C(i, j)        (first K block)
//   C(i, j)   = alpha * acc(i, j) + C(i, j)               (later K blocks)
// Packed layouts (both 64-byte aligned, zero-padded to whole panels so the kernel never needs a tail):
//   Ap panel: kc x MR, Ap[k * MR + i] = op(A)(i0 + i, k0 + k)
//   Bp panel: kc x NR, Bp[k * NR + j] = op(B)(k0 + k, j0 + j)
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#ifdef __AVX__
#include <immintrin.h>
#endif

#include <xsimd/xsimd.hpp>

#include "ops/simd.h"

namespace tapegrad::ops::gemm_detail {

// Note [gemm tile shape]: the micro-tile is MR rows by NR = 2 SIMD batches of columns. With 16 vector registers
// (SSE2, AVX2) MR = 6: its 12 accumulators, the two B batches and one broadcast A value take 15 of them, so the
// k-loop runs from registers: per k it loads 2 batches and broadcasts 6 scalars for 12 FMAs, enough to keep both
// FMA pipes of Zen 3 busy (the same 6 x 16 shape as BLIS's haswell/zen sgemm kernel). AVX-512 has 32 registers
// and 64-byte batches, so MR = 12 (24 accumulators + 3 = 27 registers, as BLIS's skx kernels use most of the
// file): each B batch loaded then feeds 12 FMAs, not 6. On a 2-core Sapphire Rapids, together with the shorter K
// block of Note [gemm blocking], the 1-thread medians of bench_gemm (on the M2 decoder's 1050 x 500 x 784 shapes)
// rose 6-25% in each of three alternating rounds (fraction of the FMA peak 0.50-0.55 -> 0.54-0.69), and the M2
// recipe's epoch by less, in the noise of that machine (16 alternating pairs, median paired ratio 0.95). NR
// follows the batch width (16 floats for AVX2, 32 for AVX-512, 8 for SSE2, 8 doubles for AVX2), so the code is
// not tied to one instruction set.
template <class T>
struct Tile {
  using Batch = xsimd::batch<T>;
  static constexpr int64_t W = static_cast<int64_t>(Batch::size);
  static constexpr int64_t MR = sizeof(Batch) == 64 ? 12 : 6;  // 32 vector registers with 64-byte batches
  static constexpr int64_t NR = 2 * W;
};

// Note [gemm packing order]: packing is bound by reading the source, so each source row is read as one
// contiguous run. Where the packed panel runs along the source rows (A^T, and B), the loop is k-outer across
// all the panels of the call (a group of 8: 128 floats of a B row at once, instead of 16 floats and a jump to the
// next row, which left pack_b latency-bound at ~10% of a 128x784x400 product); where it runs across them (A,
// B^T), each source row is walked along k while the panel (at most 24 KiB) stays in L1.

// Packs op(A)(i0 .. i0+m, k0 .. k0+kc) into ceil(m / MR) panels of kc x MR, rows past m set to zero.
// op(A)(i, k) is A[i * lda + k], or A[k * lda + i] when trans_a: the transpose is read, never formed.
template <class T>
void pack_a(bool trans_a, const T* A, int64_t lda, int64_t i0, int64_t m, int64_t k0, int64_t kc, T* dst) {
  constexpr int64_t MR = Tile<T>::MR;
  if (trans_a) {
    for (int64_t k = 0; k < kc; ++k) {
      const T* src = A + (k0 + k) * lda + i0;  // row k0 + k of A: contiguous in i across all the panels
      for (int64_t is = 0; is < m; is += MR) {
        T* d = dst + is * kc + k * MR;
        const int64_t mr = std::min(MR, m - is);
        if (mr == MR) {  // a constant-size memcpy is inlined as vector moves; the general loop stays scalar
          std::memcpy(d, src + is, sizeof(T) * MR);
          continue;
        }
        for (int64_t i = 0; i < mr; ++i) d[i] = src[is + i];
        for (int64_t i = mr; i < MR; ++i) d[i] = T(0);
      }
    }
    return;
  }
  for (int64_t is = 0; is < m; is += MR, dst += kc * MR) {
    const int64_t mr = std::min(MR, m - is);
    const T* rows[MR];
    for (int64_t i = 0; i < MR; ++i) rows[i] = A + (i0 + is + std::min(i, mr - 1)) * lda + k0;
    for (int64_t k = 0; k < kc; ++k)  // MR read streams, one contiguous write stream
      for (int64_t i = 0; i < MR; ++i) dst[k * MR + i] = i < mr ? rows[i][k] : T(0);
  }
}

#ifdef __AVX__
// dst[k * ldd + j] = src[j * lds + k] for j, k < 8; dst 32-byte aligned. The usual unpack / shuffle / permute
// transpose (Intel optimization manual, "8x8 matrix transpose"), written with intrinsics because xsimd 8.1's
// zip_lo on AVX interleaves within 128-bit lanes only. 24 shuffles instead of 64 scalar loads and stores.
inline void transpose_8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_store_ps(dst + i * ldd, _mm256_permute2f128_ps(u[i], u[4 + i], 0x20));
    _mm256_store_ps(dst + (4 + i) * ldd, _mm256_permute2f128_ps(u[i], u[4 + i], 0x31));
  }
}
#endif

// Packs op(B)(k0 .. k0+kc, j0 .. j0+n) into ceil(n / NR) panels of kc x NR, columns past n set to zero.
// op(B)(k, j) is B[k * ldb + j], or B[j * ldb + k] when trans_b.
template <class T>
void pack_b(bool trans_b, const T* B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t n, T* dst) {
  using Batch = typename Tile<T>::Batch;
  constexpr int64_t W = Tile<T>::W, NR = Tile<T>::NR;
  if (!trans_b) {
    for (int64_t k = 0; k < kc; ++k) {
      const T* src = B + (k0 + k) * ldb + j0;  // row k0 + k of B, across all the panels
      for (int64_t js = 0; js < n; js += NR) {
        T* d = dst + js * kc + k * NR;
        if (js + NR <= n) {
          Batch::load_unaligned(src + js).store_aligned(d);
          Batch::load_unaligned(src + js + W).store_aligned(d + W);
        } else {
          for (int64_t j = 0; j < NR; ++j) d[j] = js + j < n ? src[js + j] : T(0);
        }
      }
    }
    return;
  }
  for (int64_t js = 0; js < n; js += NR, dst += kc * NR) {
    // B^T: column j of op(B) is row j of B. Whole 8 x 8 blocks are transposed in registers where AVX allows;
    // the rest walks each source row once and scatters it into the panel.
    const int64_t nr = std::min(NR, n - js);
    int64_t j_blocked = 0, k_blocked = 0;  // op(B)(k < k_blocked, j < j_blocked) done by the 8 x 8 blocks
#ifdef __AVX__
    if constexpr (std::is_same_v<T, float> && W % 8 == 0) {  // AVX2 and AVX-512: 8 x 8 blocks
      j_blocked = nr / 8 * 8;
      k_blocked = kc / 8 * 8;
      for (int64_t j = 0; j < j_blocked; j += 8)
        for (int64_t k = 0; k < k_blocked; k += 8)
          transpose_8x8(B + (j0 + js + j) * ldb + k0 + k, ldb, dst + k * NR + j, NR);
    }
#endif
    for (int64_t j = 0; j < nr; ++j) {
      const T* src = B + (j0 + js + j) * ldb + k0;
      for (int64_t k = j < j_blocked ? k_blocked : 0; k < kc; ++k) dst[k * NR + j] = src[k];
    }
    for (int64_t j = nr; j < NR; ++j)
      for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = T(0);
  }
}

// Where the micro-kernel reads op(A)(i, k), i < MR, for its current k. Usually a packed panel; StridedA reads
// op(A) in place, which pays when each A panel meets only one or two B panels (N <= 2 NR, Note [gemm blocking]):
// then packing A would cost as much memory traffic as the multiply itself reads.
template <class T>
struct PackedA {
  const T* p;  // kc x MR panel
  T at(int64_t i) const { return p[i]; }
  void next() { p += Tile<T>::MR; }
};

template <class T>
struct StridedA {
  const T* p;                  // op(A)(i0, k)
  int64_t row[Tile<T>::MR];    // op(A)(i0 + i, k) is p[row[i]]
  int64_t k_stride;
  // Rows i0 .. i0+m of op(A) from column k0; rows past m repeat the last one (their results are discarded by
  // edge_kernel), so no read goes past the matrix.
  StridedA(bool trans_a, const T* A, int64_t lda, int64_t i0, int64_t m, int64_t k0) {
    p = trans_a ? A + k0 * lda + i0 : A + i0 * lda + k0;
    for (int64_t i = 0; i < Tile<T>::MR; ++i) row[i] = std::min(i, m - 1) * (trans_a ? 1 : lda);
    k_stride = trans_a ? lda : 1;
  }
  T at(int64_t i) const { return p[row[i]]; }
  void next() { p += k_stride; }
};

// Note [half-width edge panel]: an edge panel with at most 4 live float columns (N = 20 = 16 + 4, the VAE's
// 400 -> 20 layer) runs on 4-lane SSE vectors when the build has FMA3. On CPUs whose FMA units are half as wide
// as the AVX registers (Zen 1: 128-bit pipes) a 4-lane FMA costs half an 8-lane one, so the 4 live columns no
// longer pay for 8 (128x400x20 at 1 thread: 26.4 -> 29 GFLOP/s on Zen 1); elsewhere it costs the same. The
// vector is written with intrinsics, not as an xsimd batch: xsimd 8.1 turns off fused SSE FMA in AVX builds
// (XSIMD_WITH_FMA3_SSE = 0), so its 4-lane fma would round twice where the 8-lane one rounds once, and the
// bits of column 19 would depend on N. _mm_fmadd_ps and the tile's _mm256_fmadd_ps round each lane once, so
// every element gets the same chain.
#if defined(__FMA__) && defined(__AVX2__)
struct FusedFloat4 {
  static constexpr std::size_t size = 4;
  __m128 v;
  FusedFloat4() = default;
  explicit FusedFloat4(float x) : v(_mm_set1_ps(x)) {}
  explicit FusedFloat4(__m128 x) : v(x) {}
  static FusedFloat4 load_aligned(const float* p) { return FusedFloat4(_mm_load_ps(p)); }
  static FusedFloat4 load_unaligned(const float* p) { return FusedFloat4(_mm_loadu_ps(p)); }
  void store_unaligned(float* p) const { _mm_storeu_ps(p, v); }
  friend FusedFloat4 operator*(FusedFloat4 a, FusedFloat4 b) { return FusedFloat4(_mm_mul_ps(a.v, b.v)); }
};
inline FusedFloat4 madd(FusedFloat4 a, FusedFloat4 b, FusedFloat4 c) {
  return FusedFloat4(_mm_fmadd_ps(a.v, b.v, c.v));
}
template <class T>
using HalfBatch = std::conditional_t<std::is_same_v<T, float> && Tile<T>::W == 8, FusedFloat4, void>;
#else
template <class T>
using HalfBatch = void;
#endif
// a * b + c rounded once, for the tile's batches and FusedFloat4 alike (Note [explicit fma] in ops/simd.h).
template <class B>
inline B madd(const B& a, const B& b, const B& c) {
  return simd::fma(a, b, c);
}

// C(0..MR, 0..NB*W) (row stride ldc) = alpha * Ap * Bp + (first ? beta * C : C); see the equations at the top.
// With a bias (first block only, beta = 0), bias[0..NB*W) takes the place of beta * C: the arithmetic of a C
// whose rows were set to the bias with beta = 1 (1 * b == b), without that pass over C (Note [gemm bias]).
// W is Batch's width: the tile's (Tile<T>::Batch) or half of it (Note [half-width edge panel]); Bp panels are
// NR wide either way. NB = 2 is the full tile; NB = 1 serves edge panels with at most W live columns at half
// the cost (N = 24 is then 16 + 8 columns of work rather than 32). Either way, and whichever APanel, each element
// gets the same FMA chain, so these choices cannot change any bits. With first && beta == 0 the old C is never
// read, so NaN there is overwritten (as BLAS specifies).
// noinline: a call per kc-long k-loop costs nothing, and inlined into the tile loop GCC 12 allocated registers worse.
template <class T, int NB, class Batch = typename Tile<T>::Batch, class APanel>
__attribute__((noinline)) void micro_kernel(int64_t kc, APanel a, const T* __restrict bp, T* c, int64_t ldc,
                                            T alpha, T beta, bool first, const T* bias = nullptr) {
  constexpr int64_t W = static_cast<int64_t>(Batch::size), MR = Tile<T>::MR, NR = Tile<T>::NR;
  static_assert(NB == 1 || NB == 2);
  // Two named accumulator arrays and named B loads, not acc[MR][NB]: with the 2-D array GCC 12 re-reads the
  // second B batch from L1 as a memory operand of each FMA instead of keeping it in a register.
  Batch acc0[MR], acc1[MR];
#pragma GCC unroll 12
  for (int64_t i = 0; i < MR; ++i) {
    acc0[i] = acc1[i] = Batch(T(0));
    // The C tile is read and written only after the k-loop: start fetching its rows now (as BLIS's kernels do)
    // so the store does not wait on a miss. A row of NB * W values may straddle two cache lines.
    __builtin_prefetch(c + i * ldc, 1);
    __builtin_prefetch(c + i * ldc + NB * W - 1, 1);
  }
  for (int64_t k = 0; k < kc; ++k, a.next(), bp += NR) {
    const Batch b0 = Batch::load_aligned(bp);
    const Batch b1 = NB == 2 ? Batch::load_aligned(bp + W) : b0;
#pragma GCC unroll 12
    for (int64_t i = 0; i < MR; ++i) {
      const Batch ai(a.at(i));
      acc0[i] = madd(ai, b0, acc0[i]);
      if constexpr (NB == 2) acc1[i] = madd(ai, b1, acc1[i]);
    }
  }
  const Batch va(alpha), vb(beta);
#pragma GCC unroll 12
  for (int64_t i = 0; i < MR; ++i)
    for (int v = 0; v < NB; ++v) {
      T* out = c + i * ldc + v * W;
      Batch old;
      if (!first) old = Batch::load_unaligned(out);
      else if (bias) old = Batch::load_unaligned(bias + v * W);
      else if (beta == T(0)) old = Batch(T(0));
      else old = vb * Batch::load_unaligned(out);
      madd(va, v == 0 ? acc0[i] : acc1[i], old).store_unaligned(out);
    }
}

// One m x n (m <= MR, n <= NR) micro-tile of C. Full tiles go straight to the kernel; partial ones run the same
// kernel on a full-size scratch tile that is then copied back, so edge elements get exactly the arithmetic of
// interior ones and the kernel needs no masked loads or stores.
template <class T, class APanel>
inline void tile_kernel(int64_t kc, const APanel& a, const T* bp, T* c, int64_t ldc, int64_t m, int64_t n, T alpha,
                        T beta, bool first, const T* bias = nullptr) {
  constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR, W = Tile<T>::W;
  if (m == MR && n == NR) return micro_kernel<T, 2>(kc, a, bp, c, ldc, alpha, beta, first, bias);
  if (m == MR && n == W) return micro_kernel<T, 1>(kc, a, bp, c, ldc, alpha, beta, first, bias);
  alignas(64) T tile[MR * NR] = {};
  alignas(64) T bias_tile[NR];  // the kernel reads a whole panel's width of bias: pad the n live values
  if (bias) {
    std::fill(bias_tile + n, bias_tile + NR, T(0));
    std::copy(bias, bias + n, bias_tile);
    bias = bias_tile;
  }
  const bool reads_c = !first || (beta != T(0) && !bias);
  if (reads_c)
    for (int64_t i = 0; i < m; ++i) std::copy(c + i * ldc, c + i * ldc + n, tile + i * NR);
  bool done = false;
  if constexpr (!std::is_void_v<HalfBatch<T>>) {
    if (n <= W / 2) {  // Note [half-width edge panel]
      micro_kernel<T, 1, HalfBatch<T>>(kc, a, bp, tile, NR, alpha, beta, first, bias);
      done = true;
    }
  }
  if (!done && n <= W) micro_kernel<T, 1>(kc, a, bp, tile, NR, alpha, beta, first, bias);
  else if (!done) micro_kernel<T, 2>(kc, a, bp, tile, NR, alpha, beta, first, bias);
  for (int64_t i = 0; i < m; ++i) std::copy(tile + i * NR, tile + i * NR + n, c + i * ldc);
}

}  // namespace tapegrad::ops::gemm_detail
