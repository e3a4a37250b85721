#include "ops/elementwise.h"

#include <cstring>

namespace tapegrad::ops {

int64_t BroadcastPlan::rows() const {
  int64_t n = 1;
  for (int i = 0; i + 1 < rank; ++i) n *= dims[i];
  return n;
}

void BroadcastPlan::row_offsets(int64_t row, int64_t& offset_a, int64_t& offset_b) const {
  offset_a = offset_b = 0;
  for (int axis = rank - 2; axis >= 0; --axis) {
    const int64_t i = row % dims[axis];
    row /= dims[axis];
    offset_a += i * stride_a[axis];
    offset_b += i * stride_b[axis];
  }
}

BroadcastPlan plan_broadcast(const Shape& a, const Shape& b, const Shape& out) {
  const auto sa = broadcast_strides(a, out), sb = broadcast_strides(b, out);
  BroadcastPlan plan;
  for (int axis = 0; axis < out.rank(); ++axis) {
    if (out[axis] == 1) continue;  // size-1 axes move nothing
    const int last = plan.rank - 1;
    // Merge with the previous kept axis when both operands walk the pair as one contiguous run.
    if (last >= 0 && plan.stride_a[last] == sa[axis] * out[axis] && plan.stride_b[last] == sb[axis] * out[axis]) {
      plan.dims[last] *= out[axis];
      plan.stride_a[last] = sa[axis];
      plan.stride_b[last] = sb[axis];
      continue;
    }
    plan.dims[plan.rank] = out[axis];
    plan.stride_a[plan.rank] = sa[axis];
    plan.stride_b[plan.rank] = sb[axis];
    ++plan.rank;
  }
  return plan;
}

void add_into(Tensor& dst, const Tensor& src) {
  if (!(dst.shape() == src.shape()) || dst.dtype() != src.dtype())
    fail<ShapeError>("add_into: gradient shape must match, got ", src.shape(), " into ", dst.shape());
  dispatch(dst.dtype(), [&]<class T>() {
    T* d = dst.data<T>();
    const T* s = src.data<T>();
    parallel_for(dst.numel(), kElementwiseGrain, [&](int64_t i, int64_t end) {
      simd::zip(d + i, 1, s + i, 1, d + i, end - i, [](auto x, auto y) { return x + y; });
    });
  });
}

void zero(Tensor& dst) {
  if (dst.nbytes()) std::memset(dst.raw(), 0, dst.nbytes());
}

}  // namespace tapegrad::ops
