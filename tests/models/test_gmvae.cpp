// GMVAE (models/gmvae.h) and clustering scores (models/clustering.h): the ELBO against a brute-force
// computation in plain double loops, gradients of the whole loss against central differences, the assignment
// solver against brute force over permutations, and NMI / majority accuracy on known answers.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <numeric>

#include "gradcheck.h"
#include "models/clustering.h"
#include "models/gmvae.h"

using namespace tapegrad;

namespace {

// The tiny model of these tests: K = 3 components, 2-pixel "images", one hidden layer of 4, Z = 2, float64.
GmvaeConfig tiny_config(bool z_given_y = true, bool y_closed_form = false, bool full_covariance = false) {
  GmvaeConfig c;
  c.z_given_y = z_given_y;
  c.y_closed_form = y_closed_form;
  c.covariance = full_covariance ? "full" : "diag";
  c.height = 1, c.width = 2, c.components = 3, c.hidden = 4, c.layers = 1, c.latent = 2;
  c.prior_init = 1.0;
  c.dtype = DType::f64;
  return c;
}

// param->grad (the analytic gradient, already computed) against central differences of `loss` for every
// coordinate of every parameter, or for `per_tensor` coordinates spread evenly over each parameter tensor.
void check_parameter_gradients(Gmvae& model, const std::function<double()>& loss, int64_t per_tensor = -1) {
  const double h = 1e-6;
  for (auto& [name, param] : model.named_parameters()) {
    const int64_t n = param->value.numel(), checks = per_tensor < 0 ? n : std::min(n, per_tensor);
    for (int64_t c = 0; c < checks; ++c) {
      const int64_t i = checks == n ? c : c * (n - 1) / std::max<int64_t>(checks - 1, 1);
      const double v = param->value.item(i);
      param->value.set_item(i, v + h);
      const double up = loss();
      param->value.set_item(i, v - h);
      const double down = loss();
      param->value.set_item(i, v);
      const double numeric = (up - down) / (2 * h), analytic = param->grad.item(i);
      CHECK_MESSAGE(std::abs(numeric - analytic) <= 1e-6 * std::abs(numeric) + 1e-7,
                    name, "[", i, "]: analytic ", analytic, ", numeric ", numeric);
    }
  }
}

using Params = std::map<std::string, Tensor>;

// y = W x + b for a row-major (out, in) W; b may be undefined.
std::vector<double> affine(const Params& p, const std::string& name, const std::vector<double>& x, bool bias = true) {
  const Tensor& W = p.at(name + ".weight");
  std::vector<double> y(W.dim(0), 0.0);
  for (int64_t o = 0; o < W.dim(0); ++o) {
    if (bias) y[o] = p.at(name + ".bias").item(o);
    for (int64_t i = 0; i < W.dim(1); ++i) y[o] += W.item(o * W.dim(1) + i) * x[i];
  }
  return y;
}
std::vector<double> relu(std::vector<double> v) {
  for (double& e : v) e = std::max(e, 0.0);
  return v;
}

// The model variants the tests cover.
struct Variant {
  bool z_given_y, y_closed_form, full_covariance;
};
const std::vector<Variant> kVariants = {
    {true, false, false}, {false, false, false}, {false, true, false}, {false, false, true}, {false, true, true}};

// Full-covariance components start diagonal (T = 0): the tests give them a random precision factor instead.
void randomize_precision_factor(Gmvae& model, uint64_t seed) {
  for (auto& [name, param] : model.named_parameters())
    if (name == "prior_tril") param->value = testing::uniform(param->value.shape(), -0.8, 0.8, seed);
}

// KL(N(mu, diag exp(lv)) || p(z|k)) of the tiny model's component k (Z = 2) from its parameters: diagonal, or
// full with the precision Lambda = P P^T written out, P = [[exp(-lv_0 / 2), 0], [T_10, exp(-lv_1 / 2)]].
double brute_force_component_kl(const Params& p, int64_t k, const std::vector<double>& mu, const std::vector<double>& lv) {
  const int64_t Z = 2;
  double kl = 0;
  if (!p.count("prior_tril")) {
    for (int64_t j = 0; j < Z; ++j) {
      const double pm = p.at("prior_mu").item(k * Z + j), plv = p.at("prior_log_var").item(k * Z + j);
      kl += 0.5 * (plv - lv[j] + (std::exp(lv[j]) + (mu[j] - pm) * (mu[j] - pm)) / std::exp(plv) - 1);
    }
    return kl;
  }
  const double p00 = std::exp(-0.5 * p.at("prior_log_var").item(k * Z)), p11 = std::exp(-0.5 * p.at("prior_log_var").item(k * Z + 1));
  const double p10 = p.at("prior_tril").item(k * Z * Z + 2);
  const double l00 = p00 * p00, l01 = p10 * p00, l11 = p10 * p10 + p11 * p11;  // Lambda = P P^T
  const double d0 = mu[0] - p.at("prior_mu").item(k * Z), d1 = mu[1] - p.at("prior_mu").item(k * Z + 1);
  const double trace = l00 * std::exp(lv[0]) + l11 * std::exp(lv[1]);
  const double quadratic = l00 * d0 * d0 + 2 * l01 * d0 * d1 + l11 * d1 * d1;
  return 0.5 * (trace + quadratic - Z - std::log(l00 * l11 - l01 * l01) - lv[0] - lv[1]);
}

// -ELBO(x) of one example by the definition: every component in turn, the networks as loops over weights,
// q(z|x,y)'s first layer on concat(x, onehot(y)) (or on x alone for q(z|x), with one z for all k); q(y|x) from
// its network or, closed-form, -1/2 sum_j [lv_kj + ((mu_j - m_kj)^2 + exp(log_var_j)) / exp(lv_kj)] up to
// normalisation. standard_prior: the pretraining loss instead, the plain VAE's -ELBO with p(z) = N(0, I).
double brute_force_negative_elbo(const Params& p, const std::vector<double>& x, const Tensor& eps, int64_t b,
                                 bool z_given_y, bool y_closed_form = false, bool standard_prior = false) {
  const int64_t K = 3, Z = 2, Kz = z_given_y ? K : 1;
  auto posterior = [&](int64_t k) {  // (mu, log_var) of q(z|x, k), or of q(z|x)
    std::vector<double> xy = x;  // concat(x, onehot(k)) through the joint first-layer weights
    for (int64_t j = 0; j < K; ++j) xy.push_back(j == k);
    const Tensor& Wx = p.at("qz_x.weight");
    std::vector<double> h(Wx.dim(0));
    for (int64_t o = 0; o < Wx.dim(0); ++o) {
      h[o] = p.at("qz_x.bias").item(o);
      for (int64_t i = 0; i < 2; ++i) h[o] += Wx.item(o * 2 + i) * xy[i];
      if (z_given_y)
        for (int64_t j = 0; j < K; ++j) h[o] += p.at("qz_y.weight").item(o * K + j) * xy[2 + j];
    }
    h = relu(h);
    return std::pair{affine(p, "qz_mu", h), affine(p, "qz_log_var", h)};
  };
  std::vector<double> logits(K, 0.0);
  if (!y_closed_form) logits = affine(p, "qy.2", relu(affine(p, "qy.0", x)));
  else
    for (int64_t k = 0; k < K; ++k) {
      const auto [mu, lv] = posterior(0);
      logits[k] = -brute_force_component_kl(p, k, mu, lv);
    }
  const double top = *std::max_element(logits.begin(), logits.end());
  double norm = 0;
  for (double l : logits) norm += std::exp(l - top);
  double negative_elbo = 0;
  for (int64_t k = 0; k < (standard_prior ? 1 : K); ++k) {
    const double log_q = standard_prior ? 0.0 : logits[k] - top - std::log(norm), q = std::exp(log_q);
    const auto [mu, lv] = posterior(k);
    std::vector<double> z(Z);
    double kl = 0;
    for (int64_t j = 0; j < Z; ++j) {
      z[j] = mu[j] + std::exp(0.5 * lv[j]) * eps.item((b * Kz + (z_given_y ? k : 0)) * Z + j);
      if (standard_prior) kl += 0.5 * (-lv[j] + std::exp(lv[j]) + mu[j] * mu[j] - 1);
    }
    if (!standard_prior) kl = brute_force_component_kl(p, k, mu, lv);
    const std::vector<double> out = affine(p, "decoder.2", relu(affine(p, "decoder.0", z)));
    double nll = 0;
    for (size_t d = 0; d < x.size(); ++d)  // -log Bernoulli(x; sigmoid(l)) = log(1 + e^l) - x l
      nll += std::log1p(std::exp(out[d])) - x[d] * out[d];
    if (standard_prior) return nll + kl;
    negative_elbo += q * (nll + kl) + q * (log_q + std::log(3.0));
  }
  return negative_elbo;
}

}  // namespace

