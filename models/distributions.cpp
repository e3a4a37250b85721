#include "models/distributions.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <optional>
#include <vector>

#include "autograd/activation.h"
#include "autograd/arithmetic.h"
#include "autograd/linalg.h"
#include "autograd/loss.h"
#include "autograd/reduction.h"
#include "autograd/shape.h"
#include "ops/elementwise.h"
#include "ops/parallel.h"

namespace tapegrad {

namespace {
constexpr double kHalfLog2Pi = 0.91893853320467274178;  // log(2 pi) / 2

// Fresh noise of `shape` as a constant on `tape`, drawn by `fill` (normal or Gumbel) from the generator.
template <class Fill>
Var noise(Tape& tape, const Shape& shape, DType dtype, Fill fill) {
  Tensor eps = tape.scratch(shape, dtype);
  fill(eps);
  return tape.constant(eps);
}

void check_same_shape(const char* op, const Var& a, const Var& b) {
  if (!(a.shape() == b.shape())) fail<ShapeError>(op, ": shapes must match, got ", a.shape(), " and ", b.shape());
}
}  // namespace

// ---- Normal ----

Normal::Normal(const Var& loc, const Var& scale) : Normal(loc, scale, log(scale)) {
  check_same_shape("Normal", loc, scale);
}

Normal Normal::from_log_var(const Var& loc, const Var& log_var) {
  check_same_shape("Normal", loc, log_var);
  Var log_scale = log_var * 0.5;
  return Normal(loc, exp(log_scale), log_scale);
}

Normal Normal::standard(Tape& tape, const Shape& shape, DType dtype) {
  Var zero = tape.constant(Tensor::zeros(shape, dtype));
  return Normal(zero, tape.constant(Tensor::full(shape, 1.0, dtype)), zero);
}

Var Normal::rsample(Generator& generator) const {
  Var eps = noise(loc_.tape(), loc_.shape(), loc_.dtype(), [&](Tensor& t) { generator.normal(t); });
  return loc_ + scale_ * eps;
}

Tensor Normal::sample(Generator& generator) const {
  Tape& tape = loc_.tape();
  NoGradGuard no_grad(tape);
  return rsample(generator).value().clone();
}

Var Normal::log_prob(const Var& x) const {
  Var standardized = (x - loc_) / scale_;
  return square(standardized) * -0.5 - log_scale_ - kHalfLog2Pi;
}

Var Normal::entropy() const { return log_scale_ + (0.5 + kHalfLog2Pi); }

// ---- Bernoulli ----

Var Bernoulli::log_prob(const Var& x) const { return -binary_cross_entropy_with_logits(logits_, x, Reduction::none); }

Var Bernoulli::mean() const { return sigmoid(logits_); }

// H = -p log p - (1 - p) log(1 - p) = BCE(logits, p) with p = sigmoid(logits).
Var Bernoulli::entropy() const { return binary_cross_entropy_with_logits(logits_, sigmoid(logits_), Reduction::none); }

Tensor Bernoulli::sample(Generator& generator) const {
  Tape& tape = logits_.tape();
  NoGradGuard no_grad(tape);
  const Tensor probs = mean().value();
  Tensor out = Tensor::empty(probs.shape(), probs.dtype());
  generator.bernoulli(out, probs);
  return out;
}

// ---- Categorical ----

Categorical::Categorical(const Var& logits) : logits_(logits), log_probs_(log_softmax(logits, -1)) {}

Var Categorical::log_prob(std::span<const int32_t> values) const {
  return -cross_entropy(logits_, values, Reduction::none);
}

Var Categorical::probs() const { return exp(log_probs_); }

Var Categorical::entropy() const { return -sum(probs() * log_probs_, {-1}); }

std::vector<int32_t> Categorical::sample(Generator& generator) const {
  const Tensor& lp = log_probs_.value();
  const int64_t K = lp.dim(-1), rows = lp.numel() / K;
  Tensor g = Tensor::empty(lp.shape(), DType::f64);
  generator.gumbel(g);
  std::vector<int32_t> out(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {  // argmax_k (log p_k + g_k) is distributed as Categorical(p)
    double best = -INFINITY;
    for (int64_t k = 0; k < K; ++k) {
      const double v = lp.item(r * K + k) + g.item(r * K + k);
      if (v > best) best = v, out[r] = static_cast<int32_t>(k);
    }
  }
  return out;
}

// ---- RelaxedOneHotCategorical ----

RelaxedOneHotCategorical::RelaxedOneHotCategorical(const Var& logits, double temperature)
    : logits_(logits), temperature_(temperature) {
  if (!(temperature > 0)) fail<ValueError>("RelaxedOneHotCategorical: temperature must be > 0, got ", temperature);
}

Var RelaxedOneHotCategorical::rsample(Generator& generator) const {
  Var gumbel = noise(logits_.tape(), logits_.shape(), logits_.dtype(), [&](Tensor& t) { generator.gumbel(t); });
  return softmax((logits_ + gumbel) / temperature_, -1);
}

Tensor RelaxedOneHotCategorical::sample(Generator& generator) const {
  NoGradGuard no_grad(logits_.tape());
  return rsample(generator).value().clone();
}

// log p(y) = log (K-1)! + (K-1) log T + sum_k (a_k - (T+1) log y_k) - K logsumexp_k (a_k - T log y_k)
Var RelaxedOneHotCategorical::log_prob(const Var& y) const {
  const double K = static_cast<double>(logits_.dim(-1)), T = temperature_;
  Var log_y = log(y);
  Var first = sum(logits_ - log_y * (T + 1), {-1});
  Var normaliser = logsumexp(logits_ - log_y * T, {-1});
  return first - normaliser * K + (std::lgamma(K) + (K - 1) * std::log(T));
}

// ---- GaussianMixture ----

GaussianMixture::GaussianMixture(const Var& mixture_logits, const Var& locs, const Var& log_scales)
    : mixture_logits_(mixture_logits), locs_(locs), log_scales_(log_scales) {
  if (locs.rank() != 2 || !(locs.shape() == log_scales.shape()) || mixture_logits.rank() != 1 ||
      mixture_logits.dim(0) != locs.dim(0))
    fail<ShapeError>("GaussianMixture: shapes must be logits (K,), locs (K, D), log_scales (K, D), got ",
                     mixture_logits.shape(), ", ", locs.shape(), ", ", log_scales.shape());
}

Var GaussianMixture::component_log_prob(const Var& x) const {
  const int64_t D = locs_.dim(1);
  if (x.rank() != 2 || x.dim(1) != D)
    fail<ShapeError>("GaussianMixture::log_prob: x must be (B, ", D, "), got ", x.shape());
  Var xb = reshape(x, Shape{x.dim(0), 1, D});  // (B, 1, D) against (K, D): (B, K, D)
  Var standardized = (xb - locs_) / exp(log_scales_);
  Var per_dim = square(standardized) * -0.5 - log_scales_ - kHalfLog2Pi;
  return sum(per_dim, {-1}) + log_softmax(mixture_logits_, 0);  // (B, K)
}

Var GaussianMixture::mean() const {
  Var weights = reshape(softmax(mixture_logits_, 0), Shape{components(), 1});  // (K, 1) against (K, D)
  return sum(weights * locs_, {0});
}

Var GaussianMixture::log_prob(const Var& x) const { return logsumexp(component_log_prob(x), {-1}); }

Tensor GaussianMixture::sample(Generator& generator, int64_t count) const {
  const int64_t K = locs_.dim(0), D = locs_.dim(1);
  Tape& tape = locs_.tape();
  NoGradGuard no_grad(tape);
  Var logits_rows = broadcast_to(mixture_logits_, Shape{count, K});
  const std::vector<int32_t> picks = Categorical(logits_rows).sample(generator);
  Tensor eps = Tensor::empty({count, D}, DType::f64);
  generator.normal(eps);
  Tensor out = Tensor::empty({count, D}, locs_.dtype());
  for (int64_t i = 0; i < count; ++i)
    for (int64_t d = 0; d < D; ++d) {
      const int64_t kd = picks[i] * D + d;
      out.set_item(i * D + d, locs_.value().item(kd) + std::exp(log_scales_.value().item(kd)) * eps.item(i * D + d));
    }
  return out;
}

// ---- KL divergences ----

Var kl_divergence(const Normal& p, const Normal& q) {
  Var variance_ratio = square(p.scale() / q.scale());
  Var mean_term = square((p.loc() - q.loc()) / q.scale());
  return (variance_ratio + mean_term - 1.0) * 0.5 - (p.log_scale() - q.log_scale());
}

Var kl_divergence(const Categorical& p, const Categorical& q) {
  return sum(p.probs() * (p.log_probs() - q.log_probs()), {-1});
}

Var kl_standard_normal(const Var& mu, const Var& log_var) {
  check_same_shape("kl_standard_normal", mu, log_var);
  Tape& tape = common_tape("kl_standard_normal", {mu, log_var});
  if (mu.dtype() != log_var.dtype()) fail<ValueError>("kl_standard_normal: dtypes must match");
  Var out = tape.result(mu.shape(), mu.dtype(), {mu, log_var});
  Tensor y = out.value();
  ops::binary(mu.value(), log_var.value(), y, [](auto m, auto lv) {
    using B = decltype(m);
    return B(0.5) * (m * m + xsimd::exp(lv) - B(1) - lv);
  });
  // d/dmu = mu, d/dlog_var = (exp(log_var) - 1) / 2.
  tape.record("kl_standard_normal", out, {mu, log_var}, [](BackwardContext& ctx) {
    if (ctx.needs_grad(0)) {
      const GradTarget dmu = ctx.input_grad_target(0);
      ops::ternary_into(ctx.grad_output(), ctx.input(0), ctx.input(0), dmu.grad,
                        [](auto dy, auto m, auto) { return dy * m; }, !dmu.overwrite);
    }
    if (ctx.needs_grad(1)) {
      const GradTarget dlv = ctx.input_grad_target(1);
      ops::ternary_into(ctx.grad_output(), ctx.input(1), ctx.input(1), dlv.grad, [](auto dy, auto lv, auto) {
        using B = decltype(lv);
        return dy * B(0.5) * (xsimd::exp(lv) - B(1));
      }, !dlv.overwrite);
    }
  });
  return out;
}

// Note [pairwise Gaussian KL]: the GMVAE's KL(q(z|x) || p(z|k)) for every image and component (models/gmvae.h)
// written with broadcasting is about twelve elementwise ops on (B, K, Z) tensors and as many gradients with
// broadcast reductions, ~10% of a 1-thread GMVAE epoch for 64K values a step. Here exp(lv_q) and exp(-lv_p) are
// taken once per row, the pairs are summed straight into (B, K), and the gradients, with d = mu_q - mu_p,
// v_q = exp(lv_q), w_p = exp(-lv_p) and g = dL/dKL[b, k], are
//   dL/dmu_q[b, j] =  sum_k g d w_p             dL/dlv_q[b, j] = 1/2 (v_q sum_k g w_p - sum_k g)
//   dL/dmu_p[k, j] = -sum_b g d w_p             dL/dlv_p[k, j] = 1/2 sum_b g (1 - (v_q + d^2) w_p).
// Each sum runs in a fixed order (k, or b, ascending) inside one task, so the bits do not depend on threads.
Var kl_normal_pairwise(const Var& mu_q, const Var& log_var_q, const Var& mu_p, const Var& log_var_p) {
  Tape& tape = common_tape("kl_normal_pairwise", {mu_q, log_var_q, mu_p, log_var_p});
  check_same_shape("kl_normal_pairwise", mu_q, log_var_q);
  check_same_shape("kl_normal_pairwise", mu_p, log_var_p);
  if (mu_q.rank() != 2 || mu_p.rank() != 2 || mu_q.dim(1) != mu_p.dim(1))
    fail<ShapeError>("kl_normal_pairwise: q must be (B, Z) and p (K, Z), got ", mu_q.shape(), " and ", mu_p.shape());
  if (mu_q.dtype() != log_var_q.dtype() || mu_q.dtype() != mu_p.dtype() || mu_q.dtype() != log_var_p.dtype())
    fail<ValueError>("kl_normal_pairwise: dtypes must match");
  const int64_t B = mu_q.dim(0), K = mu_p.dim(0), Z = mu_q.dim(1);
  Var out = tape.result(Shape{B, K}, mu_q.dtype(), {mu_q, log_var_q, mu_p, log_var_p});
  Tensor var_q = tape.scratch(Shape{B, Z}, mu_q.dtype()), inv_var_p = tape.scratch(Shape{K, Z}, mu_q.dtype());
  ops::unary(log_var_q.value(), var_q, [](auto lv) { return xsimd::exp(lv); });
  ops::unary(log_var_p.value(), inv_var_p, [](auto lv) { return xsimd::exp(-lv); });
  Tensor kl = out.value();
  dispatch(mu_q.dtype(), [&]<class T>() {
    const T *mq = mu_q.value().data<T>(), *lq = log_var_q.value().data<T>(), *vq = var_q.data<T>();
    const T *mp = mu_p.value().data<T>(), *lp = log_var_p.value().data<T>(), *wp = inv_var_p.data<T>();
    T* y = kl.data<T>();
    parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t k = 0; k < K; ++k) {
          T total = 0;
          for (int64_t j = 0; j < Z; ++j) {
            const T d = mq[b * Z + j] - mp[k * Z + j];
            total += lp[k * Z + j] - lq[b * Z + j] + (vq[b * Z + j] + d * d) * wp[k * Z + j] - T(1);
          }
          y[b * K + k] = T(0.5) * total;
        }
    }, K * Z);
  });
  tape.record("kl_normal_pairwise", out, {mu_q, log_var_q, mu_p, log_var_p}, [B, K, Z](BackwardContext& ctx) {
    Tensor var_q = ctx.scratch(Shape{B, Z}), inv_var_p = ctx.scratch(Shape{K, Z});  // as in the forward
    ops::unary(ctx.input(1), var_q, [](auto lv) { return xsimd::exp(lv); });
    ops::unary(ctx.input(3), inv_var_p, [](auto lv) { return xsimd::exp(-lv); });
    dispatch(ctx.output().dtype(), [&]<class T>() {
      const T *g = ctx.grad_output().data<T>(), *mq = ctx.input(0).data<T>(), *mp = ctx.input(2).data<T>();
      const T *vq = var_q.data<T>(), *wp = inv_var_p.data<T>();
      std::optional<GradTarget> targets[4];
      for (int i = 0; i < 4; ++i)
        if (ctx.needs_grad(i)) targets[i].emplace(ctx.input_grad_target(i));
      // Writes the first contribution or adds to earlier ones (Note [first contribution writes]).
      auto store = [&](int input, int64_t index, T value) {
        T* p = targets[input]->grad.data<T>();
        p[index] = targets[input]->overwrite ? value : p[index] + value;
      };
      // Per-row accumulators in the arena: no allocation per step.
      Tensor acc_a = ctx.scratch(Shape{std::max(B, K), Z}), acc_b = ctx.scratch(Shape{std::max(B, K), Z});
      if (targets[0] || targets[1]) {  // rows of q: sums over k
        parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            T* d_mu = acc_a.data<T>() + b * Z;
            T* g_w = acc_b.data<T>() + b * Z;
            std::fill(d_mu, d_mu + Z, T(0));
            std::fill(g_w, g_w + Z, T(0));
            T g_sum = 0;
            for (int64_t k = 0; k < K; ++k) {
              const T gk = g[b * K + k];
              g_sum += gk;
              for (int64_t j = 0; j < Z; ++j) {
                const T w = wp[k * Z + j];
                d_mu[j] += gk * (mq[b * Z + j] - mp[k * Z + j]) * w;
                g_w[j] += gk * w;
              }
            }
            for (int64_t j = 0; j < Z; ++j) {
              if (targets[0]) store(0, b * Z + j, d_mu[j]);
              if (targets[1]) store(1, b * Z + j, T(0.5) * (vq[b * Z + j] * g_w[j] - g_sum));
            }
          }
        }, K * Z);
      }
      if (targets[2] || targets[3]) {  // rows of p: sums over b
        parallel_for(K, 1, [&](int64_t k0, int64_t k1) {
          for (int64_t k = k0; k < k1; ++k) {
            T* d_mu = acc_a.data<T>() + k * Z;
            T* d_lv = acc_b.data<T>() + k * Z;
            std::fill(d_mu, d_mu + Z, T(0));
            std::fill(d_lv, d_lv + Z, T(0));
            for (int64_t b = 0; b < B; ++b) {
              const T gk = g[b * K + k];
              for (int64_t j = 0; j < Z; ++j) {
                const T w = wp[k * Z + j], d = mq[b * Z + j] - mp[k * Z + j];
                d_mu[j] -= gk * d * w;
                d_lv[j] += T(0.5) * gk * (T(1) - (vq[b * Z + j] + d * d) * w);
              }
            }
            for (int64_t j = 0; j < Z; ++j) {
              if (targets[2]) store(2, k * Z + j, d_mu[j]);
              if (targets[3]) store(3, k * Z + j, d_lv[j]);
            }
          }
        }, B * Z);
      }
    });
  });
  return out;
}

