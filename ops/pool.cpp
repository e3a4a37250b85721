// Pooling and nearest upsampling; see ops/pool.h for the definitions. The fast kernels clip each window to
// the image once (instead of testing every tap) and run planes in parallel; the naive twins test every tap.
#include "ops/pool.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/error.h"
#include "ops/parallel.h"

namespace tapegrad::ops {
namespace {

std::string str(const Pair& p) { return cat("(", p[0], ", ", p[1], ")"); }

// Calls body(plane) for each of the B*C planes, each plane on one thread.
template <class Body>
void for_each_plane(int64_t planes, int64_t cost_per_plane, Body&& body) {
  parallel_for(planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) body(p);
  }, cost_per_plane);
}

// The window of output (oh, ow) clipped to the image: rows [h0, h1), columns [w0, w1).
struct Window {
  int64_t h0, h1, w0, w1;
};
Window window(const Pool2dGeometry& g, int64_t oh, int64_t ow) {
  const int64_t h = oh * g.stride[0] - g.padding[0], w = ow * g.stride[1] - g.padding[1];
  return {std::max<int64_t>(h, 0), std::min(h + g.KH, g.H), std::max<int64_t>(w, 0), std::min(w + g.KW, g.W)};
}

}  // namespace

Pool2dGeometry pool2d_geometry(const char* op, const Shape& x, const Pool2dOptions& o) {
  if (x.rank() != 4) fail<ShapeError>(op, ": input must be 4-d (B, C, H, W), got ", x);
  const Pair stride = o.stride == Pair{0, 0} ? o.kernel : o.stride;
  for (int axis = 0; axis < 2; ++axis) {
    if (o.kernel[axis] < 1) fail<ValueError>(op, ": kernel size must be positive, got ", str(o.kernel));
    if (stride[axis] < 1) fail<ValueError>(op, ": stride must be positive, got ", str(o.stride));
    if (o.padding[axis] < 0 || 2 * o.padding[axis] > o.kernel[axis])
      fail<ValueError>(op, ": padding must be between 0 and half the kernel size, got padding ", str(o.padding),
                       " and kernel ", str(o.kernel));
  }
  Pool2dGeometry g{.B = x[0], .C = x[1], .H = x[2], .W = x[3], .KH = o.kernel[0], .KW = o.kernel[1],
                   .stride = stride, .padding = o.padding};
  g.OH = conv2d_output_size(g.H, g.KH, stride[0], o.padding[0], 1);
  g.OW = conv2d_output_size(g.W, g.KW, stride[1], o.padding[1], 1);
  if (g.OH < 1 || g.OW < 1)
    fail<ValueError>(op, ": output size must be positive, got (", g.OH, ", ", g.OW, ") from input ", x, ", kernel ",
                     str(o.kernel), ", stride ", str(stride), ", padding ", str(o.padding));
  return g;
}

template <class T>
void max_pool2d_forward(const Pool2dGeometry& g, const T* x, T* y, int64_t* argmax) {
  for_each_plane(g.B * g.C, g.OH * g.OW * g.KH * g.KW, [&](int64_t p) {
    const T* in = x + p * g.H * g.W;
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const Window win = window(g, oh, ow);
        int64_t best = win.h0 * g.W + win.w0;  // padding <= kernel/2 keeps every window non-empty
        T best_value = in[best];
        for (int64_t ih = win.h0; ih < win.h1; ++ih)
          for (int64_t iw = win.w0; iw < win.w1; ++iw) {
            const T v = in[ih * g.W + iw];
            if (v > best_value || (std::isnan(v) && !std::isnan(best_value))) best_value = v, best = ih * g.W + iw;
          }
        const int64_t o = (p * g.OH + oh) * g.OW + ow;
        y[o] = best_value;
        argmax[o] = best;
      }
  });
}

template <class T>
void max_pool2d_backward(const Pool2dGeometry& g, const T* dy, const int64_t* argmax, T* dx) {
  for_each_plane(g.B * g.C, g.OH * g.OW, [&](int64_t p) {
    T* out = dx + p * g.H * g.W;
    for (int64_t o = p * g.OH * g.OW; o < (p + 1) * g.OH * g.OW; ++o) out[argmax[o]] += dy[o];
  });
}

template <class T>
void avg_pool2d_forward(const Pool2dGeometry& g, const T* x, T* y) {
  const T scale = T(1) / static_cast<T>(g.KH * g.KW);
  for_each_plane(g.B * g.C, g.OH * g.OW * g.KH * g.KW, [&](int64_t p) {
    const T* in = x + p * g.H * g.W;
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const Window win = window(g, oh, ow);
        T sum = 0;
        for (int64_t ih = win.h0; ih < win.h1; ++ih)
          for (int64_t iw = win.w0; iw < win.w1; ++iw) sum += in[ih * g.W + iw];
        y[(p * g.OH + oh) * g.OW + ow] = sum * scale;
      }
  });
}

template <class T>
void avg_pool2d_backward(const Pool2dGeometry& g, const T* dy, T* dx) {
  const T scale = T(1) / static_cast<T>(g.KH * g.KW);
  for_each_plane(g.B * g.C, g.OH * g.OW * g.KH * g.KW, [&](int64_t p) {
    T* out = dx + p * g.H * g.W;
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const Window win = window(g, oh, ow);
        const T d = dy[(p * g.OH + oh) * g.OW + ow] * scale;
        for (int64_t ih = win.h0; ih < win.h1; ++ih)
          for (int64_t iw = win.w0; iw < win.w1; ++iw) out[ih * g.W + iw] += d;
      }
  });
}

