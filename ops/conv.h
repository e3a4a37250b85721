// 2-d convolution kernels (NCHW, groups = 1): conv2d and its adjoint conv_transpose2d, forward and backward.
//
// Shape letters, used in every signature below:
//   B batch, C conv input channels, H x W conv input size, F conv output channels (filters),
//   KH x KW kernel, OH x OW conv output size.
//   conv2d:            x (B, C, H, W) * w (F, C, KH, KW) + bias (F,)    -> y (B, F, OH, OW)
//   conv_transpose2d:  x (B, F, OH, OW) * w (F, C, KH, KW) + bias (C,)  -> y (B, C, H, W)
// i.e. PyTorch's layouts: conv_transpose2d's weight is (C_in, C_out, KH, KW) = (F, C, KH, KW) here.
//
// Equations (PyTorch's definitions, s stride, p padding, d dilation, op output_padding, per axis):
//   y[b,f,oh,ow] = bias[f] + sum_{c,kh,kw} w[f,c,kh,kw] * x[b,c, oh*s-p+kh*d, ow*s-p+kw*d]   (0 outside x)
//   OH = floor((H + 2p - d(KH-1) - 1) / s) + 1                          (conv2d)
//   H  = (OH - 1)s - 2p + d(KH-1) + op + 1                              (conv_transpose2d, op < s or op < d)
//
// Note [transposed convolution is the adjoint]: conv2d is a linear map A_w: x -> y. Its input gradient is
// A_w^T dy, and conv_transpose2d(x, w) is *defined* as A_w^T x (Dumoulin & Visin 2016, "A guide to
// convolution arithmetic", section 4). So one Conv2dGeometry, always written in conv2d terms, describes both:
//   conv_transpose2d_forward          = bias + conv2d_backward_input
//   conv_transpose2d_backward_input   = conv2d_forward              (the adjoint of the adjoint)
//   conv_transpose2d_backward_weight  = conv2d_backward_weight with x and dy swapping roles
// and the transpose reuses the conv2d kernels rather than copying them. output_padding only makes H, W (the
// transpose's output) larger than conv2d's formula would give back; the extra rows get bias only.
//
// Gradient convention: every backward kernel ACCUMULATES (+=) into its output, because tape gradients
// accumulate; forward kernels OVERWRITE their output. Results are bit-identical for any thread count
// (Note [determinism] in ops/parallel.h; Note [conv weight gradient order] in conv.cpp).
#pragma once

#include <array>
#include <cstdint>

#include "ops/shape.h"
#include "ops/tensor.h"

namespace tapegrad::ops {

using Pair = std::array<int64_t, 2>;  // (h, w)

// PyTorch's keyword arguments of conv2d / conv_transpose2d (groups = 1 only).
struct Conv2dOptions {
  Pair stride{1, 1};
  Pair padding{0, 0};
  Pair dilation{1, 1};
  Pair output_padding{0, 0};  // conv_transpose2d only
};

// Everything a kernel needs, in conv2d terms (see the Note above for the transpose).
struct Conv2dGeometry {
  int64_t B = 0, C = 0, H = 0, W = 0;  // conv input x: (B, C, H, W)
  int64_t F = 0, KH = 0, KW = 0;       // weight: (F, C, KH, KW)
  int64_t OH = 0, OW = 0;              // conv output y: (B, F, OH, OW)
  Pair stride{1, 1}, padding{0, 0}, dilation{1, 1};

  int64_t col_rows() const { return C * KH * KW; }  // im2col matrix: (C*KH*KW, OH*OW) per image
  int64_t col_cols() const { return OH * OW; }
  Shape input_shape() const { return {B, C, H, W}; }
  Shape weight_shape() const { return {F, C, KH, KW}; }
  Shape output_shape() const { return {B, F, OH, OW}; }
  // Multiply-adds of one forward pass (the same count for each of the two backward GEMMs).
  int64_t macs() const { return B * F * col_rows() * col_cols(); }
};

// Output sizes along one axis (PyTorch's formulas, above); no validation.
int64_t conv2d_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation);
int64_t conv_transpose2d_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation,
                                     int64_t output_padding);

