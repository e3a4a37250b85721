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
// sums (used on the calling thread only).
template <class T>
T* scratch(int64_t n, int slot) {
  thread_local std::vector<T> buffers[3];
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

// Output positions o in [lo, hi) of [0, n_out) whose input index o*stride + offset lies inside [0, n_in).
struct Range {
  int64_t lo, hi;
};
Range valid_outputs(int64_t n_in, int64_t n_out, int64_t stride, int64_t offset) {
  const int64_t lo = std::clamp<int64_t>(ceil_div(-offset, stride), 0, n_out);
  const int64_t hi = std::clamp<int64_t>(floor_div(n_in - 1 - offset, stride) + 1, lo, n_out);
  return {lo, hi};
}

// x_b: (C, H, W) -> col: (C*KH*KW, OH*OW) with row stride ld; row (c, kh, kw), column (oh, ow) holds
// x_b[c, oh*s-p+kh*d, ow*s-p+kw*d], or 0 in the padding.
template <class T>
void im2col(const Conv2dGeometry& g, const T* x_b, T* col, int64_t ld) {
  const auto [sh, sw] = g.stride;
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        T* out = col + ((c * g.KH + kh) * g.KW + kw) * ld;
        const int64_t h_offset = kh * g.dilation[0] - g.padding[0], w_offset = kw * g.dilation[1] - g.padding[1];
        const Range rows = valid_outputs(g.H, g.OH, sh, h_offset), cols = valid_outputs(g.W, g.OW, sw, w_offset);
        std::fill(out, out + rows.lo * g.OW, T(0));
        for (int64_t oh = rows.lo; oh < rows.hi; ++oh) {
          const T* in = x_b + (c * g.H + oh * sh + h_offset) * g.W;
          T* o = out + oh * g.OW;
          std::fill(o, o + cols.lo, T(0));
          if (sw == 1) std::copy(in + cols.lo + w_offset, in + cols.hi + w_offset, o + cols.lo);
          else for (int64_t ow = cols.lo; ow < cols.hi; ++ow) o[ow] = in[ow * sw + w_offset];
          std::fill(o + cols.hi, o + g.OW, T(0));
        }
        std::fill(out + rows.hi * g.OW, out + g.OH * g.OW, T(0));
      }
}

// The transpose of im2col: dx_b (C, H, W) += scatter of col (C*KH*KW, OH*OW), row stride ld. Serial per image,
// so every dx element receives its contributions in one fixed order.
template <class T>
void col2im_add(const Conv2dGeometry& g, const T* col, int64_t ld, T* dx_b) {
  const auto [sh, sw] = g.stride;
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const T* in = col + ((c * g.KH + kh) * g.KW + kw) * ld;
        const int64_t h_offset = kh * g.dilation[0] - g.padding[0], w_offset = kw * g.dilation[1] - g.padding[1];
        const Range rows = valid_outputs(g.H, g.OH, sh, h_offset), cols = valid_outputs(g.W, g.OW, sw, w_offset);
        for (int64_t oh = rows.lo; oh < rows.hi; ++oh) {
          T* out = dx_b + (c * g.H + oh * sh + h_offset) * g.W;
          const T* i = in + oh * g.OW;
          for (int64_t ow = cols.lo; ow < cols.hi; ++ow) out[ow * sw + w_offset] += i[ow];
        }
      }
}

// col_group: (C*KH*KW, G*OH*OW) <- the G images starting at x (Note [image groups]).
template <class T>
void im2col_group(const Conv2dGeometry& g, const T* x, int64_t G, T* col_group) {
  const int64_t N = g.OH * g.OW, image = g.C * g.H * g.W;
  for (int64_t i = 0; i < G; ++i) im2col(g, x + i * image, col_group + i * N, G * N);
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
  for_each_group(g.B, G, g.F * K * N, [&](int64_t first, int64_t count, int64_t) {
    T* col = scratch<T>(K * count * N, 0);
    T* staged = scratch<T>(g.F * count * N, 1);
    im2col_group(g, x + first * g.C * g.H * g.W, count, col);
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
    for (int64_t i = 0; i < count; ++i) col2im_add(g, dcol + i * N, count * N, dx + (first + i) * g.C * g.H * g.W);
  });
}

template <class T>
void conv2d_backward_weight(const Conv2dGeometry& g, const T* dy, const T* x, T* dw) {
  const int64_t K = g.col_rows(), N = g.col_cols(), G = images_per_group(g), weight_size = g.F * K;
  const int64_t groups = (g.B + G - 1) / G;
  T* partials = scratch<T>(groups * weight_size, 2);  // Note [conv weight gradient order]
  for_each_group(g.B, G, g.F * K * N, [&](int64_t first, int64_t count, int64_t group) {
    T* col = scratch<T>(K * count * N, 0);
    T* staged = scratch<T>(g.F * count * N, 1);
    im2col_group(g, x + first * g.C * g.H * g.W, count, col);
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
