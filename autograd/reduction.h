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

#include <array>
#include <initializer_list>
#include <vector>

#include "autograd/tape.h"

namespace tapegrad {

// A list of axes (Python-style, -1 is the last), held inline: reductions run every training step and must not
// allocate (Note [arena]). Built implicitly from {0, 2} or from a std::vector<int>.
class Axes {
 public:
  Axes(std::initializer_list<int> axes) { assign(axes.begin(), axes.end()); }
  Axes() = default;  // no axes: reduce over all of them (PyTorch's empty dim list)
  Axes(const std::vector<int>& axes) { assign(axes.data(), axes.data() + axes.size()); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const int* begin() const { return axes_.data(); }
  const int* end() const { return axes_.data() + size_; }
  int operator[](size_t i) const { return axes_[i]; }

 private:
  void assign(const int* first, const int* last) {
    if (last - first > kMaxRank) fail<ValueError>("axes: at most ", kMaxRank, " axes, got ", last - first);
    for (; first != last; ++first) axes_[size_++] = *first;
  }
  std::array<int, kMaxRank> axes_{};
  size_t size_ = 0;
};

Var sum(const Var& x, const Axes& axes, bool keepdims = false);
Var sum(const Var& x);  // all axes, shape ()
Var mean(const Var& x, const Axes& axes, bool keepdims = false);
Var mean(const Var& x);  // all axes, shape ()
Var max(const Var& x, const Axes& axes, bool keepdims = false);
Var logsumexp(const Var& x, const Axes& axes, bool keepdims = false);

// Along one Python-style axis; the result has x's shape.
Var softmax(const Var& x, int axis);
Var log_softmax(const Var& x, int axis);

}  // namespace tapegrad
