// Fused softmax and log_softmax along one axis, forward and backward, with plain `naive::` twins.
//
// Note [stable softmax]: with m = max_r x_r (replaced by 0 when it is -inf, as PyTorch does),
//   log_softmax(x)_r = (x_r - m) - log(sum_k exp(x_k - m)),     softmax(x)_r = exp(x_r - m) / sum_k exp(x_k - m).
// Every exponent is <= 0, so nothing overflows, and the sum is >= 1 unless the whole line is -inf; the
// result is exact for well separated inputs such as [1e4, -1e4, 0] -> [0, -2e4, -1e4].
// Backward (y the forward result, sums along the axis):
//   log_softmax: dx = dy - exp(y) * sum(dy)          softmax: dx = y * (dy - sum(dy * y))
//
// Layout: the axis splits x into (outer, R, inner); each of the outer * inner lines of R values is
// independent. Each line is summed in a fixed order by one thread, and threads only split whole lines, so results are
// bit-identical for any thread count (Note [determinism] in ops/parallel.h).
#pragma once

#include "ops/tensor.h"

namespace tapegrad::ops {

// y = log_softmax(x) or softmax(x) along `axis` (Python-style); y has x's shape and dtype (may alias x).
void log_softmax(const Tensor& x, int axis, Tensor& y);
void softmax(const Tensor& x, int axis, Tensor& y);

// dx += the input gradient, given y (the forward result) and dy; all of one shape.
void log_softmax_backward(const Tensor& dy, const Tensor& y, int axis, Tensor& dx);
void softmax_backward(const Tensor& dy, const Tensor& y, int axis, Tensor& dx);

namespace naive {
// References: one line at a time, long double sums in index order, std:: math.
void log_softmax(const Tensor& x, int axis, Tensor& y);
void softmax(const Tensor& x, int axis, Tensor& y);
void log_softmax_backward(const Tensor& dy, const Tensor& y, int axis, Tensor& dx);
void softmax_backward(const Tensor& dy, const Tensor& y, int axis, Tensor& dx);
}  // namespace naive

}  // namespace tapegrad::ops
