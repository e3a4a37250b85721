// The blocked GEMM (ops/gemm.cpp) against its naive twin (ops/gemm.h), and its thread-count determinism.
// Shapes are written (M, K, N): op(A) is (M, K), op(B) is (K, N). Odd sizes exercise the zero-padded edge panels,
// K > 384 the several K blocks (Note [gemm blocking]).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "ops/error.h"
#include "ops/gemm.h"
#include "ops/parallel.h"

using namespace tapegrad;
using namespace tapegrad::ops;

namespace {

struct Dims {
  int64_t M, K, N;
};

template <class T>
std::vector<T> random_values(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<T> dist(-1, 1);
  std::vector<T> v(static_cast<size_t>(n));
  for (T& x : v) x = dist(rng);
  return v;
}

// One problem with stored operands; `pad` widens every leading dimension so strides are tested too.
template <class T>
struct Problem {
  Dims d;
  Trans ta, tb;
  int64_t lda, ldb, ldc;
  std::vector<T> A, B, C;
  Problem(Dims dims, Trans trans_a, Trans trans_b, int64_t pad, std::mt19937& rng)
      : d(dims), ta(trans_a), tb(trans_b) {
    const int64_t a_rows = ta == Trans::yes ? d.K : d.M, b_rows = tb == Trans::yes ? d.N : d.K;
    lda = (ta == Trans::yes ? d.M : d.K) + pad;
    ldb = (tb == Trans::yes ? d.K : d.N) + pad;
    ldc = d.N + pad;
    A = random_values<T>(a_rows * lda, rng);
    B = random_values<T>(b_rows * ldb, rng);
    C = random_values<T>(d.M * ldc, rng);
  }
  std::vector<T> run(T alpha, T beta, std::vector<T> c, bool reference) const {
    auto* f = reference ? &naive::gemm<T> : &gemm<T>;
    f(ta, tb, d.M, d.N, d.K, alpha, A.data(), lda, B.data(), ldb, beta, c.data(), ldc, nullptr);
    return c;
  }
  // Error bound scale for C(i, j): |alpha| sum_k |a_ik b_kj| + |beta c_ij| (the terms whose roundings add up).
  T scale(int64_t i, int64_t j, T alpha, T beta, const std::vector<T>& c0) const {
    double s = 0;
    for (int64_t k = 0; k < d.K; ++k) {
      const T a = ta == Trans::yes ? A[k * lda + i] : A[i * lda + k];
      const T b = tb == Trans::yes ? B[j * ldb + k] : B[k * ldb + j];
      s += std::abs(static_cast<double>(a) * b);
    }
    return static_cast<T>(std::abs(alpha) * s + (beta == T(0) ? 0 : std::abs(beta * c0[i * ldc + j])));
  }
};

// Checks the fast result against the naive one, element by element, relative to the rounding-error scale.
template <class T>
void check_against_naive(const Problem<T>& p, T alpha, T beta, const std::vector<T>& c0) {
  // Float: a K-term FMA chain is within about K * eps of the exact sum (Higham, "Accuracy and Stability of
  // Numerical Algorithms", 2002, section 3.1). Double: 1e-12 covers the K used here with a wide margin.
  const double tol = sizeof(T) == 4 ? 1.2e-7 * static_cast<double>(p.d.K + 2) : 1e-12;
  const std::vector<T> ours = p.run(alpha, beta, c0, false), ref = p.run(alpha, beta, c0, true);
  int64_t bad = 0;
  for (int64_t i = 0; i < p.d.M; ++i)
    for (int64_t j = 0; j < p.d.N; ++j) {
      const double err = std::abs(static_cast<double>(ours[i * p.ldc + j]) - ref[i * p.ldc + j]);
      const double bound = tol * p.scale(i, j, alpha, beta, c0) + std::numeric_limits<T>::min();
      if (!(err <= bound) && bad++ < 3)
        FAIL_CHECK("C(", i, ", ", j, ") = ", ours[i * p.ldc + j], ", naive ", ref[i * p.ldc + j], " for M=", p.d.M,
                   " K=", p.d.K, " N=", p.d.N, " ta=", p.ta == Trans::yes, " tb=", p.tb == Trans::yes);
    }
  CHECK(bad == 0);
  // Padding columns of C (past N) are not part of the output and must be left alone.
  for (int64_t i = 0; i < p.d.M; ++i)
    for (int64_t j = p.d.N; j < p.ldc; ++j)
      CHECK(std::memcmp(&ours[i * p.ldc + j], &c0[i * p.ldc + j], sizeof(T)) == 0);
}

constexpr Trans kNo = Trans::no, kYes = Trans::yes;
constexpr Trans kForms[4][2] = {{kNo, kNo}, {kYes, kNo}, {kNo, kYes}, {kYes, kYes}};

template <class T>
bool bit_identical(const std::vector<T>& x, const std::vector<T>& y) {
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(T)) == 0;
}

}  // namespace

