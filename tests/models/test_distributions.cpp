#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <numbers>

#include "autograd/arithmetic.h"
#include "autograd/reduction.h"
#include "autograd/shape.h"
#include "gradcheck.h"
#include "models/distributions.h"

using namespace tapegrad;
using testing::uniform;

namespace {
double normal_log_density(double x, double m, double s) {
  return -0.5 * std::log(2 * std::numbers::pi * s * s) - (x - m) * (x - m) / (2 * s * s);
}
}  // namespace

TEST_CASE("Normal: log_prob, entropy and KL equal their closed forms") {
  Tape tape;
  const Tensor mu = uniform({7}, -1, 1, 1), s = uniform({7}, 0.3, 2, 2), x = uniform({7}, -3, 3, 3);
  const Tensor mu2 = uniform({7}, -1, 1, 4), s2 = uniform({7}, 0.3, 2, 5);
  Normal p(tape.constant(mu), tape.constant(s)), q(tape.constant(mu2), tape.constant(s2));
  const Tensor lp = p.log_prob(tape.constant(x)).value(), h = p.entropy().value(), kl = kl_divergence(p, q).value();
  for (int64_t i = 0; i < 7; ++i) {
    const double m1 = mu.item(i), s1 = s.item(i), m2 = mu2.item(i), sd2 = s2.item(i);
    CHECK(lp.item(i) == doctest::Approx(normal_log_density(x.item(i), m1, s1)).epsilon(1e-12));
    CHECK(h.item(i) == doctest::Approx(0.5 * std::log(2 * std::numbers::pi * std::numbers::e * s1 * s1)).epsilon(1e-12));
    // KL by numerical integration of p log(p/q) on a fine grid: independent of the analytic formula.
    double integral = 0;
    const double step = 1e-3 * s1;
    for (double z = m1 - 12 * s1; z < m1 + 12 * s1; z += step) {
      const double lp1 = normal_log_density(z, m1, s1), lq = normal_log_density(z, m2, sd2);
      integral += std::exp(lp1) * (lp1 - lq) * step;
    }
    CHECK(kl.item(i) == doctest::Approx(integral).epsilon(1e-6));
  }
}

TEST_CASE("kl_standard_normal equals kl_divergence(Normal::from_log_var, N(0, I)) and its gradient checks") {
  Tape tape;
  const Tensor mu = uniform({3, 5}, -2, 2, 6), lv = uniform({3, 5}, -3, 1, 7);
  Var fused = kl_standard_normal(tape.constant(mu), tape.constant(lv));
  Var general = kl_divergence(Normal::from_log_var(tape.constant(mu), tape.constant(lv)), Normal::standard(tape, {3, 5}, DType::f64));
  CHECK(max_abs_diff(fused.value(), general.value()) < 1e-12);
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return kl_standard_normal(v[0], v[1]); }, {mu, lv});
  for (int64_t n : {1, 17, 1001}) {
    const Tensor m = uniform({n}, -2, 2, 8 + n), l = uniform({n}, -2, 2, 9 + n);
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return kl_standard_normal(v[0], v[1]); }, {m, l});
  }
}

