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

#include <xsimd/xsimd.hpp>

namespace tapegrad::ops::gemm_detail {

// Note [gemm tile shape]: the micro-tile is MR = 6 rows by NR = 2 SIMD batches of columns. Its 12 accumulators,
// the two B batches and one broadcast A value take 15 of the 16 vector registers of AVX2 (and of SSE2), so the
// k-loop runs from registers: per k it loads 2 batches and broadcasts 6 scalars for 12 FMAs, enough to keep both
// FMA pipes of Zen 3 busy (the same 6 x 16 shape as BLIS's haswell/zen sgemm kernel). NR follows the batch width
// (16 floats for AVX2, 8 for SSE2, 8 doubles for AVX2), so the code is not tied to one instruction set.
template <class T>
struct Tile {
  using Batch = xsimd::batch<T>;
  static constexpr int64_t W = static_cast<int64_t>(Batch::size);
  static constexpr int64_t MR = 6;
  static constexpr int64_t NR = 2 * W;
};

// Packs op(A)(i0 .. i0+m, k0 .. k0+kc) into ceil(m / MR) panels of kc x MR, rows past m set to zero.
// op(A)(i, k) is A[i * lda + k], or A[k * lda + i] when trans_a: the transpose is read, never formed.
template <class T>
void pack_a(bool trans_a, const T* A, int64_t lda, int64_t i0, int64_t m, int64_t k0, int64_t kc, T* dst) {
  constexpr int64_t MR = Tile<T>::MR;
  for (int64_t is = 0; is < m; is += MR, dst += kc * MR) {
    const int64_t mr = std::min(MR, m - is);
    if (trans_a) {
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = A + (k0 + k) * lda + i0 + is;  // contiguous in i
        for (int64_t i = 0; i < mr; ++i) dst[k * MR + i] = src[i];
        for (int64_t i = mr; i < MR; ++i) dst[k * MR + i] = T(0);
      }
    } else if (mr == MR) {
      const T* rows[MR];
      for (int64_t i = 0; i < MR; ++i) rows[i] = A + (i0 + is + i) * lda + k0;
      for (int64_t k = 0; k < kc; ++k)  // MR read streams, one contiguous write stream
        for (int64_t i = 0; i < MR; ++i) dst[k * MR + i] = rows[i][k];
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        for (int64_t i = 0; i < mr; ++i) dst[k * MR + i] = A[(i0 + is + i) * lda + k0 + k];
        for (int64_t i = mr; i < MR; ++i) dst[k * MR + i] = T(0);
      }
    }
  }
}