TEST_CASE_TEMPLATE("gemm: matches the naive triple loop for every transpose form and odd sizes", T, float, double) {
  std::mt19937 rng(1234);
  const Dims shapes[] = {{1, 1, 1},    {1, 50, 1},   {30, 1, 40},   {17, 33, 65},   {5, 3, 200},
                         {7, 300, 9},  {13, 600, 3}, {64, 257, 31}, {300, 200, 70}, {128, 784, 400}};
  // 1 thread and all: a product within one row of tiles packs each B panel just before its use, a taller one
  // (or one cut into more row tiles for the threads) packs B up front (Note [gemm packing B per panel]).
  for (int threads : {1, 0}) {
    set_num_threads(threads);
    for (const Dims& d : shapes)
      for (const auto& form : kForms) {
        // The big shape is slow in the naive loop: check it once per transpose form in float, once in double.
        if (d.M == 128 && sizeof(T) == 8 && (form[0] == kYes || form[1] == kYes)) continue;
        const Problem<T> p(d, form[0], form[1], /*pad=*/d.K % 3, rng);
        check_against_naive(p, T(1), T(0), p.C);
      }
  }
  set_num_threads(0);
}

TEST_CASE_TEMPLATE("gemm: beta = 0 overwrites NaN in C, beta = 1 accumulates, alpha and beta scale", T, float,
                   double) {
  std::mt19937 rng(99);
  for (const Dims& d : {Dims{17, 33, 65}, Dims{1, 5, 1}, Dims{40, 300, 37}})
    for (const auto& form : kForms) {
      const Problem<T> p(d, form[0], form[1], /*pad=*/1, rng);
      std::vector<T> nan_c(p.C.size(), std::numeric_limits<T>::quiet_NaN());
      const std::vector<T> out = p.run(T(0.5), T(0), nan_c, false);
      for (int64_t i = 0; i < d.M; ++i)
        for (int64_t j = 0; j < d.N; ++j) REQUIRE(std::isfinite(out[i * p.ldc + j]));
      check_against_naive(p, T(0.5), T(0), nan_c);
      check_against_naive(p, T(1), T(1), p.C);
      check_against_naive(p, T(0.5), T(-2), p.C);
    }
}

TEST_CASE("gemm: products larger than the packing budget are done in super-blocks that match the naive loop") {
  // 1000 x 4500 floats of A exceed half of kPackBudget (ops/gemm.cpp), so the rows are cut into super-blocks
  // (of 864 rows). The naive loop checks the rows around that cut and the last ones, to keep the test fast.
  std::mt19937 rng(5);
  const int64_t M = 1000, K = 4500, N = 40;
  for (const auto& form : {kForms[0], kForms[3]}) {
    const Problem<float> p(Dims{M, K, N}, form[0], form[1], 0, rng);
    const std::vector<float> ours = p.run(1.f, 0.f, p.C, false);
    for (const int64_t r0 : {int64_t{850}, int64_t{990}}) {
      const int64_t rows = 10;
      std::vector<float> ref(static_cast<size_t>(rows * p.ldc));
      const float* a = p.ta == kYes ? p.A.data() + r0 : p.A.data() + r0 * p.lda;
      naive::gemm<float>(p.ta, p.tb, rows, N, K, 1.f, a, p.lda, p.B.data(), p.ldb, 0.f, ref.data(), p.ldc);
      double worst = 0;  // entries are sums of 4500 products of U(-1, 1) values: about 20 in size
      for (int64_t i = 0; i < rows * N; ++i) worst = std::max(worst, double(std::abs(ours[r0 * p.ldc + i] - ref[i])));
      CHECK(worst < 1e-3);
    }
  }
}