TEST_CASE("Gmvae: the loss equals the negative ELBO summed over y by brute force (K = 3, 2-D data)") {
  for (const Variant& variant : kVariants) {
  const auto [z_given_y, y_closed_form, full_covariance] = variant;
  CAPTURE(z_given_y);
  CAPTURE(y_closed_form);
  CAPTURE(full_covariance);
  Generator gen(3);
  Gmvae model(tiny_config(z_given_y, y_closed_form, full_covariance), gen);
  randomize_precision_factor(model, 300);
  Params p;
  for (auto& [name, param] : model.named_parameters()) p[name] = param->value;
  const Tensor x = testing::uniform({4, 2}, 0, 1, 11);
  const Tensor eps = testing::uniform({4, z_given_y ? 3 : 1, 2}, -2, 2, 12);
  Tape tape;
  const Gmvae::Terms terms = model.loss(tape.constant(x), eps);
  double expected = 0;
  for (int64_t b = 0; b < 4; ++b) {
    const double one =
        brute_force_negative_elbo(p, {x.item(2 * b), x.item(2 * b + 1)}, eps, b, z_given_y, y_closed_form);
    CHECK(terms.reconstruction.value().item(b) + terms.kl_z.value().item(b) + terms.kl_y.value().item(b) ==
          doctest::Approx(one).epsilon(1e-12));
    expected += one / 4;
  }
  CHECK(terms.loss.item() == doctest::Approx(expected).epsilon(1e-12));
  if (z_given_y) continue;
  // Pretraining (Note [pretraining]): the plain VAE's -ELBO, p(z) = N(0, I).
  const Gmvae::Terms vae = model.loss(tape.constant(x), eps, {.standard_normal_prior = true});
  double expected_vae = 0;
  for (int64_t b = 0; b < 4; ++b)
    expected_vae += brute_force_negative_elbo(p, {x.item(2 * b), x.item(2 * b + 1)}, eps, b, false, y_closed_form,
                                              /*standard_prior=*/true) / 4;
  CHECK(vae.loss.item() == doctest::Approx(expected_vae).epsilon(1e-12));
  }
}