TEST_CASE("kl_normal_pairwise equals the broadcast kl_divergence summed over the event, and its gradient checks") {
  // (B, K, Z) over single rows, odd sizes, and the GMVAE's shape at a small scale.
  for (auto [B, K, Z] : {std::array<int64_t, 3>{1, 1, 1}, {3, 1, 17}, {1, 3, 5}, {17, 3, 3}, {5, 10, 8}}) {
    CAPTURE(B);
    CAPTURE(K);
    CAPTURE(Z);
    const Tensor mq = uniform({B, Z}, -2, 2, 10 + B), lq = uniform({B, Z}, -3, 1, 11 + K);
    const Tensor mp = uniform({K, Z}, -2, 2, 12 + Z), lp = uniform({K, Z}, -2, 2, 13 + B * K);
    Tape tape;
    Var fused = kl_normal_pairwise(tape.constant(mq), tape.constant(lq), tape.constant(mp), tape.constant(lp));
    Normal q = Normal::from_log_var(reshape(tape.constant(mq), {B, 1, Z}), reshape(tape.constant(lq), {B, 1, Z}));
    Normal p = Normal::from_log_var(reshape(tape.constant(mp), {1, K, Z}), reshape(tape.constant(lp), {1, K, Z}));
    Var broadcast = sum(kl_divergence(q, p), {-1});
    REQUIRE(fused.shape() == Shape{B, K});
    CHECK(max_abs_diff(fused.value(), broadcast.value()) < 1e-12);
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return kl_normal_pairwise(v[0], v[1], v[2], v[3]); },
                    {mq, lq, mp, lp});
  }
  // One set against itself (each input feeds two arguments, so its gradient has two contributions).
  const Tensor m = uniform({4, 3}, -2, 2, 20), l = uniform({4, 3}, -2, 1, 21);
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return kl_normal_pairwise(v[0], v[1], v[0], v[1]); }, {m, l});
  // float32 runs the same code: it agrees with the float64 values to float precision.
  const Tensor mq = uniform({4, 6}, -2, 2, 1), lq = uniform({4, 6}, -2, 1, 2), mp = uniform({3, 6}, -2, 2, 3),
               lp = uniform({3, 6}, -2, 2, 4);
  Tape tape;
  const Tensor wide = kl_normal_pairwise(tape.constant(mq), tape.constant(lq), tape.constant(mp), tape.constant(lp)).value();
  const Tensor narrow = kl_normal_pairwise(tape.constant(mq.to(DType::f32)), tape.constant(lq.to(DType::f32)),
                                           tape.constant(mp.to(DType::f32)), tape.constant(lp.to(DType::f32))).value();
  CHECK(max_abs_diff(narrow.to(DType::f64), wide) < 1e-4);
}

TEST_CASE("kl_normal_pairwise rejects mismatched shapes and dtypes, naming the op") {
  Tape tape;
  Var q = tape.constant(Tensor::zeros({2, 3}, DType::f64)), p = tape.constant(Tensor::zeros({4, 3}, DType::f64));
  Var p_other = tape.constant(Tensor::zeros({4, 5}, DType::f64)), q3 = tape.constant(Tensor::zeros({2, 1, 3}, DType::f64));
  CHECK_THROWS_WITH_AS(kl_normal_pairwise(q, q, p_other, p_other), doctest::Contains("kl_normal_pairwise"), ShapeError);
  CHECK_THROWS_WITH_AS(kl_normal_pairwise(q, p, p, p), doctest::Contains("shapes must match"), ShapeError);
  CHECK_THROWS_WITH_AS(kl_normal_pairwise(q3, q3, p, p), doctest::Contains("(B, Z)"), ShapeError);
  Var q32 = tape.constant(Tensor::zeros({2, 3}, DType::f32));
  CHECK_THROWS_WITH_AS(kl_normal_pairwise(q32, q32, p, p), doctest::Contains("dtypes"), ValueError);
}

namespace {

// A random lower-triangular precision factor (K, Z, Z) with its diagonal in [0.5, 1.5].
Tensor random_precision_tril(int64_t K, int64_t Z, uint64_t seed) {
  Tensor P = uniform({K, Z, Z}, -0.7, 0.7, seed);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < Z; ++i)
      for (int64_t j = i; j < Z; ++j) {
        const int64_t at = (k * Z + i) * Z + j;
        P.set_item(at, i == j ? 1.0 + 0.5 * P.item(at) / 0.7 : 0.0);
      }
  return P;
}

