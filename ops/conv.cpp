// Convolution kernels by im2col + GEMM, and a forward that runs the GEMM micro-kernel on the image directly
// (Note [implicit im2col forward]); see ops/conv.h for the shapes, equations and the adjoint Note.
//
// Note [why im2col]: unrolling every receptive field of an image into a column of a (C*KH*KW, OH*OW) matrix
// turns the convolution into one GEMM, y_b (F, OH*OW) = w (F, C*KH*KW) * col_b (Chellapilla, Puri & Simard
// 2006, "High performance convolutional neural networks for document processing"). All the arithmetic then
// runs in ops::gemm, the one kernel we tune; the same unrolling serves the weight gradient
// (dw += dy_b col_b^T) and, run backwards as col2im (a scatter-add), the input gradient (dx_b += col2im(w^T dy_b)).
// The price is memory: col_b holds KH*KW/(stride_h*stride_w) times the image, e.g. 512 x 49 values for the
// VAE's 32->64 k4 s2 layer on 14x14 inputs (100 KB in float). We never unroll the whole batch, only a small
// group of images at a time into per-thread scratch (Note [image groups]).
//
// Note [image groups]: one image's GEMM is small and badly shaped for a blocked GEMM: N = OH*OW = 49 columns
// for the VAE's 7x7 outputs, and the weight gradient's reduction length K is that same 49. So images are
// processed in groups of G (about kGroupColumns / (OH*OW), at most kMaxGroup): the group's col matrices sit
// side by side as one (C*KH*KW, G*OH*OW) matrix, and dy / y pass through a (F, G*OH*OW) staging matrix, so each
// GEMM has G times more columns (forward, input gradient) or a G times longer reduction (weight gradient). The
// staging copies cost F*OH*OW per image, against the GEMM's F*C*KH*KW*OH*OW. G depends on the geometry only,
// never on the thread count, which matters for Note [conv weight gradient order].
#include "ops/conv.h"

#include <algorithm>
#include <vector>

#include <tbb/task_arena.h>

#include "ops/gemm.h"
#include "ops/gemm_kernel.h"
#include "ops/parallel.h"

