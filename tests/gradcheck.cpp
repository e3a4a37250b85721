#include "gradcheck.h"

#include <cmath>

#include "ops/error.h"

namespace tapegrad::testing {

Tensor uniform(const Shape& shape, double low, double high, uint64_t seed, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  fill_uniform(t, seed, 0, low, high);
  return t;
}

Tensor uniform_off_zero(const Shape& shape, double low, double high, double margin, uint64_t seed) {
  Tensor t = uniform(shape, low, high, seed);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = t.item(i);
    if (std::abs(v) < margin) t.set_item(i, v < 0 ? -margin : margin);
  }
  return t;
}

namespace {

// Compensated (Neumaier 1974) summation. A plain double sum of a few thousand terms of size ~10 (log_softmax
// over a 1003-wide row) carries ~1e-12 of rounding, which the central difference divides by 2h = 2e-6: ~5e-7,
// above the checked tolerance, and different on every instruction set (seen on AVX-512).
double weighted_sum(const Tensor& out, const Tensor& w) {
  double total = 0, compensation = 0;
  for (int64_t i = 0; i < out.numel(); ++i) {
    const double term = out.item(i) * w.item(i), next = total + term;
    compensation += std::abs(total) >= std::abs(term) ? (total - next) + term : (term - next) + total;
    total = next;
  }
  return total + compensation;
}

// L(x) = sum(f(x) * w) on a fresh tape, with nothing recorded.
double loss_at(const Function& f, const std::vector<Tensor>& xs, const Tensor& w) {
  Tape tape;
  NoGradGuard no_grad(tape);
  std::vector<Var> leaves;
  for (const Tensor& x : xs) leaves.push_back(tape.leaf(x, false));
  return weighted_sum(f(tape, leaves).value(), w);
}

bool close(double analytic, double numeric, const GradcheckOptions& o) {
  return std::abs(analytic - numeric) <= o.atol + o.rtol * std::max(std::abs(analytic), std::abs(numeric));
}

}  // namespace

std::string gradcheck(const Function& f, const std::vector<Tensor>& inputs, const GradcheckOptions& o) {
  std::vector<Tensor> xs;
  for (const Tensor& x : inputs) xs.push_back(x.to(DType::f64));

  // Analytic gradients of L = sum(f(x) * w).
  Tape tape;
  std::vector<Var> leaves;
  for (const Tensor& x : xs) leaves.push_back(tape.leaf(x, true));
  Var out = f(tape, leaves);
  if (out.dtype() != DType::f64) return "gradcheck: the function must keep float64 inputs in float64";
  Tensor w = Tensor::empty(out.shape(), DType::f64);
  fill_normal(w, o.seed, 0);
  tape.backward(out, w);

  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor analytic = leaves[i].grad();
    Tensor& x = xs[i];
    auto numeric_along = [&](const Tensor& direction) {  // (L(x + h v) - L(x - h v)) / 2h
      const Tensor saved = x.clone();
      for (int64_t k = 0; k < x.numel(); ++k) x.set_item(k, saved.item(k) + o.step * direction.item(k));
      const double plus = loss_at(f, xs, w);
      for (int64_t k = 0; k < x.numel(); ++k) x.set_item(k, saved.item(k) - o.step * direction.item(k));
      const double minus = loss_at(f, xs, w);
      x.copy_from(saved);
      return (plus - minus) / (2 * o.step);
    };
    auto check_coordinate = [&](int64_t k) -> std::string {
      Tensor e = Tensor::zeros(x.shape(), DType::f64);
      e.set_item(k, 1.0);
      const double numeric = numeric_along(e);
      if (close(analytic.item(k), numeric, o)) return "";
      return cat("input ", i, " ", x.shape(), " element ", k, ": analytic ", analytic.item(k), " vs numeric ", numeric,
                 " (difference ", analytic.item(k) - numeric, ")");
    };
    if (x.numel() <= o.full_check_limit) {
      for (int64_t k = 0; k < x.numel(); ++k)
        if (auto failure = check_coordinate(k); !failure.empty()) return failure;
      continue;
    }
    for (int p = 0; p < o.projections; ++p) {
      Tensor v = Tensor::empty(x.shape(), DType::f64);
      fill_normal(v, o.seed + 1 + p + 100 * i, 0);
      double analytic_projection = 0;
      for (int64_t k = 0; k < x.numel(); ++k) analytic_projection += analytic.item(k) * v.item(k);
      const double numeric = numeric_along(v);
      // A projection sums ~numel terms: scale the floor with it.
      GradcheckOptions scaled = o;
      scaled.atol = o.atol * std::sqrt(static_cast<double>(x.numel()));
      if (!close(analytic_projection, numeric, scaled))
        return cat("input ", i, " ", x.shape(), " projection ", p, ": analytic ", analytic_projection, " vs numeric ",
                   numeric);
    }
    for (int64_t k : {int64_t{0}, x.numel() / 3, x.numel() - 1})
      if (auto failure = check_coordinate(k); !failure.empty()) return failure;
  }
  return "";
}

}  // namespace tapegrad::testing
