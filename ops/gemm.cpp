// The blocked, packed, multi-threaded GEMM behind ops/gemm.h: C = alpha * op(A) * op(B) + beta * C, row-major.
// Packing and the micro-kernel live in ops/gemm_kernel.h; this file chooses the blocks and drives the threads.
//
// Note [gemm blocking] (Goto & van de Geijn 2008, "Anatomy of High-Performance Matrix Multiplication";
// BLIS, Van Zee & van de Geijn 2015, "BLIS: A Framework for Rapidly Instantiating BLAS Functionality"):
// the product is cut into the classic loops around a register-tiled micro-kernel.
//   - K is cut into equal blocks of at most KC = 384 (784 = 3 x 262, 1024 = 3 x 342). One kc x NR panel of packed
//     B is then at most 24 KiB (floats, AVX2) and stays in Zen 3's 32 KiB L1 while the micro-kernel walks down
//     the rows of A against it. Each K block costs a pass over C (load, add, store), so fewer, longer blocks
//     are better until the B panel no longer fits: 384 measured a little faster than 256 (bench_gemm). With
//     AVX-512's 32-float panels the same 24 KiB allows KC = 192 (at 384 the panel would fill all 48 KiB of Sapphire
//     Rapids' L1), so KC = min(384, 24 KiB / (NR * sizeof(T))).
//   - M is cut into tiles of at most MC rows (96 floats, 48 doubles at kc = 384; more for shorter kc): an
//     MC x kc block of packed A is at most 144 KiB, which stays in Zen 3's 512 KiB L2 while every B panel of
//     the tile streams past it.
//   - op(A) and op(B) are packed once per call (a "super-block" of at most kPackBudget bytes) into contiguous,
//     aligned, zero-padded micro-panels, in one parallel pass. Packing reads the transposes in place, so A^T*B
//     and A*B^T cost no more than A*B, and the zero padding lets one kernel serve every edge (any M, N, K >= 1).
//     Packing everything up front (BLIS packs per block, inside the loops) costs a buffer of (M + N) * K values
//     but makes the second pass, the multiply, free of redundant packing however the output is split.
//     When N <= 2 NR, A is not packed at all but read in place (each A value is used once or twice); when M fits
//     one row of tiles, each B panel is packed just before its use instead (Note [gemm packing B per panel]).
//   - The multiply is a second parallel pass over rectangular output tiles (each a whole number of MR x NR
//     micro-tiles): each tile is owned by exactly one task, which loops over the K blocks in order.
//
// Note [gemm determinism]: each C element is produced by the same sequence of operations whatever the thread
// count or tiling: for each K block in increasing order, an FMA chain over k in increasing order (from zero),
// then C = alpha * acc + beta * C for the first block and C = alpha * acc + C after. The K blocks depend on K
// alone (never on the thread count), and tiles only decide which thread runs that sequence, so 1 and 2 threads
// give the same bits. Edge micro-tiles run the same kernel on a padded copy (gemm_kernel.h), and packed or
// in-place A feed the same values, so neither the tile grid nor the path taken can change any bits either.
//
// Note [gemm bias]: a dense layer's y = x W^T + b. Setting every row of C to b and accumulating onto it (beta = 1)
// costs a write and a read of all of C (M2's decoder: 1,050 x 784 floats a step) before the product starts. With
// `bias`, the first K block's epilogue adds b where it would have added beta * C: the same operation on the same
// values (the old C was b, times beta = 1), so the bits are those of the two-pass form, without the pass.
//
// Memory: the packed copies live in a thread-local buffer of the calling thread that only grows (to at most
// about kPackBudget = 32 MiB; more only when one MC-row block times K exceeds it), so after the first call of
// a given size gemm does not allocate.
#include "ops/gemm.h"

#include <algorithm>
#include <cstddef>
#include <memory>
#include <new>

#include "ops/error.h"
#include "ops/gemm_kernel.h"
#include "ops/parallel.h"

