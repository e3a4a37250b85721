// Internal pieces shared by the convolution kernels of ops/conv.cpp (im2col + GEMM), ops/conv_implicit.cpp and
// ops/conv_phases.cpp (the GEMM micro-kernel reading the images directly): per-thread scratch, the parallel
// loop over image groups, and the zero-padded planes with their offset tables. Not part of the public API
// (ops/conv.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include <tbb/task_arena.h>
#include <xsimd/xsimd.hpp>

#include "ops/conv.h"
#include "ops/gemm_kernel.h"
#include "ops/parallel.h"

namespace tapegrad::ops::conv_detail {

constexpr int64_t kMaxGroup = 16;                  // images per group, at most (Note [image groups])
constexpr int64_t kImplicitGroupBytes = 256 * 1024;  // padded images of one group in the implicit kernels: half of L2

// Per-thread scratch that grows to the high-water size and is kept: after the first step no conv call
// allocates (the tape's arena is rewound each step, but this memory is needed only inside one kernel call).
// Slots: 0 a group's col matrix (im2col) or padded images (implicit kernels); 1 its (F, G*OH*OW) staging matrix
// or, in the implicit weight gradient, its packed dy; 2 the weight gradients' per-group partial sums and 4 the
// implicit kernels' packed weights (both on the calling thread only); 3 a group's zero-padded planes of one
// channel (im2col_group).
template <class T>
T* scratch(int64_t n, int slot) {
  thread_local std::vector<T> buffers[5];
  std::vector<T>& buffer = buffers[slot];
  if (buffer.size() < static_cast<size_t>(n)) buffer.resize(static_cast<size_t>(n));
  return buffer.data();
}

// Note [conv scratch and nested parallelism]: groups run in parallel and each group's GEMM is itself
// parallel. A TBB thread that waits for its inner GEMM may meanwhile pick up another task of the *outer*
// loop, which would reuse (overwrite) the thread's scratch still in use below it on the stack. Running
// each group's work inside `this_task_arena::isolate` forbids exactly that: while waiting, the thread only
// helps with tasks spawned inside the isolated region (oneTBB Developer Guide, "Work Isolation", describes this
// very thread-local hazard). The outer loop is isolated too, so that a conv called from inside someone else's
// parallel loop is equally protected.
// Calls body(first_image, image_count, group_index) for each group of G images.
template <class Body>
void for_each_group(int64_t B, int64_t G, int64_t cost_per_image, Body&& body) {
  const int64_t groups = (B + G - 1) / G;
  tbb::this_task_arena::isolate([&] {
    parallel_for(groups, 1, [&](int64_t begin, int64_t end) {
      tbb::this_task_arena::isolate([&] {
        for (int64_t i = begin; i < end; ++i) body(i * G, std::min(G, B - i * G), i);
      });
    }, G * cost_per_image);
  });
}

inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }


// Note [im2col by offset table]: written directly from the equation, im2col is a loop nest over
// (c, kh, kw, oh, ow) with bounds checks for the padding and, for stride 2, a gather of 7 values per inner
// loop on the VAE's 7x7 outputs; profiled, that took 35% of the 32->64 layer's forward and weight-gradient
// time, and col2im as much of its input gradient, against ~55% for the GEMM itself. Two changes make it a flat
// gather: (1) each image is first copied into a zero-padded plane per channel (Hp x Wp = (H + 2 ph) x
// (W + 2 pw)), so no index can fall outside it and there is no bounds check left; (2) the position of patch
// element (kh, kw) of output pixel (oh, ow) in such a plane,
//   offset[kh, kw][oh, ow] = (oh * sh + kh * dh) * Wp + ow * sw + kw * dw,
// does not depend on the channel or the image, so it is tabulated once per call (KH*KW*OH*OW entries, 3 KiB
// for the VAE's layers: it stays in L1). im2col row (c, kh, kw) is then col[n] = plane_c[offset[kh, kw][n]]
// for n < OH*OW, col2im keeps its bounds (see there). Every padded index is in range
// because the output size formula (conv.h) gives (OH - 1) sh + (KH - 1) dh <= H + 2 ph - 1.
struct PatchTable {
  int64_t Hp, Wp;          // padded plane
  const int32_t* offsets;  // (KH*KW, OH*OW)
};

inline PatchTable patch_table(const Conv2dGeometry& g) {
  thread_local std::vector<int32_t> offsets;  // grows to the high-water size and is kept (no steady allocation)
  const int64_t Hp = g.H + 2 * g.padding[0], Wp = g.W + 2 * g.padding[1], N = g.OH * g.OW;
  offsets.resize(static_cast<size_t>(std::max<int64_t>(int64_t(offsets.size()), g.KH * g.KW * N)));
  for (int64_t kh = 0; kh < g.KH; ++kh)
    for (int64_t kw = 0; kw < g.KW; ++kw)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow)
          offsets[static_cast<size_t>((kh * g.KW + kw) * N + oh * g.OW + ow)] = static_cast<int32_t>(
              (oh * g.stride[0] + kh * g.dilation[0]) * Wp + ow * g.stride[1] + kw * g.dilation[1]);
  return {Hp, Wp, offsets.data()};
}

