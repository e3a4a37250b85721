#include <doctest/doctest.h>

#include <cmath>

#include "ops/elementwise.h"
#include "ops/random.h"
#include "ops/simd.h"

using namespace tapegrad;

namespace {
Tensor random_tensor(const Shape& shape, uint64_t seed, DType dtype = DType::f32) {
  Tensor t = Tensor::empty(shape, dtype);
  fill_uniform(t, seed, 0, -2, 2);
  return t;
}
}  // namespace

TEST_CASE("ops::binary equals its naive twin over broadcasting shapes and odd sizes (SIMD tails)") {
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{1}, {1}},       {{3}, {3}},         {{17}, {1}},           {{33}, {33}},       {{1000003}, {1000003}},
      {{7, 5}, {5}},    {{7, 1}, {1, 9}},   {{2, 3, 17}, {3, 1}},  {{}, {4, 4}},       {{64, 785}, {785}},
      {{5, 1, 3}, {1, 4, 1}}, {{300, 130}, {300, 1}},
  };
  for (DType dtype : {DType::f32, DType::f64}) {
    for (const auto& [sa, sb] : cases) {
      CAPTURE(sa);
      CAPTURE(sb);
      const Tensor a = random_tensor(sa, 1, dtype), b = random_tensor(sb, 2, dtype);
      const Shape shape = broadcast_shapes(sa, sb, "test");
      Tensor fast = Tensor::empty(shape, dtype), reference = Tensor::empty(shape, dtype);
      ops::binary(a, b, fast, [](auto x, auto y) { return (x - y) * y; });
      dispatch(dtype, [&]<class T>() { ops::naive::binary<T>(a, b, reference, [](T x, T y) { return (x - y) * y; }); });
      CHECK(bitwise_equal(fast, reference));  // (x - y) * y: two roundings either way, nothing to contract into an FMA
    }
  }
}

TEST_CASE("ops::unary exp stays within 2 ulp-ish of std::exp and is bit-identical for 1 and 2 threads") {
  for (int64_t n : {1, 3, 17, 1000, 1 << 20}) {
    const Tensor x = random_tensor({n}, 3);
    Tensor y1 = Tensor::empty({n}), y2 = Tensor::empty({n});
    set_num_threads(1);
    ops::unary(x, y1, [](auto v) { return xsimd::exp(v); });
    set_num_threads(2);
    ops::unary(x, y2, [](auto v) { return xsimd::exp(v); });
    set_num_threads(0);
    CHECK(bitwise_equal(y1, y2));
    double worst = 0;
    for (int64_t i = 0; i < n; i += std::max<int64_t>(1, n / 1000))
      worst = std::max(worst, std::abs(y1.item(i) - std::exp(x.item(i))) / std::exp(x.item(i)));
    CHECK(worst < 4e-7);
  }
}

TEST_CASE("simd::log1p_exp_neg_abs (float series) stays within 4 ulp of double log1p(exp(-|x|)) on [-80, 80]") {
  using B = xsimd::batch<float>;
  double worst = 0;
  for (int i = -800000; i < 800000; i += 7) {
    const float x = static_cast<float>(i * 1e-4);
    alignas(64) float out[B::size];
    simd::log1p_exp_neg_abs(B(x)).store_aligned(out);
    const double ref = std::log1p(std::exp(-std::fabs(double(x))));
    const double ulp = std::nextafter(float(ref), INFINITY) - float(ref);
    worst = std::max(worst, std::fabs(out[0] - ref) / ulp);
  }
  CHECK(worst < 4);
}

TEST_CASE("add_into rejects a gradient of the wrong shape, naming both shapes") {
  Tensor dst = Tensor::zeros({2, 3}), src = Tensor::zeros({3, 2});
  CHECK_THROWS_WITH_AS(ops::add_into(dst, src), "add_into: gradient shape must match, got (3, 2) into (2, 3)", ShapeError);
}
