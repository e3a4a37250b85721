// Reductions over any set of axes, bit-identical for any thread count (Note [determinism]).
//
// Every reduction is done as one or more passes of the 3-d form x: (outer, R, inner) -> y: (outer, inner):
// reduced axes that are adjacent form one pass, separate runs of reduced axes take one pass each.
// Within a pass the summation order of each output is fixed:
//   inner == 1: a row of R contiguous values, summed with SIMD accumulators; rows longer than kReduceChunk are
//               cut into fixed chunks whose partial sums are added serially in chunk order;
//   inner > 1:  rows r = 0..R-1 are added in order into the output vector.
// Threads only decide which outputs (or which chunks) a worker computes, never how partial sums meet.
#pragma once

#include <array>

#include "ops/tensor.h"

namespace tapegrad::ops {

inline constexpr int64_t kReduceChunk = 1 << 15;

using AxisMask = std::array<bool, kMaxRank>;  // reduce[axis] == true: sum over that axis

// Shape of the result with reduced axes kept as size 1 (keepdims).
Shape reduced_shape(const Shape& shape, const AxisMask& reduce);

// y = sum of x over the masked axes; y has reduced_shape(x, mask) (or any shape with that many elements).
void sum_axes(const Tensor& x, const AxisMask& reduce, Tensor& y);
// y = max of x over the masked axes (-inf for an empty reduction).
void max_axes(const Tensor& x, const AxisMask& reduce, Tensor& y);

// The single-pass 3-d kernels, exposed for tests and fused ops.
template <class T>
void sum_3d(const T* x, T* y, int64_t outer, int64_t R, int64_t inner);
template <class T>
void max_3d(const T* x, T* y, int64_t outer, int64_t R, int64_t inner);

namespace naive {
// Reference: long double accumulation in index order.
void sum_axes(const Tensor& x, const AxisMask& reduce, Tensor& y);
void max_axes(const Tensor& x, const AxisMask& reduce, Tensor& y);
}  // namespace naive

}  // namespace tapegrad::ops
