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

// Note [transpose tiles]: when one buffer is walked contiguously along the last axis but the other jumps (a
// transpose), each access to the jumping one touches a new cache line. If another axis t is contiguous in it,
// the copy runs in kTile x kTile tiles of (t, last): the kTile lines a tile touches stay in L1 meanwhile. Only the visiting order
// changes; every dst element is still written once (Note [layout determinism]).
constexpr int64_t kTile = 32;

template <class T>
void tiled_copy(const Plan& p, int t, const T* src, T* dst, bool accumulate) {
  const int last = p.rank - 1;
  const int64_t rows_t = p.dims[t], cols = p.dims[last];
  const int64_t s_t = p.src[t], d_t = p.dst[t], s_c = p.src[last], d_c = p.dst[last];
  // The remaining axes, each visited whole per tile band.
  Strides odims{}, osrc{}, odst{};
  int orank = 0;
  int64_t outer = 1;
  for (int a = 0; a < last; ++a)
    if (a != t) odims[orank] = p.dims[a], osrc[orank] = p.src[a], odst[orank] = p.dst[a], outer *= p.dims[a], ++orank;
  const int64_t bands = (rows_t + kTile - 1) / kTile;
  // d[k] (=|+=) s[k * stride] for k < n, d contiguous; the flag is hoisted out of the loop.
  auto tile_row = [accumulate](const T* s, int64_t stride, T* d, int64_t n) {
    if (accumulate) for (int64_t k = 0; k < n; ++k) d[k] += s[k * stride];
    else for (int64_t k = 0; k < n; ++k) d[k] = s[k * stride];
  };
  parallel_for(outer * bands, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      int64_t rest = u / bands, so = 0, dof = 0;
      for (int a = orank - 1; a >= 0; --a) {
        so += (rest % odims[a]) * osrc[a];
        dof += (rest % odims[a]) * odst[a];
        rest /= odims[a];
      }
      const int64_t i0 = (u % bands) * kTile, i1 = std::min(rows_t, i0 + kTile);
      for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
        const int64_t j1 = std::min(cols, j0 + kTile);
        // Inner loop along whichever axis dst is contiguous in: sequential stores, strided loads within the tile.
        if (d_c == 1) {
          for (int64_t i = i0; i < i1; ++i) tile_row(src + so + i * s_t + j0 * s_c, s_c, dst + dof + i * d_t + j0, j1 - j0);
        } else {
          for (int64_t j = j0; j < j1; ++j) tile_row(src + so + i0 * s_t + j * s_c, s_t, dst + dof + i0 * d_t + j * d_c, i1 - i0);
        }
      }
    }
  }, kTile * cols);
}

template <class T>
void strided_copy(const Shape& dims, const T* src, const Strides& src_strides, T* dst, const Strides& dst_strides,
                  bool accumulate) {
  if (dims.numel() == 0) return;
  const Plan p = simplify(dims, src_strides, dst_strides);
  const int last = p.rank - 1;
  if (p.rank >= 2 && p.dims[last] >= kTile && (p.src[last] == 1) != (p.dst[last] == 1)) {
    const bool src_jumps = p.src[last] != 1;  // then look for an axis that reads src contiguously, else dst
    for (int t = 0; t < last; ++t)
      if ((src_jumps ? p.src[t] : p.dst[t]) == 1 && p.dims[t] >= kTile) return tiled_copy(p, t, src, dst, accumulate);
  }
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