namespace tapegrad::ops {
namespace {

constexpr int64_t kGroupColumns = 512;
constexpr int64_t kMaxGroup = 16;

int64_t images_per_group(const Conv2dGeometry& g) {
  return std::clamp<int64_t>(kGroupColumns / std::max<int64_t>(g.OH * g.OW, 1), 1, kMaxGroup);
}

// Per-thread scratch that grows to the high-water size and is kept: after the first step no conv call
// allocates (the tape's arena is rewound each step, but this memory is needed only inside one kernel call).
// Slots: 0 the group's col matrix (or, in the implicit forward, its padded images), 1 its (F, G*OH*OW) staging
// matrix, 2 the weight gradient's per-group partial sums and 4 the implicit forward's packed weights (both used
// on the calling thread only), 3 a group's zero-padded planes of one channel (Note [im2col by offset table]).
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

int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

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

PatchTable patch_table(const Conv2dGeometry& g) {
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

// plane (Hp, Wp) <- src (H, W) placed at (top, left), zeros around it; every value is written exactly once.
template <class T>
void pad_plane(const T* src, int64_t H, int64_t W, int64_t top, int64_t left, int64_t Hp, int64_t Wp, T* plane) {
  std::fill(plane, plane + top * Wp, T(0));
  for (int64_t h = 0; h < H; ++h) {
    T* row = plane + (top + h) * Wp;
    std::fill(row, row + left, T(0));
    std::copy(src + h * W, src + (h + 1) * W, row + left);
    std::fill(row + left + W, row + Wp, T(0));
  }
  std::fill(plane + (top + H) * Wp, plane + Hp * Wp, T(0));
}

// Output positions o in [lo, hi) of [0, n_out) whose input index o*stride + offset lies inside [0, n_in).
struct Range {
  int64_t lo, hi;
};
Range valid_outputs(int64_t n_in, int64_t n_out, int64_t stride, int64_t offset) {
  const int64_t lo = std::clamp<int64_t>(ceil_div(-offset, stride), 0, n_out);
  const int64_t hi = std::clamp<int64_t>(floor_div(n_in - 1 - offset, stride) + 1, lo, n_out);
  return {lo, hi};
}

// col_group: (C*KH*KW, G*OH*OW) <- the G images starting at x (Note [image groups]); row (c, kh, kw), column
// (i, oh, ow) holds x[i, c, oh*s-p+kh*d, ow*s-p+kw*d], or 0 in the padding (Note [im2col by offset table]).
// Channel by channel: the G padded planes of channel c (a few KiB) stay in L1 while each row of col_group is
// written as one contiguous run of G*OH*OW values.
template <class T>
void im2col_group(const Conv2dGeometry& g, const PatchTable& table, const T* x, int64_t G, T* col_group) {
  const int64_t N = g.OH * g.OW, patch = g.KH * g.KW, plane_size = table.Hp * table.Wp, ld = G * N;
  T* planes = scratch<T>(G * plane_size, 3);
  for (int64_t c = 0; c < g.C; ++c) {
    for (int64_t i = 0; i < G; ++i)
      pad_plane(x + (i * g.C + c) * g.H * g.W, g.H, g.W, g.padding[0], g.padding[1], table.Hp, table.Wp,
                planes + i * plane_size);
    for (int64_t k = 0; k < patch; ++k) {
      const int32_t* offsets = table.offsets + k * N;
      T* out = col_group + (c * patch + k) * ld;
      for (int64_t i = 0; i < G; ++i, out += N) {
        const T* plane = planes + i * plane_size;
        for (int64_t n = 0; n < N; ++n) out[n] = plane[offsets[n]];
      }
    }
  }
}

// The transpose of im2col_group: dx (G, C, H, W) += scatter of col_group (C*KH*KW, G*OH*OW). Each dx element
// receives its contributions in one fixed order, (c, kh, kw, oh, ow), whatever the threads. Unlike im2col this
// keeps the bounds and writes into dx directly: the offset-table version (scatter into a zeroed padded plane,
// then add its interior) measured ~5% slower on the 32->64 layer's input gradient (1 thread, batch 128:
// 19.6 / 21.1 ms against 18.3 / 18.6 ms), the extra passes costing more than the index arithmetic saved.
// Channel outer, images inner, as im2col_group: each row of col_group is read as one contiguous run.
template <class T>
void col2im_group_add(const Conv2dGeometry& g, const T* col_group, int64_t G, T* dx) {
  const auto [sh, sw] = g.stride;
  const int64_t N = g.OH * g.OW, ld = G * N;
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const T* row = col_group + ((c * g.KH + kh) * g.KW + kw) * ld;
        const int64_t h_offset = kh * g.dilation[0] - g.padding[0], w_offset = kw * g.dilation[1] - g.padding[1];
        const Range rows = valid_outputs(g.H, g.OH, sh, h_offset), cols = valid_outputs(g.W, g.OW, sw, w_offset);
        for (int64_t i = 0; i < G; ++i) {
          T* dx_plane = dx + (i * g.C + c) * g.H * g.W;
          for (int64_t oh = rows.lo; oh < rows.hi; ++oh) {
            T* out = dx_plane + (oh * sh + h_offset) * g.W;
            const T* in = row + i * N + oh * g.OW;
            for (int64_t ow = cols.lo; ow < cols.hi; ++ow) out[ow * sw + w_offset] += in[ow];
          }
        }
      }
}

// staged: (F, G*N) <- images (G, F, N) starting at y, i.e. staged[f, i*N + n] = y[i, f, n]
template <class T>
void stage_group(int64_t F, int64_t N, int64_t G, const T* y, T* staged) {
  for (int64_t i = 0; i < G; ++i)
    for (int64_t f = 0; f < F; ++f) std::copy(y + (i * F + f) * N, y + (i * F + f + 1) * N, staged + f * G * N + i * N);
}

// dbias[channel] += sum over b, then over the plane: each channel summed by one thread in one fixed order.
template <class T>
void add_channel_sums(int64_t B, int64_t channels, int64_t plane, const T* dy, T* dbias) {
  parallel_for(channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ch = begin; ch < end; ++ch) {
      T total = 0;
      for (int64_t b = 0; b < B; ++b) {
        const T* row = dy + (b * channels + ch) * plane;
        T sum = 0;  // per-image partial sums keep the float error at ~sqrt(plane) + sqrt(B) terms, not B*plane
        for (int64_t j = 0; j < plane; ++j) sum += row[j];
        total += sum;
      }
      dbias[ch] += total;
    }
  }, B * plane);
}

