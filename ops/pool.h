// 2-d pooling and nearest-neighbour upsampling kernels (NCHW), forward and backward.
//
// Shape letters: B batch, C channels, H x W input, KH x KW window, OH x OW output (one window per output pixel).
//   max_pool2d: y[b,c,oh,ow] = max over the window at (oh*s - p, ow*s - p) of x, padding never wins (PyTorch)
//   avg_pool2d: y[b,c,oh,ow] = (sum over the window of x, padding counted as 0) / (KH*KW)
//               (PyTorch's default count_include_pad=True; without ceil_mode the window never leaves the padding)
//   upsample_nearest2d, integer scale (sh, sw): y[b,c,h,w] = x[b,c, h / sh, w / sw], so OH = H*sh, OW = W*sw
//   OH = floor((H + 2p - KH) / s) + 1   (as conv2d with dilation 1)
//
// max_pool2d_forward records, per output, the flat index (ih*W + iw) of the winning input in its plane, like
// PyTorch's return_indices; max_pool2d_backward scatters dy there. A NaN in the window wins (PyTorch propagates
// NaN); among equal maxima the first in row-major order wins.
//
// As in ops/conv.h, forward kernels overwrite their output and backward kernels accumulate (+=) into dx.
// Planes (b, c) are independent and each is done by one thread, so results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "ops/conv.h"
#include "ops/shape.h"

namespace tapegrad::ops {

struct Pool2dOptions {
  Pair kernel{2, 2};
  Pair stride{0, 0};  // (0, 0): the kernel size, as PyTorch's stride=None
  Pair padding{0, 0};
};

struct Pool2dGeometry {
  int64_t B = 0, C = 0, H = 0, W = 0;  // x: (B, C, H, W)
  int64_t KH = 0, KW = 0;
  int64_t OH = 0, OW = 0;              // y: (B, C, OH, OW)
  Pair stride{1, 1}, padding{0, 0};
  Shape input_shape() const { return {B, C, H, W}; }
  Shape output_shape() const { return {B, C, OH, OW}; }
};

// Validates (ShapeError / ValueError naming `op`): x 4-d, kernel and stride positive, 0 <= padding <= kernel/2
// (PyTorch's rule, so that every window holds at least one real pixel), output non-empty.
Pool2dGeometry pool2d_geometry(const char* op, const Shape& x, const Pool2dOptions& options);

// x: (B, C, H, W)  y: (B, C, OH, OW)  argmax: (B, C, OH, OW) flat indices into each (H, W) plane
template <class T>
void max_pool2d_forward(const Pool2dGeometry& g, const T* x, T* y, int64_t* argmax);
// dy: (B, C, OH, OW)  argmax: from the forward  dx: (B, C, H, W), dx += scatter of dy
template <class T>
void max_pool2d_backward(const Pool2dGeometry& g, const T* dy, const int64_t* argmax, T* dx);
// x: (B, C, H, W)  y: (B, C, OH, OW)
template <class T>
void avg_pool2d_forward(const Pool2dGeometry& g, const T* x, T* y);
// dy: (B, C, OH, OW)  dx: (B, C, H, W), dx += dy / (KH*KW) over each window
template <class T>
void avg_pool2d_backward(const Pool2dGeometry& g, const T* dy, T* dx);

// x: (B, C, H, W)  y: (B, C, H*scale[0], W*scale[1])
template <class T>
void upsample_nearest2d_forward(int64_t B, int64_t C, int64_t H, int64_t W, Pair scale, const T* x, T* y);
// dy: (B, C, H*scale[0], W*scale[1])  dx: (B, C, H, W), dx += the sum of each scale block
template <class T>
void upsample_nearest2d_backward(int64_t B, int64_t C, int64_t H, int64_t W, Pair scale, const T* dy, T* dx);

namespace naive {
// Every window position checked one by one, serial: the definitions above, for tests and readers.
template <class T>
void max_pool2d_forward(const Pool2dGeometry& g, const T* x, T* y, int64_t* argmax);
template <class T>
void avg_pool2d_forward(const Pool2dGeometry& g, const T* x, T* y);
template <class T>
void avg_pool2d_backward(const Pool2dGeometry& g, const T* dy, T* dx);
}  // namespace naive

}  // namespace tapegrad::ops