TEST_CASE("Gmvae: gradients of the whole loss match central differences (parameters and data)") {
  for (const Variant& variant : kVariants) {
  const auto [z_given_y, y_closed_form, full_covariance] = variant;
  CAPTURE(z_given_y);
  CAPTURE(y_closed_form);
  CAPTURE(full_covariance);
  Generator gen(4);
  Gmvae model(tiny_config(z_given_y, y_closed_form, full_covariance), gen);
  randomize_precision_factor(model, 400);
  const Tensor x = testing::uniform({3, 2}, 0.05, 0.95, 21);
  const Tensor eps = testing::uniform({3, z_given_y ? 3 : 1, 2}, -2, 2, 22);
  std::vector<GmvaeLossOptions> option_sets = {{}, {.y_weight = 0.3}, {.mi_weight = 0.2}};
  if (!z_given_y) option_sets.push_back({.standard_normal_prior = true});
  for (const GmvaeLossOptions& options : option_sets) {
    CAPTURE(options.standard_normal_prior);
    auto loss = [&] {
      Tape tape;
      NoGradGuard no_grad(tape);
      return model.loss(tape.constant(x), eps, options).loss.item();
    };
    for (Parameter* param : model.parameters()) param->grad.fill(0);
    {
      Tape tape;
      tape.backward(model.loss(tape.constant(x), eps, options).loss);
    }
    check_parameter_gradients(model, loss);
    CHECK_GRADCHECK([&](Tape&, const std::vector<Var>& v) { return model.loss(v[0], eps, options).loss; }, {x});
  }
  }
}