// Note [implicit im2col forward]: the forward product y_b^T (OH*OW, F) = col_b^T (OH*OW, C*KH*KW) * w^T is a
// GEMM whose A operand never needs to be formed: row (image i, pixel n) of col^T, at column k = (c, kh, kw),
// is plane_{i,c}[position[n] + patch_offset[k]] in the zero-padded planes (Note [im2col by offset table]).
// So the GEMM micro-kernel (ops/gemm_kernel.h) runs with an A panel that broadcasts straight from the padded
// planes (PatchA below: MR row pointers, one shared offset per k) against packed panels of w^T, one MR x NR
// tile of y^T per call over the whole of K. That removes what im2col + GEMM spent besides the arithmetic: the
// col matrix written and read back, and its packing (together about 30% of the 32->64 layer's forward, the
// im2col copy alone 20%). Each output element is one FMA chain over k in order, plus the bias: the same bits
// for any thread count. The output tile is (pixels x channels), so it is stored transposed into y.
template <class T>
struct PatchA {
  const T* row[gemm_detail::Tile<T>::MR];  // the padded planes of row i's image, moved to its output pixel
  const int32_t* patch_offset;             // for the current k = (c, kh, kw): c * Hp*Wp + kh*dh*Wp + kw*dw
  T at(int64_t i) const { return row[i][*patch_offset]; }
  void next() { ++patch_offset; }
};

