#include "models/distributions.h"

#include <cmath>
#include <numbers>

#include "autograd/activation.h"
#include "autograd/arithmetic.h"
#include "autograd/loss.h"
#include "autograd/reduction.h"
#include "autograd/shape.h"
#include "ops/elementwise.h"

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

}  // namespace tapegrad