TEST_CASE("gemm: alpha = 0 or K = 0 only scales C by beta, and never reads A or B") {
  std::vector<float> C = {1, 2, std::numeric_limits<float>::quiet_NaN(), 4};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> A(4, nan), B(4, nan);
  gemm<float>(kNo, kNo, 2, 2, 2, 0.f, A.data(), 2, B.data(), 2, 3.f, C.data(), 2);
  CHECK(C[0] == 3);
  CHECK(C[3] == 12);
  gemm<float>(kNo, kNo, 2, 2, 0, 1.f, nullptr, 1, nullptr, 2, 0.f, C.data(), 2);
  CHECK(C == std::vector<float>{0, 0, 0, 0});
}

TEST_CASE("gemm: results are bit-identical for 1 and 2 threads") {
  std::mt19937 rng(7);
  for (const Dims& d : {Dims{128, 784, 400}, Dims{1024, 512, 300}, Dims{130, 1000, 21}}) {
    for (const auto& form : kForms) {
      const Problem<float> p(d, form[0], form[1], /*pad=*/0, rng);
      set_num_threads(1);
      const std::vector<float> one = p.run(0.7f, 1.f, p.C, false);
      set_num_threads(2);
      const std::vector<float> two = p.run(0.7f, 1.f, p.C, false);
      set_num_threads(0);
      const std::vector<float> all = p.run(0.7f, 1.f, p.C, false);
      CHECK(bit_identical(one, two));
      CHECK(bit_identical(one, all));
    }
  }
  const Problem<double> p(Dims{128, 784, 400}, kYes, kNo, 0, rng);
  set_num_threads(1);
  const std::vector<double> one = p.run(1.0, 0.0, p.C, false);
  set_num_threads(2);
  const std::vector<double> two = p.run(1.0, 0.0, p.C, false);
  set_num_threads(0);
  CHECK(bit_identical(one, two));
}

// Whether the first n columns of an M x K x N product, computed alone (N = n), have the bits of the same columns
// computed as part of the whole, in every transpose form.
bool leading_columns_match(Dims whole, int64_t n, float alpha, uint32_t seed) {
  std::mt19937 rng(seed);
  bool same = true;
  for (const auto& form : kForms) {
    const Problem<float> p(whole, form[0], form[1], 0, rng);
    const std::vector<float> wide = p.run(alpha, 0.f, p.C, false);
    std::vector<float> narrow(static_cast<size_t>(whole.M * n));
    gemm<float>(p.ta, p.tb, whole.M, n, whole.K, alpha, p.A.data(), p.lda, p.B.data(), p.ldb, 0.f, narrow.data(), n);
    for (int64_t i = 0; i < whole.M; ++i)
      same = same && std::memcmp(&wide[i * p.ldc], &narrow[i * n], n * sizeof(float)) == 0;
  }
  return same;
}

TEST_CASE("gemm: a narrow edge panel (half-width vectors) gives the bits of a full-width one") {
  // N = 20 ends in a 4-column panel, run on half-width vectors where the build has them (Note [half-width edge
  // panel]); N = 24 ends in an 8-column panel on full-width ones. Columns 0..19 must match bit for bit.
  CHECK(leading_columns_match(Dims{13, 300, 24}, 20, 0.5f, 12));
}

TEST_CASE("gemm: a column's bits depend neither on N nor on whether A was packed") {
  // N = 48 packs A (3 panels of B); N = 32 reads A in place (2 panels). Note [gemm determinism] says each element
  // still gets the same FMA chain, so the first 32 columns must match bit for bit.
  CHECK(leading_columns_match(Dims{37, 700, 48}, 32, 1.f, 11));
}