TEST_CASE("Gmvae: the conv architecture's gradients match central differences; bad configurations are refused") {
  for (const bool y_closed_form : {true, false}) {
    CAPTURE(y_closed_form);
    GmvaeConfig config = tiny_config(false, y_closed_form);
    config.arch = "conv";
    config.height = config.width = 4;  // the smallest image the two stride-2 convolutions take
    Generator gen(6);
    Gmvae model(config, gen);
    const Tensor x = testing::uniform({3, 16}, 0.05, 0.95, 23), eps = testing::uniform({3, 1, 2}, -2, 2, 24);
    auto loss = [&] {
      Tape tape;
      NoGradGuard no_grad(tape);
      return model.loss(tape.constant(x), eps).loss.item();
    };
    for (Parameter* param : model.parameters()) param->grad.fill(0);
    {
      Tape tape;
      tape.backward(model.loss(tape.constant(x), eps).loss);
    }
    check_parameter_gradients(model, loss, 7);  // the convolutions hold ~66,000 weights
    CHECK_GRADCHECK([&](Tape&, const std::vector<Var>& v) { return model.loss(v[0], eps).loss; }, {x});
    CHECK(GmvaeConfig::from_metadata(config.to_metadata(), "ckpt").arch == "conv");
  }
  GmvaeConfig both = tiny_config(true, false);
  both.arch = "conv";
  both.height = both.width = 4;
  Generator gen(7);
  CHECK_THROWS_WITH_AS(Gmvae(both, gen), doctest::Contains("conv architecture needs q(z|x)"), ValueError);
  GmvaeConfig odd = tiny_config(false, true);
  odd.arch = "conv";
  odd.height = 6, odd.width = 4;
  CHECK_THROWS_WITH_AS(Gmvae(odd, gen), doctest::Contains("multiples of 4"), ValueError);
  Metadata meta = tiny_config(false, true).to_metadata();
  CHECK(meta.count("arch") == 0);  // mlp checkpoints stay as they were
  meta["arch"] = "rnn";
  CHECK_THROWS_WITH_AS(GmvaeConfig::from_metadata(meta, "ckpt"), doctest::Contains("'arch'"), FileError);
}

TEST_CASE("Gmvae: the information constraint holds the categorical KL at lambda without gradient") {
  Generator gen(5);
  Gmvae model(tiny_config(), gen);
  const Tensor x = testing::uniform({3, 2}, 0, 1, 31), eps = testing::uniform({3, 3, 2}, -1, 1, 32);
  Tape tape;
  const Gmvae::Terms plain = model.loss(tape.constant(x), eps, {.y_weight = 0});
  const Gmvae::Terms constrained = model.loss(tape.constant(x), eps, {.free_bits = 1.0});  // > max KL_y = log 3
  CHECK(constrained.loss.item() == doctest::Approx(plain.loss.item() + 1.0).epsilon(1e-12));
}

TEST_CASE("Gmvae: the ELBO-surgery split sums back to the categorical KL (mi_weight -> 1 gives the ELBO)") {
  Generator gen(6);
  Gmvae model(tiny_config(), gen);
  const Tensor x = testing::uniform({5, 2}, 0, 1, 41), eps = testing::uniform({5, 3, 2}, -1, 1, 42);
  Tape tape;
  const double exact = model.loss(tape.constant(x), eps).loss.item();
  const double split = model.loss(tape.constant(x), eps, {.mi_weight = 1 - 1e-12}).loss.item();
  CHECK(split == doctest::Approx(exact).epsilon(1e-10));
  // mi_weight = 0 keeps only KL(q(y) || p(y)) <= mean KL(q(y|x) || p(y)) (mutual information >= 0).
  const double marginal_only = model.loss(tape.constant(x), eps, {.mi_weight = 0}).loss.item();
  CHECK(marginal_only <= exact + 1e-12);
}

namespace {
// 13 two-pixel images: not a multiple of the loader's batch either.
Dataset tiny_dataset() {
  Dataset data;
  data.rows = 1, data.cols = 2;
  for (int i = 0; i < 13; ++i) {
    data.images.push_back(static_cast<uint8_t>(i * 19 % 256));
    data.images.push_back(static_cast<uint8_t>(255 - i * 7));
    data.labels.push_back(i % 3);
  }
  return data;
}
}  // namespace

