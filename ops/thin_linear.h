// Dense layers with at most kThinOutputs output features (M2's and a 2-D VAE's mu and log-variance heads): the
// products y = x w^T + b and dw = dy^T x as dot products and row updates along the input features.
//
// Note [thin linear]: a GEMM tile is 12 x 32 outputs (AVX-512), so a (1,000 x 500) x (500 x 2) product computes 16
// lanes for every 2 useful columns, and its weight gradient (2 x 1,000) x (1,000 x 500) packs all of x for a
// 2-row result: M2's two 500 -> 2 heads took 1.8 ms of a 55 ms step at 1 thread. Here the weight rows (at most 4)
// stay in L1 and x is read once, along its rows. Bits: each output row is summed over the input features in a
// fixed order of its own (SIMD lanes, then a horizontal sum), whatever the batch size or thread count, so a
// layer gives the same values for an image alone or in any batch; dw is summed over rows in row order.
#pragma once

#include <cstdint>

namespace tapegrad::ops {

inline constexpr int64_t kThinOutputs = 4;

// y (rows, out) = x (rows, in) w^T (w: (out, in)) + bias (out values, or null); out <= kThinOutputs.
template <class T>
void thin_linear_forward(const T* x, const T* w, const T* bias, T* y, int64_t rows, int64_t in, int64_t out);

// dw (out, in) = dy^T x, or dw += dy^T x with `accumulate`; dy (rows, out), x (rows, in); out <= kThinOutputs.
template <class T>
void thin_linear_weight_grad(const T* dy, const T* x, T* dw, int64_t rows, int64_t in, int64_t out, bool accumulate);

}  // namespace tapegrad::ops