// patch_offsets[c * KH*KW + kh * KW + kw] for PatchA, in the per-image layout of `pad_image_planes`.
const int32_t* patch_offsets(const Conv2dGeometry& g, const PatchTable& table) {
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

constexpr int64_t kDirectGroupBytes = 256 * 1024;  // padded planes of one image group: half of L2

template <class T>
void conv2d_forward_implicit(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, bool accumulate, T* y) {
  using gemm_detail::Tile;
  constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR;
  const int64_t K = g.col_rows(), N = g.col_cols(), f_panels = (g.F + NR - 1) / NR;
  const PatchTable table = patch_table(g);
  const int32_t* offsets_k = patch_offsets(g, table);
  const int64_t image_size = g.C * table.Hp * table.Wp;
  const int64_t G = std::clamp<int64_t>(kDirectGroupBytes / (image_size * int64_t{sizeof(T)}), 1, kMaxGroup);
  // w^T packed once per call into panels of K x NR (filters past F zero), shared read-only by every thread.
  T* packed_w = scratch<T>(f_panels * K * NR + 64 / sizeof(T), 4);
  packed_w += (64 - reinterpret_cast<uintptr_t>(packed_w) % 64) % 64 / sizeof(T);  // aligned loads in the kernel
  for (int64_t p = 0; p < f_panels; ++p)
    gemm_detail::pack_b(/*trans_b=*/true, w, K, 0, K, p * NR, std::min(NR, g.F - p * NR), packed_w + p * K * NR);
  for_each_group(g.B, G, g.F * K * N, [&](int64_t first, int64_t count, int64_t) {
    T* planes = scratch<T>(count * image_size, 0);
    pad_images(g, table, x + first * g.C * g.H * g.W, count, planes);
    const int64_t rows = count * N;
    alignas(64) T tile[MR * NR];
    for (int64_t p = 0; p < f_panels; ++p) {
      const int64_t f0 = p * NR, nf = std::min(NR, g.F - f0);
      for (int64_t r0 = 0; r0 < rows; r0 += MR) {
        PatchA<T> a{{}, offsets_k};
        for (int64_t i = 0; i < MR; ++i) {  // rows past the end repeat the last one; their results are dropped
          const int64_t r = std::min(r0 + i, rows - 1);
          a.row[i] = planes + (r / N) * image_size + table.offsets[r % N];
        }
        gemm_detail::micro_kernel<T, 2>(K, a, packed_w + p * K * NR, tile, NR, T(1), T(0), /*first=*/true);
        for (int64_t i = 0; i < std::min(MR, rows - r0); ++i) {  // tile row = one output pixel: store transposed
          const int64_t image = first + (r0 + i) / N, n = (r0 + i) % N;
          T* out = y + (image * g.F + f0) * N + n;
          for (int64_t f = 0; f < nf; ++f) {
            const T value = tile[i * NR + f] + (bias != nullptr ? bias[f0 + f] : T(0));
            out[f * N] = accumulate ? out[f * N] + value : value;
          }
        }
      }
    }
  });
}

// Note [implicit input gradient]: dx = A_w^T dy (conv.h) gathers, for input pixel ih, the taps kh with
// ih + p - kh*d = s*oh. Split the input pixels by phase r = ih mod s (ih = r + s*t): the taps that reach phase r
// are the kh with (r + p - kh*d) divisible by s, each reading dy at oh = t + e(kh), e(kh) = (r + p - kh*d) / s,
// the same shift for every pixel of the phase. So each phase (r_h, r_w) of dx is an ordinary stride-1
// correlation of dy with a sub-kernel of the taps (the sub-pixel view of a transposed convolution: Shi et al.
// 2016, "Is the deconvolution layer the same as a convolutional layer?"), one GEMM
//   dx_phase^T (pixels, C) = dy_patches (pixels, F * taps) * w_phase (F * taps, C)
// whose A operand is read straight from zero-margined dy planes, as in Note [implicit im2col forward]. Against
// GEMM + col2im this drops the (C*KH*KW, pixels) matrix and its scatter-add, and each dx element receives one
// FMA chain and one +=, the same bits for any thread count. A phase without taps (KH < s) receives nothing.
struct Phase {
  int64_t r_h, r_w, pixels_h, pixels_w;  // dx pixels (r_h + s_h t_h, r_w + s_w t_w), t < pixels
  int64_t depth;                         // K of its GEMM: F * taps_h * taps_w
  int64_t weights, offsets;              // where its packed w_phase and its tap offsets start
};

template <class T>
void conv2d_backward_input_implicit(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  using gemm_detail::Tile;
  constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR;
  const auto [sh, sw] = g.stride;
  const int64_t c_panels = (g.C + NR - 1) / NR;
  // Margins of the dy planes so that every tap of every pixel reads inside them (zeros outside dy).
  auto shift = [](int64_t r, int64_t k, int64_t s, int64_t p, int64_t d) { return floor_div(r + p - k * d, s); };
  auto is_tap = [](int64_t r, int64_t k, int64_t s, int64_t p, int64_t d) { return (r + p - k * d) % s == 0; };
  int64_t top = 0, bottom = 0, left = 0, right = 0;
  for (int64_t r = 0; r < std::min(sh, g.H); ++r)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      if (is_tap(r, kh, sh, g.padding[0], g.dilation[0])) {
        const int64_t e = shift(r, kh, sh, g.padding[0], g.dilation[0]), last = (g.H - r + sh - 1) / sh - 1;
        top = std::max(top, -e);
        bottom = std::max(bottom, last + e - (g.OH - 1));
      }
  for (int64_t r = 0; r < std::min(sw, g.W); ++r)
    for (int64_t kw = 0; kw < g.KW; ++kw)
      if (is_tap(r, kw, sw, g.padding[1], g.dilation[1])) {
        const int64_t e = shift(r, kw, sw, g.padding[1], g.dilation[1]), last = (g.W - r + sw - 1) / sw - 1;
        left = std::max(left, -e);
        right = std::max(right, last + e - (g.OW - 1));
      }
  const int64_t Hq = top + g.OH + bottom, Wq = left + g.OW + right, plane_size = Hq * Wq;
  const int64_t image_size = g.F * plane_size;

  // Per phase: its taps' offsets in an image's dy planes (f outer, then kh, kw) and w_phase packed in panels
  // of depth x NR channels (channels past C zero). Built on the calling thread, read by all.
  thread_local std::vector<Phase> phases;
  thread_local std::vector<int32_t> tap_offsets;
  T* packed_w = scratch<T>(g.F * g.KH * g.KW * c_panels * NR + 64 / sizeof(T), 4);
  packed_w += (64 - reinterpret_cast<uintptr_t>(packed_w) % 64) % 64 / sizeof(T);
  phases.clear();
  tap_offsets.resize(std::max(tap_offsets.size(), static_cast<size_t>(g.F * g.KH * g.KW)));
  int64_t weights_used = 0, offsets_used = 0;
  for (int64_t r_h = 0; r_h < std::min(sh, g.H); ++r_h)
    for (int64_t r_w = 0; r_w < std::min(sw, g.W); ++r_w) {
      Phase phase{r_h, r_w, (g.H - r_h + sh - 1) / sh, (g.W - r_w + sw - 1) / sw, 0, weights_used, offsets_used};
      for (int64_t f = 0; f < g.F; ++f)
        for (int64_t kh = 0; kh < g.KH; ++kh)
          for (int64_t kw = 0; kw < g.KW; ++kw) {
            if (!is_tap(r_h, kh, sh, g.padding[0], g.dilation[0]) || !is_tap(r_w, kw, sw, g.padding[1], g.dilation[1]))
              continue;
            const int64_t e_h = shift(r_h, kh, sh, g.padding[0], g.dilation[0]);
            const int64_t e_w = shift(r_w, kw, sw, g.padding[1], g.dilation[1]);
            tap_offsets[offsets_used + phase.depth] = static_cast<int32_t>(f * plane_size + e_h * Wq + e_w);
            ++phase.depth;
          }
      if (phase.depth == 0) continue;
      // Now that depth is known: panel p of w_phase is depth x NR values at weights + p * depth * NR.
      int64_t k = 0;
      for (int64_t f = 0; f < g.F; ++f)
        for (int64_t kh = 0; kh < g.KH; ++kh)
          for (int64_t kw = 0; kw < g.KW; ++kw) {
            if (!is_tap(r_h, kh, sh, g.padding[0], g.dilation[0]) || !is_tap(r_w, kw, sw, g.padding[1], g.dilation[1]))
              continue;
            for (int64_t p = 0; p < c_panels; ++p)
              for (int64_t j = 0; j < NR; ++j) {
                const int64_t c = p * NR + j;
                packed_w[weights_used + (p * phase.depth + k) * NR + j] =
                    c < g.C ? w[((f * g.C + c) * g.KH + kh) * g.KW + kw] : T(0);
              }
            ++k;
          }
      weights_used += phase.depth * c_panels * NR;
      offsets_used += phase.depth;
      phases.push_back(phase);
    }

  const int64_t G = std::clamp<int64_t>(kDirectGroupBytes / (image_size * int64_t{sizeof(T)}), 1, kMaxGroup);
  // Named here, not inside the loop body: there a thread_local name would mean the worker thread's own copy.
  const std::vector<Phase>& phase_list = phases;
  const int32_t* phase_offsets = tap_offsets.data();
  for_each_group(g.B, G, g.F * g.col_rows() * g.col_cols(), [&](int64_t first, int64_t count, int64_t) {
    T* planes = scratch<T>(count * image_size, 0);
    for (int64_t i = 0; i < count * g.F; ++i)
      pad_plane(dy + (first * g.F + i) * g.OH * g.OW, g.OH, g.OW, top, left, Hq, Wq, planes + i * plane_size);
    alignas(64) T tile[MR * NR];
    for (const Phase& phase : phase_list) {
      const int64_t pixels = phase.pixels_h * phase.pixels_w, rows = count * pixels;
      for (int64_t p = 0; p < c_panels; ++p) {
        const int64_t c0 = p * NR, nc = std::min(NR, g.C - c0);
        for (int64_t r0 = 0; r0 < rows; r0 += MR) {
          PatchA<T> a{{}, phase_offsets + phase.offsets};
          for (int64_t i = 0; i < MR; ++i) {  // rows past the end repeat the last one; their results are dropped
            const int64_t r = std::min(r0 + i, rows - 1), t = r % pixels;
            a.row[i] = planes + (r / pixels) * image_size + (t / phase.pixels_w + top) * Wq + t % phase.pixels_w + left;
          }
          gemm_detail::micro_kernel<T, 2>(phase.depth, a, packed_w + phase.weights + p * phase.depth * NR, tile, NR,
                                          T(1), T(0), /*first=*/true);
          for (int64_t i = 0; i < std::min(MR, rows - r0); ++i) {
            const int64_t image = first + (r0 + i) / pixels, t = (r0 + i) % pixels;
            const int64_t ih = phase.r_h + sh * (t / phase.pixels_w), iw = phase.r_w + sw * (t % phase.pixels_w);
            T* out = dx + ((image * g.C + c0) * g.H + ih) * g.W + iw;
            for (int64_t c = 0; c < nc; ++c) out[c * g.H * g.W] += tile[i * NR + c];
          }
        }
      }
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
  const int64_t G = std::clamp<int64_t>(kDirectGroupBytes / (image_size * int64_t{sizeof(T)}), 1, kMaxGroup);
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

// y = w * col(x) (+ bias), or y += w * col(x) when `accumulate` (the transpose's input gradient), with col
// formed explicitly: the better choice for short patches (below).
template <class T>
void conv2d_forward_im2col(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, bool accumulate, T* y) {
  const int64_t K = g.col_rows(), N = g.col_cols(), G = images_per_group(g);
  const PatchTable table = patch_table(g);
  for_each_group(g.B, G, g.F * K * N, [&](int64_t first, int64_t count, int64_t) {
    T* col = scratch<T>(K * count * N, 0);
    T* staged = scratch<T>(g.F * count * N, 1);
    im2col_group(g, table, x + first * g.C * g.H * g.W, count, col);
    gemm<T>(Trans::no, Trans::no, g.F, count * N, K, T(1), w, K, col, count * N, T(0), staged, count * N);
    for (int64_t i = 0; i < count; ++i)  // unstage into y, adding the bias on the way
      for (int64_t f = 0; f < g.F; ++f) {
        const T* s = staged + f * count * N + i * N;
        T* out = y + ((first + i) * g.F + f) * N;
        const T b = bias != nullptr ? bias[f] : T(0);
        if (accumulate) for (int64_t n = 0; n < N; ++n) out[n] += s[n] + b;
        else for (int64_t n = 0; n < N; ++n) out[n] = s[n] + b;
      }
  });
}

// Note [choosing the forward]: with a short patch (K = C*KH*KW) each micro-kernel call of the implicit path does
// little arithmetic per transposed store, and im2col + GEMM wins; from K = 64 on the implicit path wins. Measured
// at 1 thread, batch 128, 4x4 kernels, stride 2, 14x14 -> 7x7, F = 32 (implicit / im2col, ms): K = 32: 0.87 /
// 0.83, K = 64: 1.20 / 1.53, K = 128: 1.79 / 2.44, K = 256: 3.53 / 5.50; the VAE's 1->32 layer (K = 16)
// 2.16 / 1.62 and its 32->64 layer (K = 512) 12.2 / 14.8. The weight gradient follows the same rule: K = 64:
// 1.07 / 1.43, K = 128: 1.84 / 2.72, K = 512: 6.7 / 10.4 (F = 32 as above).
constexpr int64_t kImplicitMinPatch = 64;
constexpr int64_t kImplicitMinChannels = 8;

template <class T>
void conv2d_forward_impl(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, bool accumulate, T* y) {
  if (g.col_rows() >= kImplicitMinPatch) conv2d_forward_implicit(g, x, w, bias, accumulate, y);
  else conv2d_forward_im2col(g, x, w, bias, accumulate, y);
}

// Note [conv weight gradient order]: dw = sum over images of dy_b col_b^T is a reduction over the batch, so
// its rounding depends on where partial sums meet. Each group of G images (Note [image groups]; G fixed by
// the geometry, not the thread count) is reduced by one GEMM into its own buffer, groups run in parallel, and
// the group buffers are then added into dw serially in group order. The same bits come out for any thread
// count, at the cost of ceil(B / G) weight-sized buffers.

}  // namespace

int64_t conv2d_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation) {
  return floor_div(in + 2 * padding - dilation * (kernel - 1) - 1, stride) + 1;
}

int64_t conv_transpose2d_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation,
                                     int64_t output_padding) {
  return (in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1;
}

template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  conv2d_forward_impl(g, x, w, bias, /*accumulate=*/false, y);
}

// Note [choosing the input gradient]: the implicit path needs channels to fill its NR-wide panels and enough
// taps per phase; the VAE's 1->32 layer (C = 1) keeps GEMM + col2im.
template <class T>
void conv2d_backward_input(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  if (g.C >= kImplicitMinChannels && g.F * g.KH * g.KW >= kImplicitMinPatch * g.stride[0] * g.stride[1])
    return conv2d_backward_input_implicit(g, dy, w, dx);
  const int64_t K = g.col_rows(), N = g.col_cols(), G = images_per_group(g);
  for_each_group(g.B, G, g.F * K * N, [&](int64_t first, int64_t count, int64_t) {
    T* staged = scratch<T>(g.F * count * N, 1);
    T* dcol = scratch<T>(K * count * N, 0);
    stage_group(g.F, N, count, dy + first * g.F * N, staged);
    // (CKK, F) x (F, G*OH*OW)
    gemm<T>(Trans::yes, Trans::no, K, count * N, g.F, T(1), w, K, staged, count * N, T(0), dcol, count * N);
    col2im_group_add(g, dcol, count, dx + first * g.C * g.H * g.W);
  });
}

template <class T>
void conv2d_backward_weight(const Conv2dGeometry& g, const T* dy, const T* x, T* dw) {
  if (g.col_rows() >= kImplicitMinPatch) return conv2d_backward_weight_implicit(g, dy, x, dw);
  const int64_t K = g.col_rows(), N = g.col_cols(), G = images_per_group(g), weight_size = g.F * K;
  const int64_t groups = (g.B + G - 1) / G;
  T* partials = scratch<T>(groups * weight_size, 2);  // Note [conv weight gradient order]
  const PatchTable table = patch_table(g);
  for_each_group(g.B, G, g.F * K * N, [&](int64_t first, int64_t count, int64_t group) {
    T* col = scratch<T>(K * count * N, 0);
    T* staged = scratch<T>(g.F * count * N, 1);
    im2col_group(g, table, x + first * g.C * g.H * g.W, count, col);
    stage_group(g.F, N, count, dy + first * g.F * N, staged);
    // (F, G*OH*OW) x (G*OH*OW, CKK): one reduction over the group's pixels.
    gemm<T>(Trans::no, Trans::yes, g.F, K, count * N, T(1), staged, count * N, col, count * N, T(0),
            partials + group * weight_size, K);
  });
  for (int64_t group = 0; group < groups; ++group) {
    const T* partial = partials + group * weight_size;
    for (int64_t i = 0; i < weight_size; ++i) dw[i] += partial[i];
  }
}

template <class T>
void conv2d_backward_bias(const Conv2dGeometry& g, const T* dy, T* dbias) {
  add_channel_sums(g.B, g.F, g.OH * g.OW, dy, dbias);
}

// Note [transposed convolution is the adjoint] (conv.h): the transpose is the conv2d kernels, reused.
template <class T>
void conv_transpose2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  // col2im scatters with +=, so y starts as the bias broadcast over each plane (or zero).
  parallel_for(g.B * g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      std::fill(y + i * g.H * g.W, y + (i + 1) * g.H * g.W, bias != nullptr ? bias[i % g.C] : T(0));
  }, g.H * g.W);
  conv2d_backward_input(g, x, w, y);
}

