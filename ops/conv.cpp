// Convolution kernels by im2col + GEMM; see ops/conv.h for the shapes, equations and the adjoint Note.
//
// Note [why im2col]: unrolling every receptive field of an image into a column of a (C*KH*KW, OH*OW) matrix
// turns the convolution into one GEMM, y_b (F, OH*OW) = w (F, C*KH*KW) * col_b (Chellapilla, Puri & Simard
// 2006, "High performance convolutional neural networks for document processing"). All the arithmetic then
// runs in ops::gemm, the one kernel we tune; the same unrolling serves the weight gradient
// (dw += dy_b col_b^T) and, run backwards as col2im (a scatter-add), the input gradient (dx_b += col2im(w^T dy_b)).
// The price is memory: col_b holds KH*KW/(stride_h*stride_w) times the image, e.g. 512 x 49 values for the
// VAE's 32->64 k4 s2 layer on 14x14 inputs (100 KB in float). We unroll one image at a time, into a
// per-thread scratch buffer, so the cost is that much per thread, not per batch. A 1x1, stride-1, unpadded
// convolution needs no unrolling at all: col_b is x_b itself.
#include "ops/conv.h"

#include <algorithm>
#include <vector>

#include <tbb/task_arena.h>

#include "ops/gemm.h"
#include "ops/parallel.h"