namespace tapegrad::ops {
namespace {

using gemm_detail::Tile;

template <class T>
constexpr int64_t kKC = std::min<int64_t>(384, 24 * 1024 / (Tile<T>::NR * int64_t{sizeof(T)}));  // longest K block
// Bytes of the L2-resident block of packed A (MC x kc values), as BLIS's zen3 sgemm: MC = 144 with KC = 256.
constexpr int64_t kL2Block = 144 * 1024;
template <class T>
constexpr int64_t kMC = kL2Block / (kKC<T> * int64_t{sizeof(T)}) / Tile<T>::MR * Tile<T>::MR;  // MC at the longest kc
// Largest packed copy made at once. Bigger products are done in super-blocks (rarely: a 4096 x 512 float A
// plus a 512 x 4096 B fits), so huge im2col matrices do not double the memory footprint.
constexpr int64_t kPackBudget = int64_t{32} << 20;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A thread-local, 64-byte-aligned scratch array that only grows, so steady-state calls do not allocate.
// If a thread re-enters gemm while its array is in use (a TBB worker waiting inside one gemm may steal a task
// that calls another), the nested call gets a fresh array of its own instead.
template <class T>
class PackScratch {
 public:
  explicit PackScratch(int64_t count) {
    thread_local Storage tls;
    storage_ = tls.busy ? &own_ : &tls;
    storage_->busy = true;
    storage_->reserve(static_cast<size_t>(count));
  }
  ~PackScratch() { storage_->busy = false; }
  PackScratch(const PackScratch&) = delete;
  PackScratch& operator=(const PackScratch&) = delete;
  T* data() const { return storage_->data.get(); }

 private:
  struct Free {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  struct Storage {
    std::unique_ptr<T[], Free> data;
    size_t capacity = 0;
    bool busy = false;
    void reserve(size_t n) {
      if (n <= capacity) return;
      data.reset(static_cast<T*>(::operator new[](n * sizeof(T), std::align_val_t{64})));
      capacity = n;
    }
  };
  Storage own_;
  Storage* storage_;
};

template <class T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0)) std::fill(c, c + N, T(0));  // not 0 * c: NaN in C must not survive beta = 0
    else if (beta != T(1)) for (int64_t j = 0; j < N; ++j) c[j] *= beta;
  }
}

void check_args(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                int64_t ldc) {
  if (M < 0 || N < 0 || K < 0) fail<ValueError>("gemm: sizes must be >= 0, got M=", M, ", N=", N, ", K=", K);
  // Row-major: a stored row must fit within its stride.
  const bool ta = trans_a == Trans::yes, tb = trans_b == Trans::yes;
  const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
  if (a_rows > 0 && lda < a_cols)
    fail<ValueError>("gemm: lda must be >= ", a_cols, " for A stored as (", a_rows, ", ", a_cols, "), got ", lda);
  if (b_rows > 0 && ldb < b_cols)
    fail<ValueError>("gemm: ldb must be >= ", b_cols, " for B stored as (", b_rows, ", ", b_cols, "), got ", ldb);
  if (M > 0 && ldc < N) fail<ValueError>("gemm: ldc must be >= ", N, " for C of shape (", M, ", ", N, "), got ", ldc);
}

// Everything one super-block needs: the operands, the packed copies and the output tile grid.
template <class T>
struct Block {
  bool ta, tb;
  const T* A;
  int64_t lda;
  const T* B;
  int64_t ldb;
  T* C;
  int64_t ldc;
  int64_t i0, m, j0, n, K;  // the super-block: rows i0 .. i0+m and columns j0 .. j0+n of C
  int64_t kc;               // K block length (the last block may be shorter): Note [gemm blocking]
  T alpha, beta;
  const T* bias;  // N values or null: Note [gemm bias]
  // Packed op(A), or null when A is read in place: for each K block k0, m_pad x kc values at Ap + k0 * m_pad,
  // in panels of kc x MR. Packed op(B): for each K block k0, kc x n_pad values at Bp + k0 * n_pad (kc x NR panels).
  T* Ap;
  T* Bp;  // null when each B panel is packed just before its use (Note [gemm packing B per panel])
  int64_t m_pad, n_pad;
};

// Packs group g of op(A) panels (g < #A groups) or group g - #A groups of op(B) panels, over all of K. A group
// is kPackGroup panels, so that each source row is read in long runs (Note [gemm packing order]).
constexpr int64_t kPackGroup = 8;

