// Convolution kernels by im2col + GEMM; see ops/conv.h for the shapes, equations and the adjoint Note.
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
// Slots: 0 the group's col matrix, 1 its (F, G*OH*OW) staging matrix, 2 the weight gradient's per-group partial
// sums (used on the calling thread only), 3 a group's zero-padded planes of one channel (Note [im2col by offset table]).
template <class T>
T* scratch(int64_t n, int slot) {
  thread_local std::vector<T> buffers[4];
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

// plane (Hp, Wp) <- x_c (H, W) with zero borders; every padded value is written exactly once.
template <class T>
void pad_plane(const Conv2dGeometry& g, const PatchTable& table, const T* x_c, T* plane) {
  const int64_t ph = g.padding[0], pw = g.padding[1];
  std::fill(plane, plane + ph * table.Wp, T(0));
  for (int64_t h = 0; h < g.H; ++h) {
    T* row = plane + (ph + h) * table.Wp;
    std::fill(row, row + pw, T(0));
    std::copy(x_c + h * g.W, x_c + (h + 1) * g.W, row + pw);
    std::fill(row + pw + g.W, row + table.Wp, T(0));
  }
  std::fill(plane + (ph + g.H) * table.Wp, plane + table.Hp * table.Wp, T(0));
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
    for (int64_t i = 0; i < G; ++i) pad_plane(g, table, x + (i * g.C + c) * g.H * g.W, planes + i * plane_size);
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

// y = w * col(x) (+ bias), or y += w * col(x) when `accumulate` (the transpose's input gradient).
template <class T>
void conv2d_forward_impl(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, bool accumulate, T* y) {
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

template <class T>
void conv2d_backward_input(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
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

// ---- naive:: twins: the equations of conv.h as loops, accumulated in double ----
namespace naive {
namespace {
bool inside(int64_t i, int64_t n) { return 0 <= i && i < n; }
}  // namespace

template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t f = 0; f < g.F; ++f)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          double sum = bias != nullptr ? bias[f] : 0.0;
          for (int64_t c = 0; c < g.C; ++c)
            for (int64_t kh = 0; kh < g.KH; ++kh)
              for (int64_t kw = 0; kw < g.KW; ++kw) {
                const int64_t ih = oh * g.stride[0] - g.padding[0] + kh * g.dilation[0];
                const int64_t iw = ow * g.stride[1] - g.padding[1] + kw * g.dilation[1];
                if (!inside(ih, g.H) || !inside(iw, g.W)) continue;
                sum += double(x[((b * g.C + c) * g.H + ih) * g.W + iw]) *
                       double(w[((f * g.C + c) * g.KH + kh) * g.KW + kw]);
              }
          y[((b * g.F + f) * g.OH + oh) * g.OW + ow] = static_cast<T>(sum);
        }
}

// Gathered per input pixel: dx[b,c,ih,iw] += sum of dy[b,f,oh,ow] w[f,c,kh,kw] over ih = oh*s - p + kh*d.
template <class T>
void conv2d_backward_input(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t ih = 0; ih < g.H; ++ih)
        for (int64_t iw = 0; iw < g.W; ++iw) {
          double sum = 0;
          for (int64_t f = 0; f < g.F; ++f)
            for (int64_t kh = 0; kh < g.KH; ++kh)
              for (int64_t kw = 0; kw < g.KW; ++kw) {
                const int64_t th = ih + g.padding[0] - kh * g.dilation[0], tw = iw + g.padding[1] - kw * g.dilation[1];
                if (th < 0 || tw < 0 || th % g.stride[0] != 0 || tw % g.stride[1] != 0) continue;
                const int64_t oh = th / g.stride[0], ow = tw / g.stride[1];
                if (oh >= g.OH || ow >= g.OW) continue;
                sum += double(dy[((b * g.F + f) * g.OH + oh) * g.OW + ow]) *
                       double(w[((f * g.C + c) * g.KH + kh) * g.KW + kw]);
              }
          dx[((b * g.C + c) * g.H + ih) * g.W + iw] += static_cast<T>(sum);
        }
}

template <class T>
void conv2d_backward_weight(const Conv2dGeometry& g, const T* dy, const T* x, T* dw) {
  for (int64_t f = 0; f < g.F; ++f)
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          double sum = 0;
          for (int64_t b = 0; b < g.B; ++b)
            for (int64_t oh = 0; oh < g.OH; ++oh)
              for (int64_t ow = 0; ow < g.OW; ++ow) {
                const int64_t ih = oh * g.stride[0] - g.padding[0] + kh * g.dilation[0];
                const int64_t iw = ow * g.stride[1] - g.padding[1] + kw * g.dilation[1];
                if (!inside(ih, g.H) || !inside(iw, g.W)) continue;
                sum += double(dy[((b * g.F + f) * g.OH + oh) * g.OW + ow]) *
                       double(x[((b * g.C + c) * g.H + ih) * g.W + iw]);
              }
          dw[((f * g.C + c) * g.KH + kh) * g.KW + kw] += static_cast<T>(sum);
        }
}