TEST_CASE("initialize_components, k-means and spectral: components at the clusters' aggregate posterior moments") {
  for (const char* method : {"kmeans", "spectral"}) {
    CAPTURE(method);
    Generator gen(8);
    Gmvae model(tiny_config(/*z_given_y=*/false), gen);
    const Dataset data = tiny_dataset();
    const std::vector<int32_t> assignment = initialize_components(model, data, 1, {.method = method, .neighbours = 4});
    REQUIRE(assignment.size() == 13);
    Tape tape;
    const Gmvae::Posterior q = model.encode(tape.constant(data.to_tensor().reshaped({13, 2}).to(DType::f64)));
    auto [prior_mu, prior_log_var] = model.prior(tape);
    for (int32_t k = 0; k < 3; ++k) {
      CAPTURE(k);
      for (int64_t j = 0; j < 2; ++j) {
        double count = 0, sum_mu = 0;
        for (int64_t i = 0; i < 13; ++i)
          if (assignment[i] == k) ++count, sum_mu += q.mu.value().item(i * 2 + j);
        REQUIRE(count > 0);
        const double centroid = sum_mu / count;
        double spread = 0;
        for (int64_t i = 0; i < 13; ++i)
          if (assignment[i] == k)
            spread += std::pow(q.mu.value().item(i * 2 + j) - centroid, 2) + std::exp(q.log_var.value().item(i * 2 + j));
        CHECK(prior_mu.value().item(k * 2 + j) == doctest::Approx(centroid).epsilon(1e-12));
        CHECK(prior_log_var.value().item(k * 2 + j) == doctest::Approx(std::log(spread / count)).epsilon(1e-12));
      }
    }
  }
  Generator gen(8);
  const Dataset data = tiny_dataset();
  Gmvae model(tiny_config(/*z_given_y=*/false), gen);
  CHECK_THROWS_WITH_AS(initialize_components(model, data, 1, {.method = "umap"}),
                       doctest::Contains("kmeans or spectral"), ValueError);
  Gmvae per_component(tiny_config(/*z_given_y=*/true), gen);
  CHECK_THROWS_AS(initialize_components(per_component, data, 1), ValueError);
  CHECK_THROWS_AS(per_component.set_prior(Tensor::zeros({2, 2}), Tensor::zeros({3, 2})), ShapeError);
  GmvaeConfig both = tiny_config(/*z_given_y=*/true, /*y_closed_form=*/true);
  CHECK_THROWS_WITH_AS(Gmvae(both, gen), doctest::Contains("closed-form"), ValueError);
}

