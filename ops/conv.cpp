// Convolution kernels by im2col + GEMM, and the choice between them and the implicit kernels of
// ops/conv_implicit.cpp and ops/conv_phases.cpp (the GEMM micro-kernel reading the images directly, used for
// long patches: Note [choosing the forward]); see ops/conv.h for the shapes, equations and the adjoint Note.
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
#include "ops/conv_detail.h"
#include "ops/parallel.h"

namespace tapegrad::ops {
using namespace conv_detail;
namespace {

constexpr int64_t kGroupColumns = 512;

int64_t images_per_group(const Conv2dGeometry& g) {
  return std::clamp<int64_t>(kGroupColumns / std::max<int64_t>(g.OH * g.OW, 1), 1, kMaxGroup);
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

// The (F, G*N) matrix of the G images (G, F, N) starting at y: staged[f, i*N + n] = y[i, f, n]. A single image
// already is that matrix and is returned in place.
template <class T>
const T* stage_group(int64_t F, int64_t N, int64_t G, const T* y, T* staged) {
  if (G == 1) return y;
  for (int64_t i = 0; i < G; ++i)
    for (int64_t f = 0; f < F; ++f) std::copy(y + (i * F + f) * N, y + (i * F + f + 1) * N, staged + f * G * N + i * N);
  return staged;
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

// Note [choosing the input gradient]: the phase kernels need enough taps per phase to amortise each output's
// store; given those, the GEMM form needs channels to fill its NR-wide panels, and below kImplicitMinChannels
// the pixels are the vector lanes instead (Note [input gradient for few channels], ops/conv_phases.cpp: the
// decoder's 32->1 transposed conv, C = 1: 2.05 -> 1.30 ms at batch 128, 1 thread, docs/benchmarks-conv.md).
template <class T>
void conv2d_backward_input(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  if (g.F * g.KH * g.KW >= kImplicitMinPatch * g.stride[0] * g.stride[1])
    return g.C >= kImplicitMinChannels ? conv2d_backward_input_implicit(g, dy, w, dx)
                                       : conv2d_backward_input_few_channels(g, dy, w, dx);
  const int64_t K = g.col_rows(), N = g.col_cols(), G = images_per_group(g);
  for_each_group(g.B, G, g.F * K * N, [&](int64_t first, int64_t count, int64_t) {
    T* dcol = scratch<T>(K * count * N, 0);
    const T* staged = stage_group(g.F, N, count, dy + first * g.F * N, scratch<T>(g.F * count * N, 1));
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
    im2col_group(g, table, x + first * g.C * g.H * g.W, count, col);
    const T* staged = stage_group(g.F, N, count, dy + first * g.F * N, scratch<T>(g.F * count * N, 1));
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
