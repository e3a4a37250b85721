// Probability distributions over tape variables, with the method names PyTorch and Pyro users know:
// sample / rsample / log_prob / entropy / mean, and kl_divergence in one place.
//
// rsample is the reparameterisation trick (Kingma & Welling 2013, sec. 2.4): a sample written as a
// differentiable function of the parameters and parameter-free noise, z = mu + sigma * eps, eps ~ N(0, I), so
// gradients of E_q[f(z)] flow into mu and sigma. Noise comes from a counter-based Generator: the same seed gives
// the same samples whatever the thread count.
//
// log_prob is elementwise over the event, as in torch.distributions (sum over the last axis for a diagonal
// Gaussian's joint density: `sum(q.log_prob(z), {-1})`), except Categorical and the mixture, whose events are
// whole rows.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "autograd/tape.h"
#include "ops/random.h"

namespace tapegrad {

// Diagonal Normal N(loc, scale^2), parameterised by loc and log(scale) so that log densities and KLs never
// take the log of an exponential.
class Normal {
 public:
  Normal(const Var& loc, const Var& scale);                    // scale > 0
  static Normal from_log_var(const Var& loc, const Var& log_var);  // scale = exp(log_var / 2), the VAE encoder's form
  static Normal standard(Tape& tape, const Shape& shape, DType dtype = DType::f32);  // N(0, I)

  Var rsample(Generator& generator) const;  // loc + scale * eps: differentiable in loc and scale
  Tensor sample(Generator& generator) const;  // no gradient
  // log N(x; loc, scale) = -((x - loc) / scale)^2 / 2 - log(scale) - log(2 pi) / 2, elementwise.
  Var log_prob(const Var& x) const;
  Var entropy() const;  // 1/2 + log(2 pi)/2 + log(scale), elementwise
  const Var& mean() const { return loc_; }
  const Var& loc() const { return loc_; }
  const Var& scale() const { return scale_; }
  const Var& log_scale() const { return log_scale_; }

 private:
  Normal(const Var& loc, const Var& scale, const Var& log_scale) : loc_(loc), scale_(scale), log_scale_(log_scale) {}
  Var loc_, scale_, log_scale_;
};

// Bernoulli(sigmoid(logits)), elementwise; log_prob never takes log(0) (it is -BCE with logits).
class Bernoulli {
 public:
  explicit Bernoulli(const Var& logits) : logits_(logits) {}
  Var log_prob(const Var& x) const;  // x in [0, 1] (grey-level targets allowed, as the VAE literature does)
  Var entropy() const;
  Var mean() const;                  // sigmoid(logits)
  Tensor sample(Generator& generator) const;
  const Var& logits() const { return logits_; }

 private:
  Var logits_;
};

// Categorical over the last axis of logits (..., K).
class Categorical {
 public:
  explicit Categorical(const Var& logits);
  Var log_prob(std::span<const int32_t> values) const;  // (...,) one class index per row
  Var probs() const;                                     // softmax(logits)
  Var log_probs() const { return log_probs_; }           // log_softmax(logits)
  Var entropy() const;                                   // -sum_k p_k log p_k, per row
  std::vector<int32_t> sample(Generator& generator) const;  // Gumbel-max: argmax(logits + Gumbel noise)
  int64_t num_classes() const { return log_probs_.dim(-1); }

 private:
  Var logits_, log_probs_;
};

// Gumbel-softmax / Concrete distribution (Jang et al. 2017; Maddison et al. 2017): a relaxed one-hot sample
// softmax((logits + g) / temperature), g ~ Gumbel(0, 1), differentiable in the logits.
class RelaxedOneHotCategorical {
 public:
  RelaxedOneHotCategorical(const Var& logits, double temperature);
  Var rsample(Generator& generator) const;
  Tensor sample(Generator& generator) const;  // the same draw, without a gradient
  // Concrete density (Maddison et al. 2017, eq. 12), for y on the simplex (..., K).
  Var log_prob(const Var& y) const;
  double temperature() const { return temperature_; }

 private:
  Var logits_;
  double temperature_;
};

// A mixture of K diagonal Gaussians in D dimensions: p(x) = sum_k softmax(w)_k N(x; mu_k, diag(sigma_k^2)).
class GaussianMixture {
 public:
  // mixture_logits: (K,), locs: (K, D), log_scales: (K, D).
  GaussianMixture(const Var& mixture_logits, const Var& locs, const Var& log_scales);
  // x: (B, D) -> (B,): log sum_k exp(log pi_k + sum_d log N(x_d; mu_kd, sigma_kd)), via logsumexp.
  Var log_prob(const Var& x) const;
  // log p(x, k) for every component: (B, K); log_prob is its logsumexp over k.
  Var component_log_prob(const Var& x) const;
  Tensor sample(Generator& generator, int64_t count) const;  // (count, D), not reparameterisable
  Var mean() const;  // sum_k pi_k mu_k: (D,)
  int64_t components() const { return locs_.dim(0); }

 private:
  Var mixture_logits_, locs_, log_scales_;
};

// KL(p || q), analytic (elementwise for Normals; per row for Categoricals):
//   Normal:      log(s_q / s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2
//   Categorical: sum_k p_k (log p_k - log q_k)
Var kl_divergence(const Normal& p, const Normal& q);
Var kl_divergence(const Categorical& p, const Categorical& q);
// KL(N(mu, exp(log_var)) || N(0, I)) = -(1 + log_var - mu^2 - exp(log_var)) / 2, elementwise: the VAE's term
// (Kingma & Welling 2013, appendix B), fused into one op.
Var kl_standard_normal(const Var& mu, const Var& log_var);
// KL(N(mu_q[b], diag exp(log_var_q[b])) || N(mu_p[k], diag exp(log_var_p[k]))) for every pair (b, k), summed
// over the event: (B, Z) and (K, Z) -> (B, K),
//   KL[b, k] = 1/2 sum_j [lv_p - lv_q + (exp(lv_q) + (mu_q - mu_p)^2) / exp(lv_p) - 1].
// One op (Note [pairwise Gaussian KL]): the same values as sum(kl_divergence(q (B, 1, Z), p (1, K, Z)), {-1})
// up to rounding, without the (B, K, Z) intermediates and their gradients.
Var kl_normal_pairwise(const Var& mu_q, const Var& log_var_q, const Var& mu_p, const Var& log_var_p);
// The same pairs against full-covariance Gaussians N(mu_p[k], Sigma_k), each given by the Cholesky factor of its
// precision, Sigma_k^-1 = P_k P_k^T (P_k lower triangular with a positive diagonal; its upper triangle must be
// zero): (B, Z), (B, Z), (K, Z), (K, Z, Z) -> (B, K), with d = mu_q[b] - mu_p[k] and v = exp(log_var_q[b]),
//   KL[b, k] = 1/2 [tr(Sigma_k^-1 diag v) + d^T Sigma_k^-1 d - Z + log det Sigma_k - sum_j log v_j]
//            = 1/2 [sum_i v_i sum_j P_k,ij^2 + |d^T P_k|^2 - Z - 2 sum_j log P_k,jj - sum_j log v_j].
// Parametrising the precision's factor needs no matrix inverse or solve: a (K, B, Z) x (K, Z, Z) product and
// elementwise ops, whose gradients the tape composes.
Var kl_normal_full_pairwise(const Var& mu_q, const Var& log_var_q, const Var& mu_p, const Var& precision_tril);

}  // namespace tapegrad