TEST_CASE("Gmvae, full covariance: the k-means start inverts the clusters' covariances; samples; metadata") {
  Generator gen(9);
  Gmvae model(tiny_config(/*z_given_y=*/false, /*y_closed_form=*/true, /*full_covariance=*/true), gen);
  const Dataset data = tiny_dataset();
  const std::vector<int32_t> assignment = initialize_components(model, data, 1);
  Tape tape;
  const Gmvae::Posterior q = model.encode(tape.constant(data.to_tensor().reshaped({13, 2}).to(DType::f64)));
  const Tensor P = model.precision_factor(tape).value();
  for (int32_t k = 0; k < 3; ++k) {
    CAPTURE(k);
    // Sigma = Cov(mu) + diag(mean sigma^2) over the cluster, by hand; the start must give P P^T Sigma = I.
    double count = 0, centroid[2] = {0, 0}, sigma[2][2] = {{0, 0}, {0, 0}};
    for (int64_t i = 0; i < 13; ++i)
      if (assignment[i] == k) {
        ++count;
        for (int64_t a = 0; a < 2; ++a) centroid[a] += q.mu.value().item(i * 2 + a);
      }
    REQUIRE(count > 0);
    for (double& c : centroid) c /= count;
    for (int64_t i = 0; i < 13; ++i)
      if (assignment[i] == k)
        for (int64_t a = 0; a < 2; ++a) {
          sigma[a][a] += std::exp(q.log_var.value().item(i * 2 + a)) / count;
          for (int64_t b = 0; b < 2; ++b)
            sigma[a][b] += (q.mu.value().item(i * 2 + a) - centroid[a]) * (q.mu.value().item(i * 2 + b) - centroid[b]) / count;
        }
    CHECK(P.item(k * 4 + 1) == 0.0);  // lower triangular
    for (int64_t a = 0; a < 2; ++a)
      for (int64_t b = 0; b < 2; ++b) {
        double product = 0;  // (P P^T Sigma)[a][b]
        for (int64_t c = 0; c < 2; ++c)
          for (int64_t d = 0; d < 2; ++d) product += P.item(k * 4 + a * 2 + d) * P.item(k * 4 + c * 2 + d) * sigma[c][b];
        CHECK(product == doctest::Approx(a == b ? 1.0 : 0.0).epsilon(1e-10).scale(1.0));
      }
  }
  // Samples z = m + P^-T eps: (z - m)^T P = eps^T for the generator's eps.
  randomize_precision_factor(model, 10);
  const Tensor factor = model.precision_factor(tape).value();
  Generator sampler(11), same(11);
  const Tensor codes = model.sample_components(4, sampler);
  Tensor eps = Tensor::empty({12, 2});
  same.normal(eps);
  auto [prior_mu, prior_log_var] = model.prior(tape);
  for (int64_t r = 0; r < 12; ++r) {
    const int64_t k = r / 4;
    for (int64_t j = 0; j < 2; ++j) {
      double projected = 0;
      for (int64_t i = 0; i < 2; ++i)
        projected += (codes.item(r * 2 + i) - prior_mu.value().item(k * 2 + i)) * factor.item(k * 4 + i * 2 + j);
      CHECK(projected == doctest::Approx(eps.item(r * 2 + j)).epsilon(1e-5));
    }
  }
  CHECK_THROWS_WITH_AS(model.set_prior(Tensor::zeros({3, 2}), Tensor::zeros({3, 2})),
                       doctest::Contains("precision_tril of shape (3, 2, 2)"), ShapeError);
  Gmvae diagonal(tiny_config(false, true), gen);
  CHECK_THROWS_WITH_AS(diagonal.set_prior(Tensor::zeros({3, 2}), Tensor::zeros({3, 2}), Tensor::zeros({3, 2, 2})),
                       doctest::Contains("no precision_tril"), ShapeError);
  CHECK_THROWS_AS(diagonal.precision_factor(tape), ValueError);
  CHECK_THROWS_WITH_AS(Gmvae(tiny_config(true, false, true), gen), doctest::Contains("full-covariance"), ValueError);
  // Metadata: "covariance" is written only for full (diag checkpoints stay as they were) and read back.
  CHECK(tiny_config(false, true).to_metadata().count("covariance") == 0);
  Metadata meta = model.config().to_metadata();
  CHECK(GmvaeConfig::from_metadata(meta, "ckpt").covariance == "full");
  meta["covariance"] = "banded";
  CHECK_THROWS_WITH_AS(GmvaeConfig::from_metadata(meta, "ckpt"), doctest::Contains("'covariance'"), FileError);
}

TEST_CASE("linear_assignment: equals brute force over all injections, square and rectangular") {
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 3}, {5, 5}, {2, 5}, {3, 6}, {5, 2}, {6, 4}}) {
    for (uint64_t seed = 0; seed < 5; ++seed) {
      const Tensor c = testing::uniform({rows, cols}, -3, 3, 100 + seed * 17 + rows * 7 + cols);
      std::vector<double> cost(rows * cols);
      for (int64_t i = 0; i < rows * cols; ++i) cost[i] = seed == 4 ? std::round(c.item(i)) : c.item(i);  // ties too
      const std::vector<int64_t> got = linear_assignment(cost, rows, cols);
      // Brute force: every permutation of the longer side, the first min(rows, cols) entries matched.
      const int64_t n = std::min(rows, cols);
      std::vector<int64_t> perm(std::max(rows, cols));
      std::iota(perm.begin(), perm.end(), 0);
      double best = INFINITY;
      do {
        double total = 0;
        for (int64_t i = 0; i < n; ++i) total += rows <= cols ? cost[i * cols + perm[i]] : cost[perm[i] * cols + i];
        best = std::min(best, total);
      } while (std::next_permutation(perm.begin(), perm.end()));
      double total = 0;
      std::vector<int> used(cols, 0);
      int64_t assigned = 0;
      for (int64_t i = 0; i < rows; ++i)
        if (got[i] >= 0) {
          CHECK(used[got[i]]++ == 0);
          total += cost[i * cols + got[i]];
          ++assigned;
        }
      CHECK(assigned == n);
      CHECK(total == doctest::Approx(best).epsilon(1e-12));
    }
  }
  CHECK_THROWS_WITH_AS(linear_assignment(std::vector<double>(5), 2, 3), doctest::Contains("linear_assignment"), ValueError);
}

