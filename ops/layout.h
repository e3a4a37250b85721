// Layout kernels: copies that move elements between row-major tensors without arithmetic. Every shape op
// (permute, transpose, slice, concat, stack, broadcast_to) and its backward is one call of `strided_copy`:
//   dst[offset_d + sum_a i_a * dst_stride_a]  (=, or +=)  src[offset_s + sum_a i_a * src_stride_a]
// for every multi-index i of `dims`. A stride of 0 in src broadcasts; strides that skip elements slice.
//
// Note [layout determinism]: callers guarantee that distinct multi-indices reach distinct dst elements (the
// dst map is injective), so each dst element is written by exactly one iteration. Threads split the rows,
// never an element's sum: results are bit-identical for any thread count.
#pragma once

#include <array>
#include <span>

#include "ops/tensor.h"

namespace tapegrad::ops {

using Strides = std::array<int64_t, kMaxRank>;

// Row-major strides in elements: the last axis has stride 1.
Strides contiguous_strides(const Shape& shape);

template <class T>
void strided_copy(const Shape& dims, const T* src, const Strides& src_strides, T* dst, const Strides& dst_strides,
                  bool accumulate);

// The same on tensors of a runtime dtype, with element offsets into each buffer.
void strided_copy(const Shape& dims, const Tensor& src, int64_t src_offset, const Strides& src_strides, Tensor& dst,
                  int64_t dst_offset, const Strides& dst_strides, bool accumulate);

// y = x with its axes reordered: y.shape[d] = x.shape[axes[d]]. `axes` must be a permutation of [0, rank)
// (checked by the caller) and y preallocated with the permuted shape.
void permute_copy(const Tensor& x, std::span<const int> axes, Tensor& y);

namespace naive {
// Reference: one output element at a time, its multi-index recovered by division.
void permute_copy(const Tensor& x, std::span<const int> axes, Tensor& y);
}  // namespace naive

}  // namespace tapegrad::ops
