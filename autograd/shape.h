// Shape ops: reshape, permute, transpose, slice, concat, stack, broadcast_to, index_select, gather, one_hot.
//
// Tensors are contiguous and row-major, so every op that reorders elements copies them (ops/layout.h) and its
// backward copies (or adds) them back: the gradient of a pure rearrangement is the inverse rearrangement.
// Ops that read an element more than once (broadcast_to, index_select with repeated indices, gather) sum the
// gradients of the copies. Index arguments are std::span<const int64_t> (std::vector<int64_t> converts),
// validated against the axis they index: out-of-range indices throw ValueError naming op, index and size.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>

#include "autograd/tape.h"

namespace tapegrad {

// Same elements, new shape; one dimension may be -1 (inferred). Copies (the tape owns each result's memory).
Var reshape(const Var& x, std::span<const int64_t> shape);
Var reshape(const Var& x, std::initializer_list<int64_t> shape);
Var reshape(const Var& x, const Shape& shape);

// y.shape[d] = x.shape[axes[d]]; axes a permutation of [0, rank), Python-style negatives allowed.
Var permute(const Var& x, std::span<const int> axes);
Var permute(const Var& x, std::initializer_list<int> axes);
Var transpose(const Var& x, int axis0, int axis1);

// x[..., start:end, ...] on `axis` (step 1). Negative start/end count from the end, as in Python; the range
// itself must lie inside the axis (no clamping: an out-of-range slice is a bug worth reporting).
Var slice(const Var& x, int axis, int64_t start, int64_t end);

// Joins inputs along an existing axis (concat) or a new one inserted at `axis` (stack). The same Var may appear
// more than once; its gradient receives every piece.
Var concat(std::span<const Var> vars, int axis);
Var concat(std::initializer_list<Var> vars, int axis);
Var stack(std::span<const Var> vars, int axis);
Var stack(std::initializer_list<Var> vars, int axis);

// NumPy broadcasting of x to `shape`; the gradient sums over the broadcast axes.
Var broadcast_to(const Var& x, const Shape& shape);

// y = x taken at `indices` along `axis`: y.shape[axis] = indices.size(). Gradient: scatter-add (repeats add up).
Var index_select(const Var& x, int axis, std::span<const int64_t> indices);
Var index_select(const Var& x, int axis, std::initializer_list<int64_t> indices);

// torch.gather: index is an integer tensor of shape `index_shape` (row-major values in `index`), same rank as x,
// index_shape[d] <= x.shape[d] for d != axis; y has index_shape and
//   y[i_0, .., i_axis, .., i_n] = x[i_0, .., index[i_0, .., i_n], .., i_n].
Var gather(const Var& x, int axis, const Shape& index_shape, std::span<const int64_t> index);

// (N,) labels in [0, num_classes) -> (N, num_classes) of 0 and 1, a constant (no gradient).
Var one_hot(Tape& tape, std::span<const int64_t> labels, int64_t num_classes, DType dtype = DType::f32);

}  // namespace tapegrad