TEST_CASE("score_clustering: a relabelled partition scores 1, and known permutations are recovered") {
  std::vector<int32_t> labels, clusters;
  const std::vector<int32_t> perm = {3, 0, 4, 1, 2};
  for (int i = 0; i < 50; ++i) labels.push_back(i % 5), clusters.push_back(perm[i % 5]);
  const ClusteringScores s = score_clustering(clusters, labels, 5, 5);
  CHECK(s.hungarian_accuracy == 1.0);
  CHECK(s.majority_accuracy == 1.0);
  CHECK(s.nmi == doctest::Approx(1.0).epsilon(1e-12));
  for (int c = 0; c < 5; ++c) CHECK(s.cluster_to_class[perm[c]] == c);
}

TEST_CASE("score_clustering: more clusters than classes (majority vote) and hand-computed values") {
  // Clusters 0, 1 hold class 0; clusters 2, 3 hold class 1; cluster 3 also one example of class 0.
  const std::vector<int32_t> clusters = {0, 0, 1, 1, 2, 2, 3, 3, 3};
  const std::vector<int32_t> labels = {0, 0, 0, 0, 1, 1, 1, 1, 0};
  const ClusteringScores s = score_clustering(clusters, labels, 4, 2);
  CHECK(s.majority_accuracy == doctest::Approx(8.0 / 9));
  CHECK(s.hungarian_accuracy == doctest::Approx(4.0 / 9));  // one cluster per class: 2 + 2 of 9
  CHECK(s.majority_class == std::vector<int64_t>{0, 0, 1, 1});
  // NMI of clusters [0,0,1,1] vs labels [0,0,0,1] by hand: I = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2,
  // H(clusters) = ln 2, H(labels) = -(3/4 ln 3/4 + 1/4 ln 1/4).
  const double mi = 0.5 * std::log(4.0 / 3) + 0.25 * std::log(2.0 / 3) + 0.25 * std::log(2.0);
  const double hk = std::log(2.0), hc = -(0.75 * std::log(0.75) + 0.25 * std::log(0.25));
  CHECK(normalized_mutual_information(std::vector<int32_t>{0, 0, 1, 1}, std::vector<int32_t>{0, 0, 0, 1}, 2, 2) ==
        doctest::Approx(mi / (0.5 * (hk + hc))).epsilon(1e-12));
  // Independent partitions: NMI 0; hungarian accuracy of a constant clustering = the largest class share.
  CHECK(normalized_mutual_information(std::vector<int32_t>{0, 0, 1, 1}, std::vector<int32_t>{0, 1, 0, 1}, 2, 2) ==
        doctest::Approx(0.0));
  CHECK(hungarian_accuracy(std::vector<int32_t>{0, 0, 0, 0}, std::vector<int32_t>{0, 1, 1, 2}, 3, 3) == 0.5);
  CHECK_THROWS_WITH_AS(score_clustering(std::vector<int32_t>{0, 5}, std::vector<int32_t>{0, 1}, 3, 2),
                       doctest::Contains("cluster ids must be in [0, 3)"), ValueError);
}

