// Matrix products: matmul and the fused dense layer `linear`.
//
// Shapes: M rows, K the contracted (inner) dimension, N columns, B a batch of independent products.
//   matmul: (M, K) @ (K, N) -> (M, N);  (B, M, K) @ (B, K, N) -> (B, M, N);  (B, M, K) @ (K, N) -> (B, M, N)
//   linear: x (..., in), w (out, in), b (out,) -> x w^T + b: (..., out)   [PyTorch's nn.Linear layout]
// Gradients (Y = A B): dA = dY B^T, dB = A^T dY. They are written with gemm's transpose flags and beta = 1,
// so nothing is transposed in memory and the products accumulate straight into the input gradients.
#pragma once

#include "autograd/tape.h"

namespace tapegrad {

Var matmul(const Var& a, const Var& b);

// x: (..., in), w: (out, in), b: (out,). y = x w^T (+ b), in one gemm pass that starts from the bias.
Var linear(const Var& x, const Var& w);
Var linear(const Var& x, const Var& w, const Var& b);

}  // namespace tapegrad
