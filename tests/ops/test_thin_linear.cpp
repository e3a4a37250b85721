// ops/thin_linear.cpp against the definition, in both dtypes, odd sizes, accumulation and bad arguments.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "ops/error.h"
#include "ops/thin_linear.h"

using namespace tapegrad;
using namespace tapegrad::ops;

TEST_CASE_TEMPLATE("thin_linear_forward and thin_linear_weight_grad match their definitions", T, float, double) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<T> dist(-1, 1);
  const double tol = sizeof(T) == 4 ? 1e-4 : 1e-12;
  for (int64_t rows : {1, 3, 17})
    for (int64_t in : {1, 3, 17, 517})
      for (int64_t out : {1, 2, 3, 4}) {
        CAPTURE(rows);
        CAPTURE(in);
        CAPTURE(out);
        std::vector<T> x(rows * in), w(out * in), bias(out), dy(rows * out), y(rows * out), dw(out * in), dw0(out * in);
        for (auto* v : {&x, &w, &bias, &dy, &dw0})
          for (T& e : *v) e = dist(rng);
        thin_linear_forward<T>(x.data(), w.data(), bias.data(), y.data(), rows, in, out);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < out; ++j) {
            double expected = bias[j];
            for (int64_t k = 0; k < in; ++k) expected += double(x[r * in + k]) * w[j * in + k];
            CHECK(y[r * out + j] == doctest::Approx(expected).epsilon(tol));
          }
        for (bool accumulate : {false, true}) {
          dw = dw0;
          thin_linear_weight_grad<T>(dy.data(), x.data(), dw.data(), rows, in, out, accumulate);
          for (int64_t j = 0; j < out; ++j)
            for (int64_t k = 0; k < in; ++k) {
              double expected = accumulate ? dw0[j * in + k] : 0.0;
              for (int64_t r = 0; r < rows; ++r) expected += double(dy[r * out + j]) * x[r * in + k];
              CHECK(dw[j * in + k] == doctest::Approx(expected).epsilon(tol));
            }
        }
      }
  std::vector<T> a(10, T(1));
  CHECK_THROWS_WITH_AS(thin_linear_forward<T>(a.data(), a.data(), nullptr, a.data(), 1, 2, 5),
                       doctest::Contains("thin_linear_forward: out must be 1..4, got 5"), ValueError);
  CHECK_THROWS_WITH_AS(thin_linear_weight_grad<T>(a.data(), a.data(), a.data(), 1, 2, 0, false),
                       doctest::Contains("thin_linear_weight_grad: out must be 1..4, got 0"), ValueError);
}