namespace {

// n points of dim 2 around the given centres (normal noise, sd 0.5), in cluster order; labels out.
std::vector<double> blobs(const std::vector<std::pair<double, double>>& centres, const std::vector<int64_t>& sizes,
                          std::vector<int32_t>& labels) {
  Generator gen(7);
  std::vector<double> points;
  for (size_t c = 0; c < centres.size(); ++c) {
    Tensor noise = Tensor::empty({sizes[c], 2}, DType::f64);
    gen.normal(noise, 0.0, 0.5);
    for (int64_t i = 0; i < sizes[c]; ++i) {
      points.push_back(centres[c].first + noise.item(i * 2));
      points.push_back(centres[c].second + noise.item(i * 2 + 1));
      labels.push_back(static_cast<int32_t>(c));
    }
  }
  return points;
}

}  // namespace

TEST_CASE("kmeans: recovers well-separated blobs of sizes 17, 3 and 1, centroids at their means") {
  std::vector<int32_t> labels;
  const std::vector<double> points = blobs({{0, 0}, {10, 0}, {0, 10}}, {17, 3, 1}, labels);
  const KMeansResult r = kmeans(points, 21, 2, 3, /*seed=*/1);
  CHECK(normalized_mutual_information(r.assignment, labels, 3, 3) == doctest::Approx(1.0));
  for (int32_t k = 0; k < 3; ++k) {
    double sx = 0, sy = 0, count = 0;
    for (int64_t i = 0; i < 21; ++i)
      if (r.assignment[i] == k) sx += points[i * 2], sy += points[i * 2 + 1], ++count;
    REQUIRE(count > 0);
    CHECK(r.centroids[k * 2] == doctest::Approx(sx / count));
    CHECK(r.centroids[k * 2 + 1] == doctest::Approx(sy / count));
  }
}

TEST_CASE("kmeans: a converged result is a fixed point of Lloyd's step, reproducible from the seed") {
  Generator gen(3);
  for (int64_t dim : {1, 3, 17}) {
    const int64_t n = 50, K = 4;
    Tensor data = Tensor::empty({n, dim}, DType::f64);
    gen.normal(data);
    std::vector<double> points(data.data<double>(), data.data<double>() + n * dim);
    const KMeansResult r = kmeans(points, n, dim, K, /*seed=*/5);
    double inertia = 0;
    for (int64_t i = 0; i < n; ++i) {
      std::vector<double> d(K, 0.0);
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < dim; ++j) d[k] += std::pow(points[i * dim + j] - r.centroids[k * dim + j], 2);
      CHECK(r.assignment[i] == std::min_element(d.begin(), d.end()) - d.begin());  // nearest centroid
      inertia += d[r.assignment[i]];
    }
    CHECK(r.inertia == doctest::Approx(inertia));
    const KMeansResult again = kmeans(points, n, dim, K, 5);
    CHECK(again.assignment == r.assignment);
    CHECK(again.centroids == r.centroids);
    CHECK(kmeans(points, n, dim, n, 5).inertia == 0.0);  // K = n: every point its own centroid
  }
}

// `gmvae train --kmeans-restarts`: restarts draw their k-means++ seeds from one generator in turn, so the first
// r starts of a longer run are the r starts of a shorter one, and keeping the best can only lower the sum.
TEST_CASE("kmeans: more restarts never give a larger within-cluster sum of squares") {
  Generator gen(7);
  const int64_t n = 60, dim = 3, K = 5;
  Tensor data = Tensor::empty({n, dim}, DType::f64);
  gen.normal(data);
  const std::vector<double> points(data.data<double>(), data.data<double>() + n * dim);
  double previous = std::numeric_limits<double>::infinity();
  for (int64_t restarts : {1, 3, 10, 30}) {
    const double inertia = kmeans(points, n, dim, K, /*seed=*/9, restarts).inertia;
    CHECK(inertia <= previous);
    previous = inertia;
  }
}

TEST_CASE("kmeans: bad sizes and non-finite points throw ValueError naming kmeans") {
  std::vector<double> points = {0, 1, 2, 3};
  CHECK_THROWS_WITH_AS(kmeans(points, 2, 2, 3, 1), doctest::Contains("kmeans"), ValueError);  // K > n
  CHECK_THROWS_AS(kmeans(points, 3, 2, 1, 1), ValueError);                                    // 4 != 3 x 2
  points[1] = std::nan("");
  CHECK_THROWS_WITH_AS(kmeans(points, 2, 2, 1, 1), doctest::Contains("finite"), ValueError);
}
