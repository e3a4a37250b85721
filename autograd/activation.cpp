// Activations: forward and backward side by side, derivatives written in terms of the input or the result.
#include "autograd/activation.h"

#include "autograd/elementwise_op.h"

namespace tapegrad {

using detail::unary_op;

namespace {
// Stable sigmoid: 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) for x < 0; the exponent is always <= 0.
template <class B>
B stable_sigmoid(const B& x) {
  const B e = xsimd::exp(-xsimd::abs(x));
  return xsimd::select(x >= B(0), B(1) / (B(1) + e), e / (B(1) + e));
}
// log(1 + e^-|x|), the part of softplus and log_sigmoid that needs care: Note [log1p of exp(-|x|)] in ops/simd.h.
using simd::log1p_exp_neg_abs;
}  // namespace

Var relu(const Var& x) {
  return unary_op("relu", x, [](auto v) { return xsimd::max(v, decltype(v)(0)); },
                  [](auto dy, auto v, auto) { return xsimd::select(v > decltype(v)(0), dy, decltype(v)(0)); });
}

Var leaky_relu(const Var& x, double slope) {
  return unary_op(
      "leaky_relu", x, [slope](auto v) { return xsimd::select(v > decltype(v)(0), v, v * decltype(v)(slope)); },
      [slope](auto dy, auto v, auto) { return xsimd::select(v > decltype(v)(0), dy, dy * decltype(v)(slope)); });
}

// elu'(x) = 1 for x > 0, alpha e^x = y + alpha otherwise.
Var elu(const Var& x, double alpha) {
  return unary_op(
      "elu", x,
      [alpha](auto v) { return xsimd::select(v > decltype(v)(0), v, decltype(v)(alpha) * xsimd::expm1(v)); },
      [alpha](auto dy, auto v, auto y) {
        return xsimd::select(v > decltype(v)(0), dy, dy * (y + decltype(v)(alpha)));
      });
}

// tanh' = 1 - y^2.
Var tanh(const Var& x) {
  return unary_op("tanh", x, [](auto v) { return xsimd::tanh(v); },
                  [](auto dy, auto, auto y) { return dy * (decltype(y)(1) - y * y); });
}

// sigmoid' = y (1 - y).
Var sigmoid(const Var& x) {
  return unary_op("sigmoid", x, [](auto v) { return stable_sigmoid(v); },
                  [](auto dy, auto, auto y) { return dy * y * (decltype(y)(1) - y); });
}

// softplus(x) = max(x, 0) + log(1 + e^-|x|); softplus' = sigmoid(x).
Var softplus(const Var& x) {
  return unary_op("softplus", x,
                  [](auto v) { return xsimd::max(v, decltype(v)(0)) + log1p_exp_neg_abs(v); },
                  [](auto dy, auto v, auto) { return dy * stable_sigmoid(v); });
}

// log_sigmoid(x) = min(x, 0) - log(1 + e^-|x|); log_sigmoid' = 1 - sigmoid(x) = sigmoid(-x).
Var log_sigmoid(const Var& x) {
  return unary_op("log_sigmoid", x,
                  [](auto v) { return xsimd::min(v, decltype(v)(0)) - log1p_exp_neg_abs(v); },
                  [](auto dy, auto v, auto) { return dy * stable_sigmoid(-v); });
}

}  // namespace tapegrad
