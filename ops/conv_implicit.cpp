// Convolution kernels that run the GEMM micro-kernel (ops/gemm_kernel.h) on the images themselves, with no
// im2col matrix: the forward and the weight gradient (the input gradient, by stride phases, is in
// ops/conv_phases.cpp). ops/conv.cpp decides when they are used (Note [choosing the forward] there); ops/conv.h
// has the shapes and equations.
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "ops/conv_detail.h"
#include "ops/gemm_kernel.h"

namespace tapegrad::ops::conv_detail {

// Note [implicit im2col forward]: the forward product y_b^T (OH*OW, F) = col_b^T (OH*OW, C*KH*KW) * w^T is a
// GEMM whose A operand never needs to be formed: row (image i, pixel n) of col^T, at column k = (c, kh, kw),
// is plane_{i,c}[position[n] + patch_offset[k]] in the zero-padded planes (Note [im2col by offset table]).
// So the GEMM micro-kernel (ops/gemm_kernel.h) runs with an A panel that broadcasts straight from the padded
// planes (PatchA, ops/conv_detail.h: MR row pointers, one shared offset per k) against packed panels of w^T, one MR x NR
// tile of y^T per call over the whole of K. That removes what im2col + GEMM spent besides the arithmetic: the
// col matrix written and read back, and its packing (together about 30% of the 32->64 layer's forward, the
// im2col copy alone 20%). Each output element is one FMA chain over k in order, plus the bias: the same bits
// for any thread count. The output is (pixels x channels), so it is transposed into y.
template <class T>
void conv2d_forward_implicit(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, bool accumulate, T* y) {
  using gemm_detail::Tile;
  constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR;
  const int64_t K = g.col_rows(), N = g.col_cols(), f_panels = (g.F + NR - 1) / NR;
  const PatchTable table = patch_table(g);
  const int32_t* offsets_k = patch_offsets(g, table);
  const int64_t image_size = g.C * table.Hp * table.Wp;
  const int64_t G = std::clamp<int64_t>(kImplicitGroupBytes / (image_size * int64_t{sizeof(T)}), 1, kMaxGroup);
  // w^T packed once per call into panels of K x NR (filters past F zero), shared read-only by every thread.
  T* packed_w = scratch<T>(f_panels * K * NR + 64 / sizeof(T), 4);
  packed_w += (64 - reinterpret_cast<uintptr_t>(packed_w) % 64) % 64 / sizeof(T);  // aligned loads in the kernel
  for (int64_t p = 0; p < f_panels; ++p)
    gemm_detail::pack_b(/*trans_b=*/true, w, K, 0, K, p * NR, std::min(NR, g.F - p * NR), packed_w + p * K * NR);
  for_each_group(g.B, G, g.F * K * N, [&](int64_t first, int64_t count, int64_t) {
    T* planes = scratch<T>(count * image_size, 0);
    pad_images(g, table, x + first * g.C * g.H * g.W, count, planes);
    // The micro-kernel writes whole tiles into a (pixels, F) staging matrix (rows padded to MR, columns to NR);
    // one pass then transposes it into y with the bias: cheaper than scattering each 6 x 16 tile into y.
    const int64_t rows = count * N, rows_padded = (rows + MR - 1) / MR * MR, ld = f_panels * NR;
    T* staged = scratch<T>(rows_padded * ld, 1);
    for (int64_t p = 0; p < f_panels; ++p)
      for (int64_t r0 = 0; r0 < rows; r0 += MR) {
        PatchA<T> a{{}, offsets_k};
        for (int64_t i = 0; i < MR; ++i) {  // rows past the end repeat the last one; their results are never read
          const int64_t r = std::min(r0 + i, rows - 1);
          a.row[i] = planes + (r / N) * image_size + table.offsets[r % N];
        }
        gemm_detail::micro_kernel<T, 2>(K, a, packed_w + p * K * NR, staged + r0 * ld + p * NR, ld, T(1), T(0),
                                        /*first=*/true);
      }
    for (int64_t i = 0; i < count; ++i)
      for (int64_t f = 0; f < g.F; ++f) {
        T* out = y + ((first + i) * g.F + f) * N;
        const T* column = staged + i * N * ld + f;
        const T b = bias != nullptr ? bias[f] : T(0);
        if (accumulate) for (int64_t n = 0; n < N; ++n) out[n] += column[n * ld] + b;
        else for (int64_t n = 0; n < N; ++n) out[n] = column[n * ld] + b;
      }
  });
}

// Note [implicit weight gradient]: dw^T (C*KH*KW, F) = sum over a group's pixels p of col(x)[:, p] dy[:, p]^T,
// a GEMM with the pixels as its reduction. Its A operand, col(x), is again read from the padded images
// (PixelA: MR patch rows, each a fixed offset from the current pixel's position), and dy is packed per group
// into panels of NR filters, as cheap as the staging copy it replaces. No col matrix is formed, and the B^T
// transposes of the im2col path (the col matrix was B^T there) disappear. Each group's sum is one FMA chain
// per element and the groups meet in order (Note [conv weight gradient order]).
template <class T>
struct PixelA {
  int32_t patch_offset[gemm_detail::Tile<T>::MR];  // rows of A: patch elements k (patch_offsets)
  const T* const* pixel;                           // the current pixel's position in its image's padded planes
  T at(int64_t i) const { return (*pixel)[patch_offset[i]]; }
  void next() { ++pixel; }
};

template <class T>
void conv2d_backward_weight_implicit(const Conv2dGeometry& g, const T* dy, const T* x, T* dw) {
  using gemm_detail::Tile;
  constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR;
  const int64_t K = g.col_rows(), N = g.col_cols(), f_panels = (g.F + NR - 1) / NR, weight_size = g.F * K;
  const PatchTable table = patch_table(g);
  const int32_t* offsets_k = patch_offsets(g, table);
  const int64_t image_size = g.C * table.Hp * table.Wp;
  const int64_t G = std::clamp<int64_t>(kImplicitGroupBytes / (image_size * int64_t{sizeof(T)}), 1, kMaxGroup);
  const int64_t groups = (g.B + G - 1) / G;
  T* partials = scratch<T>(groups * weight_size, 2);
  for_each_group(g.B, G, g.F * K * N, [&](int64_t first, int64_t count, int64_t group) {
    const int64_t pixels = count * N;
    T* planes = scratch<T>(count * image_size, 0);
    pad_images(g, table, x + first * g.C * g.H * g.W, count, planes);
    T* packed_dy = scratch<T>(f_panels * pixels * NR + 64 / sizeof(T), 1);  // panel p: pixels x NR filters
    packed_dy += (64 - reinterpret_cast<uintptr_t>(packed_dy) % 64) % 64 / sizeof(T);
    thread_local std::vector<const T*> pixel_base;  // this worker's own: used inside this group only
    pixel_base.resize(std::max(pixel_base.size(), static_cast<size_t>(pixels)));
    for (int64_t p = 0; p < pixels; ++p) pixel_base[p] = planes + (p / N) * image_size + table.offsets[p % N];
    for (int64_t f = 0; f < f_panels * NR; ++f) {  // each dy row read once, written down its panel column
      T* column = packed_dy + (f / NR) * pixels * NR + f % NR;
      for (int64_t i = 0; i < count; ++i)
        for (int64_t n = 0; n < N; ++n)
          column[(i * N + n) * NR] = f < g.F ? dy[((first + i) * g.F + f) * N + n] : T(0);
    }
    T* partial = partials + group * weight_size;
    alignas(64) T tile[MR * NR];
    for (int64_t k0 = 0; k0 < K; k0 += MR) {
      PixelA<T> a{{}, pixel_base.data()};
      for (int64_t i = 0; i < MR; ++i) a.patch_offset[i] = offsets_k[std::min(k0 + i, K - 1)];  // extra rows dropped
      for (int64_t panel = 0; panel < f_panels; ++panel) {
        a.pixel = pixel_base.data();
        gemm_detail::micro_kernel<T, 2>(pixels, a, packed_dy + panel * pixels * NR, tile, NR, T(1), T(0), true);
        const int64_t f0 = panel * NR;
        for (int64_t i = 0; i < std::min(MR, K - k0); ++i)
          for (int64_t j = 0; j < std::min(NR, g.F - f0); ++j) partial[(f0 + j) * K + k0 + i] = tile[i * NR + j];
      }
    }
  });
  for (int64_t group = 0; group < groups; ++group) {
    const T* partial = partials + group * weight_size;
    for (int64_t i = 0; i < weight_size; ++i) dw[i] += partial[i];
  }
}

#define TAPEGRAD_INSTANTIATE_IMPLICIT_CONV(T)                                                                 \
  template void conv2d_forward_implicit<T>(const Conv2dGeometry&, const T*, const T*, const T*, bool, T*);    \
  template void conv2d_backward_weight_implicit<T>(const Conv2dGeometry&, const T*, const T*, T*);
TAPEGRAD_INSTANTIATE_IMPLICIT_CONV(float)
TAPEGRAD_INSTANTIATE_IMPLICIT_CONV(double)
#undef TAPEGRAD_INSTANTIATE_IMPLICIT_CONV

}  // namespace tapegrad::ops::conv_detail