// KL(N(mq, diag exp(lq)) || N(mp, Lambda^-1)) by the textbook formula with Lambda = P P^T formed explicitly and
// log det Lambda from Gaussian elimination: no Cholesky structure used.
double brute_force_full_kl(const std::vector<double>& mq, const std::vector<double>& lq, const std::vector<double>& mp,
                           const std::vector<double>& P, int64_t Z) {
  std::vector<double> lambda(Z * Z, 0.0);
  for (int64_t i = 0; i < Z; ++i)
    for (int64_t j = 0; j < Z; ++j)
      for (int64_t p = 0; p < Z; ++p) lambda[i * Z + j] += P[i * Z + p] * P[j * Z + p];
  double trace = 0, quadratic = 0, log_det_q = 0;
  for (int64_t i = 0; i < Z; ++i) {
    trace += lambda[i * Z + i] * std::exp(lq[i]);
    log_det_q += lq[i];
    for (int64_t j = 0; j < Z; ++j) quadratic += (mq[i] - mp[i]) * lambda[i * Z + j] * (mq[j] - mp[j]);
  }
  std::vector<double> a = lambda;  // elimination with partial pivoting: log |det Lambda|
  double log_det_lambda = 0;
  for (int64_t c = 0; c < Z; ++c) {
    int64_t pivot = c;
    for (int64_t r = c + 1; r < Z; ++r)
      if (std::abs(a[r * Z + c]) > std::abs(a[pivot * Z + c])) pivot = r;
    for (int64_t j = 0; j < Z; ++j) std::swap(a[c * Z + j], a[pivot * Z + j]);
    log_det_lambda += std::log(std::abs(a[c * Z + c]));
    for (int64_t r = c + 1; r < Z; ++r) {
      const double f = a[r * Z + c] / a[c * Z + c];
      for (int64_t j = c; j < Z; ++j) a[r * Z + j] -= f * a[c * Z + j];
    }
  }
  return 0.5 * (trace + quadratic - static_cast<double>(Z) - log_det_lambda - log_det_q);
}

}  // namespace

TEST_CASE("kl_normal_full_pairwise equals the textbook KL, reduces to kl_normal_pairwise, and its gradient checks") {
  for (auto [B, K, Z] : {std::array<int64_t, 3>{1, 1, 1}, {3, 1, 17}, {1, 3, 5}, {17, 3, 3}, {5, 4, 8}}) {
    CAPTURE(B);
    CAPTURE(K);
    CAPTURE(Z);
    const Tensor mq = uniform({B, Z}, -2, 2, 30 + B), lq = uniform({B, Z}, -3, 1, 31 + K);
    const Tensor mp = uniform({K, Z}, -2, 2, 32 + Z), P = random_precision_tril(K, Z, 33 + B * K);
    Tape tape;
    const Tensor kl = kl_normal_full_pairwise(tape.constant(mq), tape.constant(lq), tape.constant(mp),
                                              tape.constant(P)).value();
    REQUIRE(kl.shape() == Shape{B, K});
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < K; ++k) {
        std::vector<double> q_mu(Z), q_lv(Z), p_mu(Z), factor(Z * Z);
        for (int64_t j = 0; j < Z; ++j) {
          q_mu[j] = mq.item(b * Z + j);
          q_lv[j] = lq.item(b * Z + j);
          p_mu[j] = mp.item(k * Z + j);
        }
        for (int64_t j = 0; j < Z * Z; ++j) factor[j] = P.item(k * Z * Z + j);
        CHECK(kl.item(b * K + k) == doctest::Approx(brute_force_full_kl(q_mu, q_lv, p_mu, factor, Z)).epsilon(1e-10));
      }
    // A diagonal factor P = diag(exp(-lv_p / 2)) is the diagonal Gaussian of kl_normal_pairwise.
    const Tensor lp = uniform({K, Z}, -2, 2, 34 + Z);
    Tensor diagonal = Tensor::zeros({K, Z, Z}, DType::f64);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < Z; ++j) diagonal.set_item((k * Z + j) * Z + j, std::exp(-0.5 * lp.item(k * Z + j)));
    const Tensor full = kl_normal_full_pairwise(tape.constant(mq), tape.constant(lq), tape.constant(mp),
                                                tape.constant(diagonal)).value();
    const Tensor diag = kl_normal_pairwise(tape.constant(mq), tape.constant(lq), tape.constant(mp), tape.constant(lp)).value();
    CHECK(max_abs_diff(full, diag) < 1e-10);
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return kl_normal_full_pairwise(v[0], v[1], v[2], v[3]); },
                    {mq, lq, mp, P});
  }
  Tape tape;
  Var q = tape.constant(Tensor::zeros({2, 3}, DType::f64)), p = tape.constant(Tensor::zeros({4, 3}, DType::f64));
  Var square_p = tape.constant(Tensor::zeros({4, 3, 3}, DType::f64));
  CHECK_THROWS_WITH_AS(kl_normal_full_pairwise(q, q, p, tape.constant(Tensor::zeros({4, 3, 2}, DType::f64))),
                       doctest::Contains("kl_normal_full_pairwise"), ShapeError);
  CHECK_THROWS_WITH_AS(kl_normal_full_pairwise(q, q, tape.constant(Tensor::zeros({3, 3}, DType::f64)), square_p),
                       doctest::Contains("(K, Z, Z)"), ShapeError);
  CHECK_THROWS_WITH_AS(kl_normal_full_pairwise(q, p, p, square_p), doctest::Contains("shapes must match"), ShapeError);
}