// Packs op(B)(k0 .. k0+kc, j0 .. j0+n) into ceil(n / NR) panels of kc x NR, columns past n set to zero.
// op(B)(k, j) is B[k * ldb + j], or B[j * ldb + k] when trans_b.
template <class T>
void pack_b(bool trans_b, const T* B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t n, T* dst) {
  using Batch = typename Tile<T>::Batch;
  constexpr int64_t W = Tile<T>::W, NR = Tile<T>::NR;
  for (int64_t js = 0; js < n; js += NR, dst += kc * NR) {
    const int64_t nr = std::min(NR, n - js);
    if (!trans_b && nr == NR) {
      for (int64_t k = 0; k < kc; ++k) {  // a row of B is already contiguous: plain copy
        const T* src = B + (k0 + k) * ldb + j0 + js;
        Batch::load_unaligned(src).store_aligned(dst + k * NR);
        Batch::load_unaligned(src + W).store_aligned(dst + k * NR + W);
      }
    } else if (!trans_b) {
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = B + (k0 + k) * ldb + j0 + js;
        for (int64_t j = 0; j < nr; ++j) dst[k * NR + j] = src[j];
        for (int64_t j = nr; j < NR; ++j) dst[k * NR + j] = T(0);
      }
    } else {
      // B^T: column j of op(B) is row j of B. Walk each source row once (sequential reads) and scatter it
      // into the panel with stride NR; the panel (kc * NR values) stays in L1 while it is filled.
      for (int64_t j = 0; j < nr; ++j) {
        const T* src = B + (j0 + js + j) * ldb + k0;
        for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = src[k];
      }
      for (int64_t j = nr; j < NR; ++j)
        for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = T(0);
    }
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

// C(0..MR, 0..NB*W) (row stride ldc) = alpha * Ap * Bp + (first ? beta * C : C); see the equations at the top.
// NB = 2 is the full tile; NB = 1 serves edge panels with at most W live columns at half the cost (N = 20 is
// then 16 + 8 columns of work rather than 32). Either way, and whichever APanel, each element gets the same FMA
// chain, so these choices cannot change any bits. With first && beta == 0 the old C is never read, so NaN there
// is overwritten (as BLAS specifies).
// noinline: a call per kc-long k-loop costs nothing, and inlined into the tile loop GCC 12 allocated registers worse.
template <class T, int NB, class APanel>
__attribute__((noinline)) void micro_kernel(int64_t kc, APanel a, const T* __restrict bp, T* c, int64_t ldc,
                                            T alpha, T beta, bool first) {
  using Batch = typename Tile<T>::Batch;
  constexpr int64_t W = Tile<T>::W, MR = Tile<T>::MR, NR = Tile<T>::NR;
  static_assert(NB == 1 || NB == 2);
  // Two named accumulator arrays and named B loads, not acc[MR][NB]: with the 2-D array GCC 12 re-reads the
  // second B batch from L1 as a memory operand of each FMA instead of keeping it in a register.
  Batch acc0[MR], acc1[MR];
#pragma GCC unroll 6
  for (int64_t i = 0; i < MR; ++i) acc0[i] = acc1[i] = Batch(T(0));
  for (int64_t k = 0; k < kc; ++k, a.next(), bp += NR) {
    const Batch b0 = Batch::load_aligned(bp);
    const Batch b1 = NB == 2 ? Batch::load_aligned(bp + W) : b0;
#pragma GCC unroll 6
    for (int64_t i = 0; i < MR; ++i) {
      const Batch ai(a.at(i));
      acc0[i] = xsimd::fma(ai, b0, acc0[i]);
      if constexpr (NB == 2) acc1[i] = xsimd::fma(ai, b1, acc1[i]);
    }
  }
  const Batch va(alpha), vb(beta);
#pragma GCC unroll 6
  for (int64_t i = 0; i < MR; ++i)
    for (int v = 0; v < NB; ++v) {
      T* out = c + i * ldc + v * W;
      Batch old;
      if (!first) old = Batch::load_unaligned(out);
      else if (beta == T(0)) old = Batch(T(0));
      else old = vb * Batch::load_unaligned(out);
      xsimd::fma(va, v == 0 ? acc0[i] : acc1[i], old).store_unaligned(out);
    }
}

// One m x n (m <= MR, n <= NR) micro-tile of C. Full tiles go straight to the kernel; partial ones run the same
// kernel on a full-size scratch tile that is then copied back, so edge elements get exactly the arithmetic of
// interior ones and the kernel needs no masked loads or stores.
template <class T, class APanel>
inline void tile_kernel(int64_t kc, const APanel& a, const T* bp, T* c, int64_t ldc, int64_t m, int64_t n, T alpha,
                        T beta, bool first) {
  constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR, W = Tile<T>::W;
  if (m == MR && n == NR) return micro_kernel<T, 2>(kc, a, bp, c, ldc, alpha, beta, first);
  if (m == MR && n == W) return micro_kernel<T, 1>(kc, a, bp, c, ldc, alpha, beta, first);
  alignas(64) T tile[MR * NR] = {};
  const bool reads_c = !first || beta != T(0);
  if (reads_c)
    for (int64_t i = 0; i < m; ++i) std::copy(c + i * ldc, c + i * ldc + n, tile + i * NR);
  if (n <= W) micro_kernel<T, 1>(kc, a, bp, tile, NR, alpha, beta, first);
  else micro_kernel<T, 2>(kc, a, bp, tile, NR, alpha, beta, first);
  for (int64_t i = 0; i < m; ++i) std::copy(tile + i * NR, tile + i * NR + n, c + i * ldc);
}

}  // namespace tapegrad::ops::gemm_detail