template <class T>
void conv_transpose2d_backward_input(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  conv2d_forward_impl(g, dy, w, static_cast<const T*>(nullptr), /*accumulate=*/true, dx);
}

template <class T>
void conv_transpose2d_backward_weight(const Conv2dGeometry& g, const T* dy, const T* x, T* dw) {
  // In conv2d terms the transpose's input x plays conv2d's output gradient, and its dy plays conv2d's input.
  conv2d_backward_weight(g, /*dy=*/x, /*x=*/dy, dw);
}

template <class T>
void conv_transpose2d_backward_bias(const Conv2dGeometry& g, const T* dy, T* dbias) {
  add_channel_sums(g.B, g.C, g.H * g.W, dy, dbias);
}

#define TAPEGRAD_INSTANTIATE_CONV(T)                                                                    \
  template void conv2d_forward<T>(const Conv2dGeometry&, const T*, const T*, const T*, T*);             \
  template void conv2d_backward_input<T>(const Conv2dGeometry&, const T*, const T*, T*);                \
  template void conv2d_backward_weight<T>(const Conv2dGeometry&, const T*, const T*, T*);               \
  template void conv2d_backward_bias<T>(const Conv2dGeometry&, const T*, T*);                           \
  template void conv_transpose2d_forward<T>(const Conv2dGeometry&, const T*, const T*, const T*, T*);   \
  template void conv_transpose2d_backward_input<T>(const Conv2dGeometry&, const T*, const T*, T*);      \
  template void conv_transpose2d_backward_weight<T>(const Conv2dGeometry&, const T*, const T*, T*);     \
  template void conv_transpose2d_backward_bias<T>(const Conv2dGeometry&, const T*, T*);
TAPEGRAD_INSTANTIATE_CONV(float)
TAPEGRAD_INSTANTIATE_CONV(double)
#undef TAPEGRAD_INSTANTIATE_CONV

}  // namespace tapegrad::ops
