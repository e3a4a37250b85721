#include <doctest/doctest.h>

#include <cmath>

#include "ops/parallel.h"
#include "ops/random.h"

using namespace tapegrad;

TEST_CASE("philox4x32-10 matches the Random123 known-answer vectors") {
  // Known-answer tests from Random123's kat_vectors (philox4x32_10).
  auto zero = philox4x32({0, 0, 0, 0}, {0, 0});
  CHECK(zero == std::array<uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  auto ones = philox4x32({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff});
  CHECK(ones == std::array<uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  auto pi = philox4x32({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0});
  CHECK(pi == std::array<uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

TEST_CASE("samples depend only on (seed, offset): same for 1 and 2 threads, and a slice equals an offset draw") {
  Tensor a = Tensor::empty({100000}), b = Tensor::empty({100000}), tail = Tensor::empty({10});
  set_num_threads(1);
  fill_normal(a, 42, 0);
  set_num_threads(2);
  fill_normal(b, 42, 0);
  set_num_threads(0);
  CHECK(bitwise_equal(a, b));
  fill_normal(tail, 42, 99990);
  for (int i = 0; i < 10; ++i) CHECK(tail.item(i) == a.item(99990 + i));
}

// Element i of fill_normal(seed, offset) is Box-Muller on words 2c and 2c + 1 (c = offset + i) of the normal
// stream, whose counters have their high bit set (ops/random.cpp). The vectorised log and cos are xsimd's,
// within a few ulp of libm's.
TEST_CASE("normal samples equal scalar Box-Muller on the same Philox words, for odd sizes and offsets") {
  const uint64_t seed = 0x1234'5678'9abc'def0ull;
  auto scalar_normal = [&](uint64_t counter) {
    auto stream_word = [&](uint64_t w) {
      const uint64_t block = ((uint64_t{1} << 63) | w) / 4;
      return philox4x32({static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0, 0},
                        {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)})[w % 4];
    };
    const double u1 = uniform_open01(stream_word(2 * counter)), u2 = uniform_open01(stream_word(2 * counter + 1));
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  };
  for (int64_t n : {1, 3, 17, 4099}) {
    for (uint64_t offset : {0, 1, 5, 1000003}) {
      Tensor z = Tensor::empty({n}, DType::f64);
      fill_normal(z, seed, offset, 0.25, 2.0);
      for (int64_t i = 0; i < n; ++i) {
        const double expected = 0.25 + 2.0 * scalar_normal(offset + static_cast<uint64_t>(i));
        CHECK(z.item(i) == doctest::Approx(expected).epsilon(1e-13).scale(1.0));
      }
    }
  }
}

TEST_CASE("uniform, normal and gumbel samples have the right moments") {
  const int64_t n = 200000;
  Tensor u = Tensor::empty({n}, DType::f64), z = Tensor::empty({n}, DType::f64), g = Tensor::empty({n}, DType::f64);
  Generator gen(7);
  gen.uniform(u);
  gen.normal(z);
  gen.gumbel(g);
  auto moments = [&](const Tensor& t) {
    double mean = 0, sq = 0;
    for (int64_t i = 0; i < n; ++i) mean += t.item(i);
    mean /= n;
    for (int64_t i = 0; i < n; ++i) sq += (t.item(i) - mean) * (t.item(i) - mean);
    return std::pair{mean, sq / n};
  };
  auto [um, uv] = moments(u);
  auto [zm, zv] = moments(z);
  auto [gm, gv] = moments(g);
  // Standard errors are ~0.0006 (U), ~0.002 (N), ~0.003 (Gumbel): tolerances are ~5 standard errors.
  CHECK(um == doctest::Approx(0.5).epsilon(0.01));
  CHECK(uv == doctest::Approx(1.0 / 12).epsilon(0.02));
  CHECK(std::abs(zm) < 0.012);
  CHECK(zv == doctest::Approx(1.0).epsilon(0.02));
  CHECK(gm == doctest::Approx(0.5772156649).epsilon(0.03));  // Euler-Mascheroni
  CHECK(gv == doctest::Approx(M_PI * M_PI / 6).epsilon(0.03));
  CHECK(gen.offset() == 3 * n);
}