template <class T>
void pack_group(const Block<T>& b, int64_t a_groups, int64_t g) {
  constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR;
  for (int64_t k0 = 0; k0 < b.K; k0 += b.kc) {
    const int64_t kc = std::min(b.kc, b.K - k0);
    if (g < a_groups) {
      const int64_t r = g * kPackGroup * MR, rows = std::min(kPackGroup * MR, b.m - r);
      gemm_detail::pack_a(b.ta, b.A, b.lda, b.i0 + r, rows, k0, kc, b.Ap + k0 * b.m_pad + r * kc);
    } else {
      const int64_t c = (g - a_groups) * kPackGroup * NR, cols = std::min(kPackGroup * NR, b.n - c);
      gemm_detail::pack_b(b.tb, b.B, b.ldb, k0, kc, b.j0 + c, cols, b.Bp + k0 * b.n_pad + c * kc);
    }
  }
}

// The output tile made of A panels [pa0, pa1) and B panels [pb0, pb1): the three inner loops of Goto's scheme.
template <class T>
void multiply_tile(const Block<T>& b, int64_t pa0, int64_t pa1, int64_t pb0, int64_t pb1) {
  constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR;
  alignas(64) T panel[kKC<T> * NR];  // one packed B panel, when b.Bp is null
  for (int64_t k0 = 0; k0 < b.K; k0 += b.kc) {  // in order: Note [gemm determinism]
    const int64_t kc = std::min(b.kc, b.K - k0);
    const bool first = k0 == 0;
    for (int64_t pb = pb0; pb < pb1; ++pb) {  // one B panel in L1 ...
      const int64_t col = pb * NR, nr = std::min(NR, b.n - col);
      if (!b.Bp) gemm_detail::pack_b(b.tb, b.B, b.ldb, k0, kc, b.j0 + col, nr, panel);
      const T* bp = b.Bp ? b.Bp + k0 * b.n_pad + pb * NR * kc : panel;
      for (int64_t pa = pa0; pa < pa1; ++pa) {  // ... against every A panel of the L2-resident block
        const int64_t row = pa * MR, mr = std::min(MR, b.m - row);
        T* c = b.C + (b.i0 + row) * b.ldc + b.j0 + col;
        const T* bias = first && b.bias ? b.bias + b.j0 + col : nullptr;
        if (b.Ap) {
          const gemm_detail::PackedA<T> ap{b.Ap + k0 * b.m_pad + pa * MR * kc};
          gemm_detail::tile_kernel(kc, ap, bp, c, b.ldc, mr, nr, b.alpha, b.beta, first, bias);
        } else {
          const gemm_detail::StridedA<T> ap(b.ta, b.A, b.lda, b.i0 + row, mr, k0);
          gemm_detail::tile_kernel(kc, ap, bp, c, b.ldc, mr, nr, b.alpha, b.beta, first, bias);
        }
      }
    }
  }
}

