// Differentiable reductions (sum, mean, max, logsumexp) and the softmax family along one axis.
//
// Axes are Python-style (-1 is the last axis) and must be distinct; an EMPTY axes list reduces over ALL axes,
// as PyTorch's sum(x, dim=[]) does, so sum(x, {}) == sum(x) has shape (). keepdims keeps each reduced axis with
// size 1 (PyTorch's keepdim). Bad or repeated axes throw ValueError naming the op.
//
// Gradients (y the result, dy its gradient broadcast back over the reduced axes):
//   sum:        dx = dy
//   mean:       dx = dy / N,        N = number of elements reduced into each output
//   max:        dx = dy * [x == y] / #{x == y}   (split evenly among tied maxima, like torch.amax)
//   logsumexp:  y = m + log(sum exp(x - m)), m = max x (0 when it is +-inf: a line of -inf gives -inf, not NaN);
//               dx = dy * exp(x - y), taken as 0 where x = -inf
//   softmax, log_softmax: fused kernels of ops/softmax.h (Note [stable softmax]).
#pragma once

#include <vector>

#include "autograd/tape.h"

namespace tapegrad {

Var sum(const Var& x, const std::vector<int>& axes, bool keepdims = false);
Var sum(const Var& x);  // all axes, shape ()
Var mean(const Var& x, const std::vector<int>& axes, bool keepdims = false);
Var mean(const Var& x);  // all axes, shape ()
Var max(const Var& x, const std::vector<int>& axes, bool keepdims = false);
Var logsumexp(const Var& x, const std::vector<int>& axes, bool keepdims = false);

// Along one Python-style axis; the result has x's shape.
Var softmax(const Var& x, int axis);
Var log_softmax(const Var& x, int axis);

}  // namespace tapegrad