TEST_CASE_TEMPLATE("gemm: a bias gives the bits of C's rows set to it with beta = 1, and matches the naive loop", T,
                   float, double) {
  std::mt19937 rng(21);
  // Dims are (M, K, N): K = 0 (C is the bias alone), N = 0, and K = 20,000, whose 300 columns are cut into two
  // super-blocks (the second starts at column 192 with AVX-512's 32-float panels), for one form.
  const Dims sizes[] = {{1, 1, 1},   {3, 17, 5},  {17, 3, 1},  {13, 300, 24},
                        {37, 700, 48}, {50, 20, 33}, {25, 0, 100}, {25, 100, 0}, {13, 20000, 300}};
  for (const Dims& d : sizes)
    for (const auto& form : kForms) {
      if (d.K == 20000 && (sizeof(T) != 4 || form[0] == kYes || form[1] == kYes)) continue;
      CAPTURE(d.M);
      CAPTURE(d.N);
      CAPTURE(d.K);
      const Problem<T> p(d, form[0], form[1], 2, rng);
      const std::vector<T> bias = random_values<T>(d.N, rng);
      std::vector<T> two_pass = p.C, fused = p.C, reference = p.C;
      for (int64_t i = 0; i < d.M; ++i) std::copy(bias.begin(), bias.end(), two_pass.begin() + i * p.ldc);
      gemm<T>(p.ta, p.tb, d.M, d.N, d.K, T(0.5), p.A.data(), p.lda, p.B.data(), p.ldb, T(1), two_pass.data(), p.ldc);
      gemm<T>(p.ta, p.tb, d.M, d.N, d.K, T(0.5), p.A.data(), p.lda, p.B.data(), p.ldb, T(0), fused.data(), p.ldc,
              bias.data());
      if (d.K < 20000)
        naive::gemm<T>(p.ta, p.tb, d.M, d.N, d.K, T(0.5), p.A.data(), p.lda, p.B.data(), p.ldb, T(0), reference.data(),
                       p.ldc, bias.data());
      for (int64_t i = 0; i < d.M; ++i) {  // padding columns (past N) left alone, as without a bias
        CHECK(std::memcmp(&fused[i * p.ldc], &two_pass[i * p.ldc], p.ldc * sizeof(T)) == 0);
        for (int64_t j = 0; j < d.N && d.K < 20000; ++j)  // the naive loop only where it is quick
          CHECK(static_cast<double>(fused[i * p.ldc + j]) ==
                doctest::Approx(reference[i * p.ldc + j]).epsilon(sizeof(T) == 4 ? 1e-4 : 1e-12));
      }
    }
  std::vector<T> c(4, T(0)), a(4, T(1)), bias(2, T(1));
  CHECK_THROWS_WITH_AS(gemm<T>(kNo, kNo, 2, 2, 2, T(1), a.data(), 2, a.data(), 2, T(1), c.data(), 2, bias.data()),
                       doctest::Contains("gemm: a bias needs beta = 0, got beta = 1"), ValueError);
}

TEST_CASE("gemm: bad sizes and strides throw and name the op") {
  std::vector<float> x(64);
  CHECK_THROWS_WITH_AS(gemm<float>(kNo, kNo, -1, 2, 2, 1.f, x.data(), 2, x.data(), 2, 0.f, x.data(), 2),
                       "gemm: sizes must be >= 0, got M=-1, N=2, K=2", ValueError);
  CHECK_THROWS_WITH_AS(gemm<float>(kNo, kNo, 3, 4, 5, 1.f, x.data(), 4, x.data(), 4, 0.f, x.data(), 4),
                       "gemm: lda must be >= 5 for A stored as (3, 5), got 4", ValueError);
  CHECK_THROWS_WITH_AS(gemm<float>(kNo, kYes, 3, 4, 5, 1.f, x.data(), 5, x.data(), 4, 0.f, x.data(), 4),
                       "gemm: ldb must be >= 5 for B stored as (4, 5), got 4", ValueError);
  CHECK_THROWS_WITH_AS(gemm<float>(kYes, kNo, 3, 4, 5, 1.f, x.data(), 3, x.data(), 4, 0.f, x.data(), 3),
                       "gemm: ldc must be >= 4 for C of shape (3, 4), got 3", ValueError);
}