template <class T>
void multiply_block(Block<T>& b) {
  constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR;
  const int64_t a_panels = b.m_pad / MR, b_panels = b.n_pad / NR;
  // Packing A pays only when each packed A panel meets several B panels. For N <= 2 NR (the VAE's 400 -> 20
  // layer) A is read in place (StridedA in gemm_kernel.h): bench_gemm measured 128x400x20 at about 38 GFLOP/s
  // with A packed and 54 without, while shapes with N >= 400 were a few percent faster packed.
  const bool packs_a = b_panels >= 3;

  // Tile grid: rows in at most MC-row tiles (the L2 block). With several threads, cut further (always the
  // longer side, keeping tiles squarish so both packed operands are reused) until there are about 4 tiles
  // per thread, so that TBB can rebalance when another process takes a core, and a multiple of the thread
  // count (1024^3 has 11 MC blocks: 6 + 5 tiles on 2 threads left 8% idle). Bits do not depend on the grid.
  const int64_t threads = num_threads();
  // MC follows the actual kc: K = 784 (kc = 262) takes 140-row tiles, so 128 rows stay one tile on one thread.
  const int64_t mc_panels = std::max<int64_t>(1, kL2Block / (b.kc * int64_t{sizeof(T)} * MR));
  int64_t tm = ceil_div(a_panels, mc_panels), tn = 1;
  const int64_t target = threads > 1 ? 4 * threads : 1;
  while (tm * tn < target || (tm * tn) % threads != 0) {
    const int64_t tile_rows = ceil_div(a_panels, tm) * MR, tile_cols = ceil_div(b_panels, tn) * NR;
    if (tile_rows >= tile_cols && a_panels >= 2 * tm) ++tm;
    else if (b_panels >= 2 * tn) ++tn;
    else if (a_panels >= 2 * tm) ++tm;
    else break;
  }

  // Note [gemm packing B per panel]: with one row of tiles (tm = 1: M within one L2 block, the batch-sized
  // products of the VAE and the GMVAE), each B panel meets the A block once per K block, so it is packed right
  // before that use into an L1-resident buffer (multiply_tile) instead of up front: packed up front, B (a 512 x
  // 784 weight: 1.6 MB) went out to L3 and came back for the kernel. The panel holds the same values either way.
  const bool packs_b_up_front = tm > 1;
  // Bp starts on a 64-byte boundary too: its kernel loads are aligned (Ap is only ever broadcast from).
  const int64_t a_size = packs_a ? ceil_div(b.m_pad * b.K, 64) * 64 : 0;
  PackScratch<T> scratch(a_size + (packs_b_up_front ? b.n_pad * b.K : 0));
  b.Ap = packs_a ? scratch.data() : nullptr;
  b.Bp = packs_b_up_front ? scratch.data() + a_size : nullptr;
  const int64_t a_groups = packs_a ? ceil_div(a_panels, kPackGroup) : 0;
  const int64_t b_groups = packs_b_up_front ? ceil_div(b_panels, kPackGroup) : 0;
  parallel_for(
      a_groups + b_groups, 1,
      [&](int64_t begin, int64_t end) {
        for (int64_t g = begin; g < end; ++g) pack_group(b, a_groups, g);
      },
      /*cost_per_item=*/b.K * kPackGroup * NR);
  parallel_for(
      tm * tn, 1,
      [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const int64_t ti = t / tn, tj = t % tn;
          multiply_tile(b, ti * a_panels / tm, (ti + 1) * a_panels / tm, tj * b_panels / tn,
                        (tj + 1) * b_panels / tn);
        }
      },
      /*cost_per_item=*/ceil_div(b.m * b.n, tm * tn) * b.K);
}

}  // namespace

template <class T>
void gemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc, const T* bias) {
  check_args(trans_a, trans_b, M, N, K, lda, ldb, ldc);
  if (bias && beta != T(0)) fail<ValueError>("gemm: a bias needs beta = 0, got beta = ", beta);
  if (M == 0 || N == 0) return;
  // As in the reference BLAS, alpha = 0 or K = 0 leaves beta * C without touching A and B.
  if (K == 0 || alpha == T(0)) {
    scale_c(M, N, beta, C, ldc);
    if (bias)
      for (int64_t i = 0; i < M; ++i) std::copy(bias, bias + N, C + i * ldc);
    return;
  }

  constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR;
  // Super-blocks: the packed copies of A (rows x K) and B (K x columns) each get half the budget.
  const int64_t budget_values = kPackBudget / int64_t{sizeof(T)} / 2;
  const int64_t rows = std::max(kMC<T>, budget_values / K / kMC<T> * kMC<T>);
  const int64_t cols = std::max(NR, budget_values / K / NR * NR);
  // K blocks of equal length (784 = 3 x 262, not 2 x 384 + 16): a short last block would pay a full pass over C
  // for little arithmetic. The split depends on K alone, never on the thread count.
  const int64_t kc = ceil_div(K, ceil_div(K, kKC<T>));
  Block<T> b{trans_a == Trans::yes, trans_b == Trans::yes, A, lda, B, ldb, C, ldc, 0, 0, 0, 0, K, kc, alpha, beta,
             bias, nullptr, nullptr, 0, 0};
  for (b.i0 = 0; b.i0 < M; b.i0 += rows) {
    b.m = std::min(rows, M - b.i0);
    b.m_pad = ceil_div(b.m, MR) * MR;
    for (b.j0 = 0; b.j0 < N; b.j0 += cols) {
      b.n = std::min(cols, N - b.j0);
      b.n_pad = ceil_div(b.n, NR) * NR;
      multiply_block(b);
    }
  }
}

template void gemm<float>(Trans, Trans, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t, const float*);
template void gemm<double>(Trans, Trans, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t, const double*);

}  // namespace tapegrad::ops