TEST_CASE("Normal: rsample has the right moments and gradients flow through the reparameterisation") {
  Tape tape;
  const int64_t n = 100000;
  Var loc = tape.leaf(Tensor::full({n}, 1.5, DType::f64)), log_var = tape.leaf(Tensor::full({n}, std::log(0.25), DType::f64));
  Generator gen(5);
  Var z = Normal::from_log_var(loc, log_var).rsample(gen);
  double mean = 0, var = 0;
  for (int64_t i = 0; i < n; ++i) mean += z.value().item(i) / n;
  for (int64_t i = 0; i < n; ++i) var += (z.value().item(i) - mean) * (z.value().item(i) - mean) / n;
  CHECK(mean == doctest::Approx(1.5).epsilon(0.005));  // standard error 0.0016
  CHECK(var == doctest::Approx(0.25).epsilon(0.02));
  // d E[z^2] / d loc = 2 loc = 3: the pathwise estimate over many samples is close to it.
  tape.backward(sum(square(z)) / static_cast<double>(n));
  double dloc = 0;
  for (int64_t i = 0; i < n; ++i) dloc += loc.grad().item(i);
  CHECK(dloc == doctest::Approx(3.0).epsilon(0.01));
  // Exact gradients through rsample, with the noise held fixed by re-seeding.
  CHECK_GRADCHECK(
      [](Tape&, const std::vector<Var>& v) {
        Generator fixed(9);
        return Normal::from_log_var(v[0], v[1]).rsample(fixed);
      },
      {uniform({17}, -1, 1, 10), uniform({17}, -1, 1, 11)});
  CHECK_GRADCHECK(
      [](Tape&, const std::vector<Var>& v) {
        Generator fixed(9);
        return Normal(v[0], v[1]).log_prob(Normal(v[0], v[1]).rsample(fixed));
      },
      {uniform({3, 4}, -1, 1, 12), uniform({3, 4}, 0.5, 2, 13)});
}