namespace tapegrad::ops {
namespace {

// Per-thread scratch that grows to the high-water size and is kept: after the first step no conv call
// allocates (the tape's arena is rewound each step, but this memory is needed only inside one kernel call).
// slot 0: one image's col matrix; slot 1: the weight gradient's per-chunk partial sums (calling thread only).
template <class T>
T* scratch(int64_t n, int slot) {
  thread_local std::vector<T> buffers[2];
  std::vector<T>& buffer = buffers[slot];
  if (buffer.size() < static_cast<size_t>(n)) buffer.resize(static_cast<size_t>(n));
  return buffer.data();
}

// Note [conv scratch and nested parallelism]: images run in parallel and each image's GEMM is itself
// parallel. A TBB thread that waits for its inner GEMM may meanwhile pick up another task of the *outer*
// loop, which would reuse (overwrite) the thread's col buffer still in use below it on the stack. Running
// each image's work inside `this_task_arena::isolate` forbids exactly that: while waiting, the thread only
// helps with tasks spawned inside the isolated region. The outer loop is isolated too, so that a conv
// called from inside someone else's parallel loop is equally protected.
template <class Body>
void for_each_image(int64_t count, int64_t cost_per_image, Body&& body) {
  tbb::this_task_arena::isolate([&] {
    parallel_for(count, 1, [&](int64_t begin, int64_t end) {
      tbb::this_task_arena::isolate([&] {
        for (int64_t i = begin; i < end; ++i) body(i);
      });
    }, cost_per_image);
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

bool is_pointwise(const Conv2dGeometry& g) {
  return g.KH == 1 && g.KW == 1 && g.stride == Pair{1, 1} && g.padding == Pair{0, 0} && g.OH == g.H && g.OW == g.W;
}

// x_b: (C, H, W) -> col: (C*KH*KW, OH*OW); row (c, kh, kw), column (oh, ow) holds x_b[c, oh*s-p+kh*d, ...].
template <class T>
void im2col(const Conv2dGeometry& g, const T* x_b, T* col) {
  const auto [sh, sw] = g.stride;
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        T* out = col + ((c * g.KH + kh) * g.KW + kw) * g.OH * g.OW;
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

// The transpose of im2col: dx_b (C, H, W) += scatter of col (C*KH*KW, OH*OW). Serial per image, so every
// dx element receives its contributions in one fixed order.
template <class T>
void col2im_add(const Conv2dGeometry& g, const T* col, T* dx_b) {
  const auto [sh, sw] = g.stride;
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const T* in = col + ((c * g.KH + kh) * g.KW + kw) * g.OH * g.OW;
        const int64_t h_offset = kh * g.dilation[0] - g.padding[0], w_offset = kw * g.dilation[1] - g.padding[1];
        const Range rows = valid_outputs(g.H, g.OH, sh, h_offset), cols = valid_outputs(g.W, g.OW, sw, w_offset);
        for (int64_t oh = rows.lo; oh < rows.hi; ++oh) {
          T* out = dx_b + (c * g.H + oh * sh + h_offset) * g.W;
          const T* i = in + oh * g.OW;
          for (int64_t ow = cols.lo; ow < cols.hi; ++ow) out[ow * sw + w_offset] += i[ow];
        }
      }
}

// y: (B, channels, plane) += bias[channel]
template <class T>
void add_bias(int64_t B, int64_t channels, int64_t plane, const T* bias, T* y) {
  parallel_for(B * channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T value = bias[i % channels];
      T* row = y + i * plane;
      for (int64_t j = 0; j < plane; ++j) row[j] += value;
    }
  }, plane);
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

// y = w * col(x) + beta * y (+ bias): conv2d_forward with beta = 0, the transpose's input gradient with beta = 1.
template <class T>
void conv2d_forward_impl(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T beta, T* y) {
  const int64_t K = g.col_rows(), N = g.col_cols();
  const bool pointwise = is_pointwise(g);
  for_each_image(g.B, g.F * K * N, [&](int64_t b) {
    const T* x_b = x + b * g.C * g.H * g.W;
    const T* col = x_b;
    if (!pointwise) {
      T* buffer = scratch<T>(K * N, 0);
      im2col(g, x_b, buffer);
      col = buffer;
    }
    gemm<T>(Trans::no, Trans::no, g.F, N, K, T(1), w, K, col, N, beta, y + b * g.F * N, N);
  });
  if (bias != nullptr) add_bias(g.B, g.F, N, bias, y);
}

// Note [conv weight gradient order]: dw = sum over images of dy_b col_b^T is a reduction over the batch, so
// its rounding depends on where partial sums meet. Images are cut into chunks of a fixed size (independent of
// the thread count); each chunk accumulates its images in order into its own buffer (GEMM with beta = 1),
// chunks run in parallel, and the chunk buffers are then added into dw serially in chunk order. The same bits
// come out for any thread count, at the cost of ceil(B / chunk) weight-sized buffers.
constexpr int64_t kImagesPerChunk = 8;

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
  conv2d_forward_impl(g, x, w, bias, T(0), y);
}

template <class T>
void conv2d_backward_input(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  const int64_t K = g.col_rows(), N = g.col_cols();
  const bool pointwise = is_pointwise(g);
  for_each_image(g.B, g.F * K * N, [&](int64_t b) {
    const T* dy_b = dy + b * g.F * N;
    T* dx_b = dx + b * g.C * g.H * g.W;
    if (pointwise) {  // dcol is dx_b itself: accumulate straight into it
      gemm<T>(Trans::yes, Trans::no, K, N, g.F, T(1), w, K, dy_b, N, T(1), dx_b, N);
      return;
    }
    T* dcol = scratch<T>(K * N, 0);
    gemm<T>(Trans::yes, Trans::no, K, N, g.F, T(1), w, K, dy_b, N, T(0), dcol, N);  // (CKK, F) x (F, OH*OW)
    col2im_add(g, dcol, dx_b);
  });
}

template <class T>
void conv2d_backward_weight(const Conv2dGeometry& g, const T* dy, const T* x, T* dw) {
  const int64_t K = g.col_rows(), N = g.col_cols(), weight_size = g.F * K;
  const int64_t chunks = (g.B + kImagesPerChunk - 1) / kImagesPerChunk;
  const bool pointwise = is_pointwise(g);
  T* partials = scratch<T>(chunks * weight_size, 1);  // Note [conv weight gradient order]
  for_each_image(chunks, kImagesPerChunk * weight_size * N, [&](int64_t chunk) {
    T* partial = partials + chunk * weight_size;
    const int64_t first = chunk * kImagesPerChunk, last = std::min(g.B, first + kImagesPerChunk);
    for (int64_t b = first; b < last; ++b) {
      const T* x_b = x + b * g.C * g.H * g.W;
      const T* col = x_b;
      if (!pointwise) {
        T* buffer = scratch<T>(K * N, 0);
        im2col(g, x_b, buffer);
        col = buffer;
      }
      // (F, OH*OW) x (OH*OW, CKK); the first image of a chunk overwrites, the others accumulate.
      gemm<T>(Trans::no, Trans::yes, g.F, K, N, T(1), dy + b * g.F * N, N, col, N, T(b == first ? 0 : 1), partial,
              K);
    }
  });
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const T* partial = partials + chunk * weight_size;
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
  // col2im scatters with +=, so y starts at zero (a GEMM cannot overwrite a scatter target).
  parallel_for(g.B * g.C, 1, [&](int64_t begin, int64_t end) {
    std::fill(y + begin * g.H * g.W, y + end * g.H * g.W, T(0));
  }, g.H * g.W);
  conv2d_backward_input(g, x, w, y);
  if (bias != nullptr) add_bias(g.B, g.C, g.H * g.W, bias, y);
}

template <class T>
void conv_transpose2d_backward_input(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  conv2d_forward_impl(g, dy, w, static_cast<const T*>(nullptr), T(1), dx);
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
                sum += double(x[((b * g.C + c) * g.H + ih) * g.W + iw]) * double(w[((f * g.C + c) * g.KH + kh) * g.KW + kw]);
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
                sum += double(dy[((b * g.F + f) * g.OH + oh) * g.OW + ow]) * double(w[((f * g.C + c) * g.KH + kh) * g.KW + kw]);
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
                sum += double(dy[((b * g.F + f) * g.OH + oh) * g.OW + ow]) * double(x[((b * g.C + c) * g.H + ih) * g.W + iw]);
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
                    double(x[((b * g.F + f) * g.OH + oh) * g.OW + ow]) * double(w[((f * g.C + c) * g.KH + kh) * g.KW + kw]);
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