template <class T>
void conv2d_backward_bias(const Conv2dGeometry& g, const T* dy, T* dbias) {
  for (int64_t f = 0; f < g.F; ++f) {
    double sum = 0;
    for (int64_t b = 0; b < g.B; ++b)
      for (int64_t i = 0; i < g.OH * g.OW; ++i) sum += dy[(b * g.F + f) * g.OH * g.OW + i];
    dbias[f] += static_cast<T>(sum);
  }
}

// PyTorch's description of the transpose: every input pixel x[b,f,oh,ow] scatters x * w[f,c,:,:] onto the
// output window starting at (oh*s - p, ow*s - p), dilated by d.
template <class T>
void conv_transpose2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  std::vector<double> sum(static_cast<size_t>(g.B * g.C * g.H * g.W));
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t f = 0; f < g.F; ++f)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow)
          for (int64_t c = 0; c < g.C; ++c)
            for (int64_t kh = 0; kh < g.KH; ++kh)
              for (int64_t kw = 0; kw < g.KW; ++kw) {
                const int64_t h = oh * g.stride[0] - g.padding[0] + kh * g.dilation[0];
                const int64_t v = ow * g.stride[1] - g.padding[1] + kw * g.dilation[1];
                if (!inside(h, g.H) || !inside(v, g.W)) continue;
                sum[((b * g.C + c) * g.H + h) * g.W + v] +=
                    double(x[((b * g.F + f) * g.OH + oh) * g.OW + ow]) *
                    double(w[((f * g.C + c) * g.KH + kh) * g.KW + kw]);
              }
  for (int64_t i = 0; i < g.B * g.C * g.H * g.W; ++i)
    y[i] = static_cast<T>(sum[i] + (bias != nullptr ? double(bias[(i / (g.H * g.W)) % g.C]) : 0.0));
}

#define TAPEGRAD_INSTANTIATE_NAIVE_CONV(T)                                                               \
  template void conv2d_forward<T>(const Conv2dGeometry&, const T*, const T*, const T*, T*);             \
  template void conv2d_backward_input<T>(const Conv2dGeometry&, const T*, const T*, T*);                \
  template void conv2d_backward_weight<T>(const Conv2dGeometry&, const T*, const T*, T*);               \
  template void conv2d_backward_bias<T>(const Conv2dGeometry&, const T*, T*);                           \
  template void conv_transpose2d_forward<T>(const Conv2dGeometry&, const T*, const T*, const T*, T*);
TAPEGRAD_INSTANTIATE_NAIVE_CONV(float)
TAPEGRAD_INSTANTIATE_NAIVE_CONV(double)
#undef TAPEGRAD_INSTANTIATE_NAIVE_CONV
}  // namespace naive

}  // namespace tapegrad::ops
