// Convolutions on the tape (NCHW, groups = 1): conv2d and conv_transpose2d, with PyTorch's argument meaning.
// The kernels and the equations are in ops/conv.h; here each op records its backward:
//   conv2d:           dx += A_w^T dy (= conv_transpose2d of dy),  dw += dy (x) x,  db += sum_{b,h,w} dy
//   conv_transpose2d: dx += A_w dy   (= conv2d of dy),            dw, db likewise with roles swapped
#pragma once

#include "autograd/tape.h"
#include "ops/conv.h"

namespace tapegrad {

using ops::Conv2dOptions;

// x: (B, C, H, W), weight: (F, C, KH, KW), bias: (F,) -> (B, F, OH, OW)
Var conv2d(const Var& x, const Var& weight, const Conv2dOptions& options = {});
Var conv2d(const Var& x, const Var& weight, const Var& bias, const Conv2dOptions& options = {});
// x: (B, F, OH, OW), weight: (F, C, KH, KW) (PyTorch's (in, out, KH, KW)), bias: (C,) -> (B, C, H, W)
Var conv_transpose2d(const Var& x, const Var& weight, const Conv2dOptions& options = {});
Var conv_transpose2d(const Var& x, const Var& weight, const Var& bias, const Conv2dOptions& options = {});

}  // namespace tapegrad
