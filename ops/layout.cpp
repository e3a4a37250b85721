// Strided copies; see ops/layout.h for the contract and Note [layout determinism].
#include "ops/layout.h"

#include <algorithm>

#include "ops/parallel.h"

namespace tapegrad::ops {

Strides contiguous_strides(const Shape& shape) {
  Strides strides{};
  int64_t stride = 1;
  for (int a = shape.rank() - 1; a >= 0; --a) {
    strides[a] = stride;
    stride *= shape[a];
  }
  return strides;
}

namespace {
// The loop nest after dropping size-1 axes and merging neighbours that are contiguous in both buffers, so that
// a permute of a (B, M, N) tensor to (B, N, M) runs as B * N rows of M rather than B * N * M single elements.
struct Plan {
  int rank = 0;
  Strides dims{}, src{}, dst{};
};

Plan simplify(const Shape& shape, const Strides& src, const Strides& dst) {
  Plan p;
  for (int a = 0; a < shape.rank(); ++a) {
    if (shape[a] == 1) continue;
    const int last = p.rank - 1;
    if (last >= 0 && p.src[last] == src[a] * shape[a] && p.dst[last] == dst[a] * shape[a]) {
      p.dims[last] *= shape[a];
      p.src[last] = src[a];
      p.dst[last] = dst[a];
      continue;
    }
    p.dims[p.rank] = shape[a];
    p.src[p.rank] = src[a];
    p.dst[p.rank] = dst[a];
    ++p.rank;
  }
  if (p.rank == 0) {  // a single element
    p.rank = 1;
    p.dims[0] = 1;
    p.src[0] = p.dst[0] = 1;
  }
  return p;
}
}  // namespace

template <class T>
void strided_copy(const Shape& dims, const T* src, const Strides& src_strides, T* dst, const Strides& dst_strides,
                  bool accumulate) {
  if (dims.numel() == 0) return;
  const Plan p = simplify(dims, src_strides, dst_strides);
  const int outer_rank = p.rank - 1;
  const int64_t inner = p.dims[outer_rank], s_in = p.src[outer_rank], d_in = p.dst[outer_rank];
  int64_t rows = 1;
  for (int a = 0; a < outer_rank; ++a) rows *= p.dims[a];
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / inner);
  parallel_for(rows, grain, [&](int64_t row_begin, int64_t row_end) {
    // Odometer over the outer axes, started by division once per chunk.
    Strides index{};
    int64_t so = 0, dof = 0, rest = row_begin;
    for (int a = outer_rank - 1; a >= 0; --a) {
      index[a] = rest % p.dims[a];
      rest /= p.dims[a];
      so += index[a] * p.src[a];
      dof += index[a] * p.dst[a];
    }
    for (int64_t row = row_begin; row < row_end; ++row) {
      const T* s = src + so;
      T* d = dst + dof;
      if (s_in == 1 && d_in == 1) {
        if (accumulate) for (int64_t j = 0; j < inner; ++j) d[j] += s[j];
        else std::copy(s, s + inner, d);
      } else if (accumulate) {
        for (int64_t j = 0; j < inner; ++j) d[j * d_in] += s[j * s_in];
      } else {
        for (int64_t j = 0; j < inner; ++j) d[j * d_in] = s[j * s_in];
      }
      for (int a = outer_rank - 1; a >= 0; --a) {
        so += p.src[a];
        dof += p.dst[a];
        if (++index[a] < p.dims[a]) break;
        so -= p.src[a] * p.dims[a];
        dof -= p.dst[a] * p.dims[a];
        index[a] = 0;
      }
    }
  }, inner);
}

template void strided_copy<float>(const Shape&, const float*, const Strides&, float*, const Strides&, bool);
template void strided_copy<double>(const Shape&, const double*, const Strides&, double*, const Strides&, bool);

void strided_copy(const Shape& dims, const Tensor& src, int64_t src_offset, const Strides& src_strides, Tensor& dst,
                  int64_t dst_offset, const Strides& dst_strides, bool accumulate) {
  if (src.dtype() != dst.dtype())
    fail<ValueError>("strided_copy: dtypes must match, got ", dtype_name(src.dtype()), " and ", dtype_name(dst.dtype()));
  dispatch(src.dtype(), [&]<class T>() {
    strided_copy<T>(dims, src.data<T>() + src_offset, src_strides, dst.data<T>() + dst_offset, dst_strides, accumulate);
  });
}

void permute_copy(const Tensor& x, std::span<const int> axes, Tensor& y) {
  // Walk y in order (contiguous writes) and read x through its strides taken in the permuted order.
  const Strides x_strides = contiguous_strides(x.shape());
  Strides src{};
  for (size_t d = 0; d < axes.size(); ++d) src[d] = x_strides[axes[d]];
  strided_copy(y.shape(), x, 0, src, y, 0, contiguous_strides(y.shape()), /*accumulate=*/false);
}

namespace naive {
void permute_copy(const Tensor& x, std::span<const int> axes, Tensor& y) {
  const Shape& shape = y.shape();
  const Strides x_strides = contiguous_strides(x.shape());
  for (int64_t flat = 0; flat < shape.numel(); ++flat) {
    int64_t rest = flat, offset = 0;
    for (int d = shape.rank() - 1; d >= 0; --d) {
      offset += (rest % shape[d]) * x_strides[axes[d]];
      rest /= shape[d];
    }
    y.set_item(flat, x.item(offset));
  }
}
}  // namespace naive

}  // namespace tapegrad::ops
