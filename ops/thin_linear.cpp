// Note [thin linear] in ops/thin_linear.h.
#include "ops/thin_linear.h"

#include <algorithm>

#include "ops/error.h"
#include "ops/parallel.h"
#include "ops/simd.h"

namespace tapegrad::ops {

template <class T>
void thin_linear_forward(const T* x, const T* w, const T* bias, T* y, int64_t rows, int64_t in, int64_t out) {
  using B = simd::Batch<T>;
  constexpr int64_t W = simd::width<T>;
  if (out < 1 || out > kThinOutputs)
    fail<ValueError>("thin_linear_forward: out must be 1..", kThinOutputs, ", got ", out);
  parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(in, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * in;
      B acc[kThinOutputs] = {B(T(0)), B(T(0)), B(T(0)), B(T(0))};
      int64_t k = 0;
      for (; k + W <= in; k += W) {
        const B xv = B::load_unaligned(xr + k);
        for (int64_t j = 0; j < out; ++j) acc[j] = simd::fma(xv, B::load_unaligned(w + j * in + k), acc[j]);
      }
      if (k < in) {  // zero-padded tail: the padding adds 0 * 0
        alignas(64) T xt[W] = {}, wt[W] = {};
        std::copy(xr + k, xr + in, xt);
        const B xv = B::load_aligned(xt);
        for (int64_t j = 0; j < out; ++j) {
          std::copy(w + j * in + k, w + j * in + in, wt);
          acc[j] = simd::fma(xv, B::load_aligned(wt), acc[j]);
        }
      }
      for (int64_t j = 0; j < out; ++j) y[r * out + j] = simd::horizontal_sum(acc[j]) + (bias ? bias[j] : T(0));
    }
  }, in * out);
}

template <class T>
void thin_linear_weight_grad(const T* dy, const T* x, T* dw, int64_t rows, int64_t in, int64_t out, bool accumulate) {
  using B = simd::Batch<T>;
  constexpr int64_t W = simd::width<T>;
  if (out < 1 || out > kThinOutputs)
    fail<ValueError>("thin_linear_weight_grad: out must be 1..", kThinOutputs, ", got ", out);
  // Threads own column blocks of dw; each column is summed over the rows in order.
  constexpr int64_t kBlock = 256;
  parallel_for((in + kBlock - 1) / kBlock, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t k0 = blk * kBlock, n = std::min(kBlock, in - k0);
      alignas(64) T sum[kThinOutputs][kBlock + W] = {};
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * in + k0;
        for (int64_t j = 0; j < out; ++j) {
          const B g(dy[r * out + j]);
          int64_t k = 0;
          for (; k + W <= n; k += W)
            simd::fma(g, B::load_unaligned(xr + k), B::load_aligned(&sum[j][k])).store_aligned(&sum[j][k]);
          if (k < n) {
            alignas(64) T xt[W] = {};
            std::copy(xr + k, xr + n, xt);
            simd::fma(g, B::load_aligned(xt), B::load_aligned(&sum[j][k])).store_aligned(&sum[j][k]);
          }
        }
      }
      for (int64_t j = 0; j < out; ++j) {
        T* d = dw + j * in + k0;
        for (int64_t k = 0; k < n; ++k) d[k] = accumulate ? d[k] + sum[j][k] : sum[j][k];
      }
    }
  }, rows * kBlock * out);
}

template void thin_linear_forward<float>(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t);
template void thin_linear_forward<double>(const double*, const double*, const double*, double*, int64_t, int64_t,
                                          int64_t);
template void thin_linear_weight_grad<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, bool);
template void thin_linear_weight_grad<double>(const double*, const double*, double*, int64_t, int64_t, int64_t, bool);

}  // namespace tapegrad::ops