TEST_CASE("Bernoulli: log_prob from logits is finite at +-100 and equals the closed form") {
  Tape tape;
  const Tensor logits = Tensor::from(std::vector<double>{-100, -2, 0, 3, 100}, {5});
  const Tensor x = Tensor::from(std::vector<double>{1, 0, 1, 0.25, 0}, {5});
  Bernoulli b(tape.constant(logits));
  const Tensor lp = b.log_prob(tape.constant(x)).value(), h = b.entropy().value();
  for (int64_t i = 0; i < 5; ++i) {
    const double l = logits.item(i), t = x.item(i);
    // log sigmoid(l) = -log1p(exp(-l)); written per sign to stay finite in the reference too.
    const double log_p = l > 0 ? -std::log1p(std::exp(-l)) : l - std::log1p(std::exp(l));
    const double log_1mp = l > 0 ? -l - std::log1p(std::exp(-l)) : -std::log1p(std::exp(l));
    CHECK(lp.item(i) == doctest::Approx(t * log_p + (1 - t) * log_1mp).epsilon(1e-12));
    const double p = std::exp(log_p);
    CHECK(h.item(i) == doctest::Approx(-(p * log_p + (1 - p) * log_1mp)).epsilon(1e-9));
  }
  CHECK(lp.item(0) == doctest::Approx(-100.0));
  Generator gen(3);
  const Tensor s = b.sample(gen);
  CHECK(s.item(0) == 0.0);
  CHECK(s.item(4) == 1.0);
}

TEST_CASE("Categorical: log_prob, entropy, KL against closed forms; Gumbel-max sampling frequencies") {
  Tape tape;
  const Tensor logits = Tensor::from(std::vector<double>{0.5, -1, 2, 0, 0, 0}, {2, 3});
  const Tensor logits_q = Tensor::from(std::vector<double>{1, 1, -1, 0.3, -0.2, 0.1}, {2, 3});
  Categorical p(tape.constant(logits)), q(tape.constant(logits_q));
  const std::vector<int32_t> labels = {2, 1};
  const Tensor lp = p.log_prob(labels).value(), h = p.entropy().value(), kl = kl_divergence(p, q).value();
  for (int r = 0; r < 2; ++r) {
    double z = 0, zq = 0;
    for (int k = 0; k < 3; ++k) z += std::exp(logits.item(3 * r + k)), zq += std::exp(logits_q.item(3 * r + k));
    double entropy = 0, divergence = 0;
    for (int k = 0; k < 3; ++k) {
      const double pk = std::exp(logits.item(3 * r + k)) / z, qk = std::exp(logits_q.item(3 * r + k)) / zq;
      entropy -= pk * std::log(pk);
      divergence += pk * std::log(pk / qk);
    }
    CHECK(lp.item(r) == doctest::Approx(logits.item(3 * r + labels[r]) - std::log(z)).epsilon(1e-12));
    CHECK(h.item(r) == doctest::Approx(entropy).epsilon(1e-12));
    CHECK(kl.item(r) == doctest::Approx(divergence).epsilon(1e-12));
  }
  // Sampling: 30,000 draws from row 0 match its probabilities within 4 standard errors.
  Var many = tape.constant(Tensor::from(std::vector<double>(30000 * 3, 0.0), {30000, 3}));
  Var row0 = many + tape.constant(Tensor::from(std::vector<double>{0.5, -1, 2}, {3}));
  Generator gen(17);
  const auto draws = Categorical(row0).sample(gen);
  double z = std::exp(0.5) + std::exp(-1.0) + std::exp(2.0);
  for (int k = 0; k < 3; ++k) {
    const double pk = std::exp(logits.item(k)) / z;
    double freq = 0;
    for (int32_t d : draws) freq += d == k;
    freq /= draws.size();
    CHECK(std::abs(freq - pk) < 4 * std::sqrt(pk * (1 - pk) / draws.size()));
  }
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return Categorical(v[0]).entropy(); }, {uniform({4, 5}, -2, 2, 20)});
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return kl_divergence(Categorical(v[0]), Categorical(v[1])); },
                  {uniform({3, 4}, -2, 2, 21), uniform({3, 4}, -2, 2, 22)});
}

