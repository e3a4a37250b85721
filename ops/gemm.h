// GEMM: C = alpha * op(A) * op(B) + beta * C, row-major, op(X) = X or X^T.
//
// This is where dense layers and convolutions (via im2col) spend their time. Shapes, in the row-major
// convention used everywhere in tapegrad:
//   op(A): (M, K)   op(B): (K, N)   C: (M, N)
// `lda`, `ldb`, `ldc` are the row strides of A, B, C as stored (so A^T stored as (K, M) has lda >= M).
// With beta = 1 the product is accumulated into C, which is how gradients are summed (dW += x^T dy).
//
// Guarantee: for given inputs the result is bit-identical for any thread count (Note [determinism]):
// threads split the output into tiles, and each output element's K-sum runs in one fixed order.
#pragma once

#include <cstdint>

namespace tapegrad::ops {

enum class Trans : bool { no = false, yes = true };

// bias (N values, or null; only with beta = 0): C = alpha * op(A) * op(B) + bias, bias added to every row, as
// if C's rows had been set to the bias and beta were 1 (bit for bit, Note [gemm bias]).
template <class T>
void gemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc, const T* bias = nullptr);

namespace naive {
// The triple loop, kept as the readable definition and as the tests' reference.
template <class T>
void gemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc, const T* bias = nullptr) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double sum = 0;  // double accumulation: the reference should be more exact than what it checks
      for (int64_t k = 0; k < K; ++k) {
        const T a = trans_a == Trans::yes ? A[k * lda + i] : A[i * lda + k];
        const T b = trans_b == Trans::yes ? B[j * ldb + k] : B[k * ldb + j];
        sum += static_cast<double>(a) * static_cast<double>(b);
      }
      T& c = C[i * ldc + j];
      c = static_cast<T>(alpha * sum + (beta == T(0) ? T(0) : beta * c) + (bias ? bias[j] : T(0)));
    }
}
}  // namespace naive

}  // namespace tapegrad::ops