// Validating constructors: ShapeError for shapes that do not fit (naming the op and the shapes), ValueError
// for bad options (non-positive stride/dilation, negative padding, output_padding too large, empty output).
//   conv2d_geometry:           x (B, C, H, W), w (F, C, KH, KW)
//   conv_transpose2d_geometry: x (B, F, OH, OW), w (F, C, KH, KW)   -> geometry of the conv2d it is the adjoint of
Conv2dGeometry conv2d_geometry(const Shape& x, const Shape& w, const Conv2dOptions& options);
Conv2dGeometry conv_transpose2d_geometry(const Shape& x, const Shape& w, const Conv2dOptions& options);

// ---- raw kernels (T = float or double), im2col + GEMM; pointers are dense NCHW, bias may be null ----
// x: (B, C, H, W)  w: (F, C, KH, KW)  bias: (F,) or null  y: (B, F, OH, OW), overwritten
template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y);
// dy: (B, F, OH, OW)  w: (F, C, KH, KW)  dx: (B, C, H, W), dx += A_w^T dy
template <class T>
void conv2d_backward_input(const Conv2dGeometry& g, const T* dy, const T* w, T* dx);
// dy: (B, F, OH, OW)  x: (B, C, H, W)  dw: (F, C, KH, KW), dw += sum_b dy_b col(x_b)^T
template <class T>
void conv2d_backward_weight(const Conv2dGeometry& g, const T* dy, const T* x, T* dw);
// dy: (B, F, OH, OW)  dbias: (F,), dbias += sum over b, oh, ow
template <class T>
void conv2d_backward_bias(const Conv2dGeometry& g, const T* dy, T* dbias);

// x: (B, F, OH, OW)  w: (F, C, KH, KW)  bias: (C,) or null  y: (B, C, H, W), overwritten
template <class T>
void conv_transpose2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y);
// dy: (B, C, H, W)  w: (F, C, KH, KW)  dx: (B, F, OH, OW), dx += conv2d(dy, w)
template <class T>
void conv_transpose2d_backward_input(const Conv2dGeometry& g, const T* dy, const T* w, T* dx);
// dy: (B, C, H, W)  x: (B, F, OH, OW)  dw: (F, C, KH, KW), dw += ...
template <class T>
void conv_transpose2d_backward_weight(const Conv2dGeometry& g, const T* dy, const T* x, T* dw);
// dy: (B, C, H, W)  dbias: (C,), dbias += sum over b, h, w
template <class T>
void conv_transpose2d_backward_bias(const Conv2dGeometry& g, const T* dy, T* dbias);

// ---- Tensor front ends: check shapes and dtypes (throwing ShapeError naming the op), dispatch on dtype ----
// Forward functions return a new tensor; backward functions accumulate into a tensor of the right shape.
Tensor conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dOptions& options = {});
void conv2d_backward_input(const Tensor& dy, const Tensor& w, Tensor& dx, const Conv2dOptions& options = {});
void conv2d_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, const Conv2dOptions& options = {});
void conv2d_backward_bias(const Tensor& dy, Tensor& dbias);
Tensor conv_transpose2d_forward(const Tensor& x, const Tensor& w, const Tensor* bias,
                                const Conv2dOptions& options = {});
void conv_transpose2d_backward_input(const Tensor& dy, const Tensor& w, Tensor& dx, const Conv2dOptions& options = {});
void conv_transpose2d_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw,
                                      const Conv2dOptions& options = {});
void conv_transpose2d_backward_bias(const Tensor& dy, Tensor& dbias);

// ---- naive:: reference twins, straight from the equations (double accumulation), for tests and readers ----
namespace naive {
template <class T>
void conv2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y);
template <class T>
void conv2d_backward_input(const Conv2dGeometry& g, const T* dy, const T* w, T* dx);
template <class T>
void conv2d_backward_weight(const Conv2dGeometry& g, const T* dy, const T* x, T* dw);
template <class T>
void conv2d_backward_bias(const Conv2dGeometry& g, const T* dy, T* dbias);
// Written from the transpose's own definition (a scatter), not by calling the conv2d twins, so that the
// tests check the reuse in Note [transposed convolution is the adjoint].
template <class T>
void conv_transpose2d_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y);
}  // namespace naive

}  // namespace tapegrad::ops
