// The naive:: twins of ops/conv.h: the equations as loops, accumulated in double, for the tests and for readers.
// Kept apart from ops/conv.cpp so that each file reads in one sitting.
#include <vector>

#include "ops/conv.h"

namespace tapegrad::ops {

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