TEST_CASE("RelaxedOneHotCategorical: samples lie on the simplex; the Concrete density integrates to 1 (K = 2)") {
  Tape tape;
  Var logits = tape.constant(Tensor::from(std::vector<double>{0.3, -0.4}, {1, 2}));
  RelaxedOneHotCategorical relaxed(logits, 0.7);
  Generator gen(4);
  const Tensor y = relaxed.rsample(gen).value();
  CHECK(y.item(0) + y.item(1) == doctest::Approx(1.0));
  Generator again(4);
  CHECK(bitwise_equal(relaxed.sample(again), y));  // sample is rsample's draw without the gradient
  // For K = 2 the density over y_1 in (0, 1) (with y_2 = 1 - y_1) must integrate to 1.
  const int steps = 20000;
  std::vector<double> grid;
  for (int i = 0; i < steps; ++i) {
    const double y1 = (i + 0.5) / steps;
    grid.push_back(y1);
    grid.push_back(1 - y1);
  }
  Var ys = tape.constant(Tensor::from(std::span<const double>(grid), {steps, 2}));
  Var rows = tape.constant(Tensor::zeros({steps, 2}, DType::f64)) + logits;
  const Tensor lp = RelaxedOneHotCategorical(rows, 0.7).log_prob(ys).value();
  double integral = 0;
  for (int i = 0; i < steps; ++i) integral += std::exp(lp.item(i)) / steps;
  CHECK(integral == doctest::Approx(1.0).epsilon(2e-3));
  CHECK_GRADCHECK(
      [](Tape&, const std::vector<Var>& v) {
        Generator fixed(2);
        return RelaxedOneHotCategorical(v[0], 0.5).rsample(fixed);
      },
      {uniform({3, 4}, -1, 1, 23)});
}

TEST_CASE("GaussianMixture: log_prob equals the brute-force mixture density; gradients check") {
  Tape tape;
  const Tensor w = uniform({3}, -1, 1, 30), locs = uniform({3, 2}, -2, 2, 31), log_scales = uniform({3, 2}, -1, 0.5, 32);
  const Tensor x = uniform({4, 2}, -2, 2, 33);
  GaussianMixture mixture(tape.constant(w), tape.constant(locs), tape.constant(log_scales));
  const Tensor lp = mixture.log_prob(tape.constant(x)).value();
  double z = 0;
  for (int k = 0; k < 3; ++k) z += std::exp(w.item(k));
  for (int b = 0; b < 4; ++b) {
    double density = 0;
    for (int k = 0; k < 3; ++k) {
      double component = std::exp(w.item(k)) / z;
      for (int d = 0; d < 2; ++d)
        component *= std::exp(normal_log_density(x.item(2 * b + d), locs.item(2 * k + d), std::exp(log_scales.item(2 * k + d))));
      density += component;
    }
    CHECK(lp.item(b) == doctest::Approx(std::log(density)).epsilon(1e-12));
  }
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return GaussianMixture(v[0], v[1], v[2]).log_prob(v[3]); },
                  {w, locs, log_scales, x});
  Generator gen(8);
  CHECK(mixture.sample(gen, 5).shape() == Shape{5, 2});
  // The mixture's mean is the weighted mean of its components; 20,000 samples agree within 4 standard errors.
  const Tensor m = mixture.mean().value(), draws = mixture.sample(gen, 20000);
  for (int d = 0; d < 2; ++d) {
    double expected = 0, empirical = 0, second = 0;
    for (int k = 0; k < 3; ++k) expected += std::exp(w.item(k)) / z * locs.item(2 * k + d);
    for (int64_t i = 0; i < 20000; ++i) empirical += draws.item(2 * i + d) / 20000;
    for (int64_t i = 0; i < 20000; ++i) second += std::pow(draws.item(2 * i + d) - empirical, 2) / 20000;
    CHECK(m.item(d) == doctest::Approx(expected).epsilon(1e-12));
    CHECK(std::abs(empirical - expected) < 4 * std::sqrt(second / 20000));
  }
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return GaussianMixture(v[0], v[1], v[2]).mean(); },
                  {w, locs, log_scales});
  CHECK_THROWS_AS(GaussianMixture(tape.constant(w), tape.constant(locs), tape.constant(Tensor::zeros({2, 2}, DType::f64))),
                  ShapeError);
}