// dst[0 .. n) = src[0 .. n) by whole vectors, the last one overlapping the one before it: the planes' rows are
// short (14 values on the VAE's 14x14), and std::copy there became a libc call per row that cost as much as
// the copying (pad_plane was a quarter of the 32->1 transposed conv's forward).
template <class T>
inline void copy_row(const T* src, int64_t n, T* dst) {
  using Batch = xsimd::batch<T>;
  constexpr int64_t W = static_cast<int64_t>(Batch::size);
  if (n < W) {
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
    return;
  }
  for (int64_t i = 0; i + W <= n; i += W) Batch::load_unaligned(src + i).store_unaligned(dst + i);
  if (n % W != 0) Batch::load_unaligned(src + n - W).store_unaligned(dst + n - W);
}

// plane (Hp, Wp) <- src (H, W) placed at (top, left), zeros around it. Where the side margins are at most a
// vector wide, each row gets a zero vector at either end and then its values over them: no call per margin.
template <class T>
void pad_plane(const T* src, int64_t H, int64_t W, int64_t top, int64_t left, int64_t Hp, int64_t Wp, T* plane) {
  using Batch = xsimd::batch<T>;
  constexpr int64_t V = static_cast<int64_t>(Batch::size);
  const int64_t right = Wp - left - W;
  const bool vector_margins = W >= V && left <= V && right <= V;
  std::fill(plane, plane + top * Wp, T(0));
  for (int64_t h = 0; h < H; ++h) {
    T* row = plane + (top + h) * Wp;
    if (vector_margins) {
      Batch(T(0)).store_unaligned(row);
      Batch(T(0)).store_unaligned(row + Wp - V);
    } else {
      std::fill(row, row + left, T(0));
      std::fill(row + left + W, row + Wp, T(0));
    }
    copy_row(src + h * W, W, row + left);
  }
  std::fill(plane + (top + H) * Wp, plane + Hp * Wp, T(0));
}

// patch_offsets[c * KH*KW + kh * KW + kw] for PatchA, in the per-image layout of `pad_image_planes`.
inline const int32_t* patch_offsets(const Conv2dGeometry& g, const PatchTable& table) {
  thread_local std::vector<int32_t> offsets;
  const int64_t patch = g.KH * g.KW, N = g.OH * g.OW, plane_size = table.Hp * table.Wp;
  offsets.resize(static_cast<size_t>(std::max<int64_t>(int64_t(offsets.size()), g.C * patch)));
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t k = 0; k < patch; ++k)  // table.offsets[k * N + 0] is patch element k seen from pixel (0, 0)
      offsets[static_cast<size_t>(c * patch + k)] = static_cast<int32_t>(c * plane_size + table.offsets[k * N]);
  return offsets.data();
}

// Images of (C, Hp*Wp) zero-padded planes: the G images starting at x.
template <class T>
void pad_images(const Conv2dGeometry& g, const PatchTable& table, const T* x, int64_t G, T* planes) {
  const int64_t plane_size = table.Hp * table.Wp;
  for (int64_t i = 0; i < G * g.C; ++i)
    pad_plane(x + i * g.H * g.W, g.H, g.W, g.padding[0], g.padding[1], table.Hp, table.Wp, planes + i * plane_size);
}

// The A operand of the GEMM micro-kernel read from zero-padded planes (Note [implicit im2col forward],
// ops/conv_implicit.cpp): row i of the panel is a pointer into its image's planes at its output pixel, and
// column k one offset from there, shared by all rows.
template <class T>
struct PatchA {
  const T* row[gemm_detail::Tile<T>::MR];  // the padded planes of row i's image, moved to its output pixel
  const int32_t* patch_offset;             // for the current k = (c, kh, kw): c * Hp*Wp + kh*dh*Wp + kw*dw
  T at(int64_t i) const { return row[i][*patch_offset]; }
  void next() { ++patch_offset; }
};

// The kernels of ops/conv_implicit.cpp and ops/conv_phases.cpp (T = float or double); conv.cpp chooses between
// them and im2col.
template <class T>
void conv2d_forward_implicit(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, bool accumulate, T* y);
template <class T>
void conv2d_backward_input_implicit(const Conv2dGeometry& g, const T* dy, const T* w, T* dx);
template <class T>
void conv2d_backward_input_few_channels(const Conv2dGeometry& g, const T* dy, const T* w, T* dx);
template <class T>
void conv2d_backward_weight_implicit(const Conv2dGeometry& g, const T* dy, const T* x, T* dw);

}  // namespace tapegrad::ops::conv_detail
