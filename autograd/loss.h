// Loss functions, each with a fused, numerically stable forward and an explicit backward.
//
// Shape letters: B = batch, C = classes. `reduction` follows PyTorch: none keeps one loss per element (or per
// row for cross_entropy), sum adds them, mean divides the sum by their count; sum and mean give shape ().
//
//   binary_cross_entropy_with_logits(l, t) = max(l, 0) - l t + log1p(exp(-|l|))
//       the softplus form of -t log sigmoid(l) - (1 - t) log(1 - sigmoid(l)): no exp of a positive number, so it
//       is finite for any l (l = 100, t = 0 gives exactly 100). d/dl = sigmoid(l) - t, d/dt = -l.
//   cross_entropy(x, k) = -log_softmax(x)_k = logsumexp(x) - x_k, per row (fused log_softmax + NLL).
//       d/dx = softmax(x) - onehot(k).
//   mse_loss(p, t) = (p - t)^2.  d/dp = 2 (p - t), d/dt = -2 (p - t).
#pragma once

#include <cstdint>
#include <span>

#include "autograd/tape.h"

namespace tapegrad {

enum class Reduction { none, sum, mean };

// logits, targets: the same shape (targets may require a gradient too).
Var binary_cross_entropy_with_logits(const Var& logits, const Var& targets, Reduction reduction = Reduction::mean);

// sum over the last axis of binary_cross_entropy_with_logits(logits, targets, none), fused (Note [BCE summed per
// row]): logits (..., D) -> (...). targets (..., D) broadcast to logits over the leading axes (NumPy rules), so
// targets (B, D) serve logits (K, B, D) without a copy.
Var binary_cross_entropy_with_logits_row_sum(const Var& logits, const Var& targets);
// The same with the targets row of each logits row named: logits (..., D), targets (T, D), target_rows one index in
// [0, T) per row of logits (in row-major order) -> (...). For batches that mix layouts, such as M2's labelled rows
// (one per image) and unlabelled rows (one per image and class) in one decoder pass.
Var binary_cross_entropy_with_logits_row_sum(const Var& logits, const Var& targets,
                                             std::span<const int64_t> target_rows);

// logits: (B, C); labels: B class indices in [0, C). Result (B,) for none, () otherwise.
Var cross_entropy(const Var& logits, std::span<const int32_t> labels, Reduction reduction = Reduction::mean);

// pred, target: the same shape.
Var mse_loss(const Var& pred, const Var& target, Reduction reduction = Reduction::mean);

}  // namespace tapegrad