Var kl_normal_full_pairwise(const Var& mu_q, const Var& log_var_q, const Var& mu_p, const Var& precision_tril) {
  check_same_shape("kl_normal_full_pairwise", mu_q, log_var_q);
  const Var& P = precision_tril;
  if (mu_q.rank() != 2 || mu_p.rank() != 2 || P.rank() != 3 || mu_q.dim(1) != mu_p.dim(1) ||
      P.dim(0) != mu_p.dim(0) || P.dim(1) != mu_p.dim(1) || P.dim(2) != mu_p.dim(1))
    fail<ShapeError>("kl_normal_full_pairwise: q must be (B, Z), mu_p (K, Z) and precision_tril (K, Z, Z), got ",
                     mu_q.shape(), ", ", mu_p.shape(), " and ", P.shape());
  const int64_t B = mu_q.dim(0), K = mu_p.dim(0), Z = mu_q.dim(1);
  Tensor identity = mu_q.tape().scratch(Shape{Z, Z}, P.dtype());  // arena memory: no allocation per step
  identity.fill(0);
  for (int64_t j = 0; j < Z; ++j) identity.set_item(j * Z + j, 1.0);
  Var diagonal = sum(P * mu_q.tape().constant(identity), {-1});                      // (K, Z): P_k,jj
  Var d = reshape(mu_q, {1, B, Z}) - reshape(mu_p, {K, 1, Z});                        // (K, B, Z)
  Var mahalanobis = transpose(sum(square(matmul(d, P)), {-1}), 0, 1);                 // (B, K)
  Var trace = matmul(exp(log_var_q), transpose(sum(square(P), {-1}), 0, 1));         // (B, K)
  Var log_det_ratio = reshape(sum(log(diagonal), {-1}) * -2.0, {1, K}) - sum(log_var_q, {-1}, true);
  return (trace + mahalanobis + log_det_ratio - static_cast<double>(Z)) * 0.5;
}

}  // namespace tapegrad