template <class T>
void upsample_nearest2d_forward(int64_t B, int64_t C, int64_t H, int64_t W, Pair scale, const T* x, T* y) {
  const int64_t sh = scale[0], sw = scale[1];  // not a structured binding: clang 14 cannot capture those
  for_each_plane(B * C, H * W * sh * sw, [&](int64_t p) {
    for (int64_t h = 0; h < H * sh; ++h) {
      const T* in = x + (p * H + h / sh) * W;
      T* out = y + (p * H * sh + h) * W * sw;
      for (int64_t w = 0; w < W * sw; ++w) out[w] = in[w / sw];
    }
  });
}

template <class T>
void upsample_nearest2d_backward(int64_t B, int64_t C, int64_t H, int64_t W, Pair scale, const T* dy, T* dx) {
  const int64_t sh = scale[0], sw = scale[1];
  for_each_plane(B * C, H * W * sh * sw, [&](int64_t p) {
    for (int64_t h = 0; h < H * sh; ++h) {
      const T* in = dy + (p * H * sh + h) * W * sw;
      T* out = dx + (p * H + h / sh) * W;
      for (int64_t w = 0; w < W * sw; ++w) out[w / sw] += in[w];
    }
  });
}

namespace naive {

template <class T>
void max_pool2d_forward(const Pool2dGeometry& g, const T* x, T* y, int64_t* argmax) {
  for (int64_t p = 0; p < g.B * g.C; ++p)
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        T best_value = -std::numeric_limits<T>::infinity();
        int64_t best = -1;
        for (int64_t kh = 0; kh < g.KH; ++kh)
          for (int64_t kw = 0; kw < g.KW; ++kw) {
            const int64_t ih = oh * g.stride[0] - g.padding[0] + kh, iw = ow * g.stride[1] - g.padding[1] + kw;
            if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
            const T v = x[(p * g.H + ih) * g.W + iw];
            if (best < 0 || v > best_value || (std::isnan(v) && !std::isnan(best_value)))
              best_value = v, best = ih * g.W + iw;
          }
        y[(p * g.OH + oh) * g.OW + ow] = best_value;
        argmax[(p * g.OH + oh) * g.OW + ow] = best;
      }
}

template <class T>
void avg_pool2d_forward(const Pool2dGeometry& g, const T* x, T* y) {
  for (int64_t p = 0; p < g.B * g.C; ++p)
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        double sum = 0;
        for (int64_t kh = 0; kh < g.KH; ++kh)
          for (int64_t kw = 0; kw < g.KW; ++kw) {
            const int64_t ih = oh * g.stride[0] - g.padding[0] + kh, iw = ow * g.stride[1] - g.padding[1] + kw;
            if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) sum += x[(p * g.H + ih) * g.W + iw];
          }
        y[(p * g.OH + oh) * g.OW + ow] = static_cast<T>(sum / static_cast<double>(g.KH * g.KW));
      }
}

// Gathered per input pixel: the windows that contain (ih, iw) are those with oh*s - p <= ih < oh*s - p + KH.
template <class T>
void avg_pool2d_backward(const Pool2dGeometry& g, const T* dy, T* dx) {
  for (int64_t p = 0; p < g.B * g.C; ++p)
    for (int64_t ih = 0; ih < g.H; ++ih)
      for (int64_t iw = 0; iw < g.W; ++iw) {
        double sum = 0;
        for (int64_t oh = 0; oh < g.OH; ++oh)
          for (int64_t ow = 0; ow < g.OW; ++ow) {
            const int64_t kh = ih - (oh * g.stride[0] - g.padding[0]), kw = iw - (ow * g.stride[1] - g.padding[1]);
            if (kh >= 0 && kh < g.KH && kw >= 0 && kw < g.KW) sum += dy[(p * g.OH + oh) * g.OW + ow];
          }
        dx[(p * g.H + ih) * g.W + iw] += static_cast<T>(sum / static_cast<double>(g.KH * g.KW));
      }
}

}  // namespace naive

#define TAPEGRAD_INSTANTIATE_POOL(T)                                                                           \
  template void max_pool2d_forward<T>(const Pool2dGeometry&, const T*, T*, int64_t*);                          \
  template void max_pool2d_backward<T>(const Pool2dGeometry&, const T*, const int64_t*, T*);                   \
  template void avg_pool2d_forward<T>(const Pool2dGeometry&, const T*, T*);                                    \
  template void avg_pool2d_backward<T>(const Pool2dGeometry&, const T*, T*);                                   \
  template void upsample_nearest2d_forward<T>(int64_t, int64_t, int64_t, int64_t, Pair, const T*, T*);         \
  template void upsample_nearest2d_backward<T>(int64_t, int64_t, int64_t, int64_t, Pair, const T*, T*);        \
  template void naive::max_pool2d_forward<T>(const Pool2dGeometry&, const T*, T*, int64_t*);                   \
  template void naive::avg_pool2d_forward<T>(const Pool2dGeometry&, const T*, T*);                             \
  template void naive::avg_pool2d_backward<T>(const Pool2dGeometry&, const T*, T*);
TAPEGRAD_INSTANTIATE_POOL(float)
TAPEGRAD_INSTANTIATE_POOL(double)
#undef TAPEGRAD_INSTANTIATE_POOL

}  // namespace tapegrad::ops
