// Elementwise arithmetic: each op's forward and backward side by side.
// Gradients of broadcast operands are summed over the broadcast axes by BackwardContext::accumulate.
#include "autograd/arithmetic.h"

#include "autograd/elementwise_op.h"

namespace tapegrad {

using detail::unary_op;

namespace detail {
Shape binary_shape(const char* op, const Var& a, const Var& b) {
  common_tape(op, {a, b});
  if (a.dtype() != b.dtype())
    fail<ValueError>(op, ": dtypes must match, got ", dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
  return broadcast_shapes(a.shape(), b.shape(), op);
}
}  // namespace detail

namespace {
// out = f(a, b) on a new result slot.
template <class F>
Var binary_forward(const char* op, const Var& a, const Var& b, F f) {
  const Shape shape = detail::binary_shape(op, a, b);
  Var out = a.tape().result(shape, a.dtype(), {a, b});
  Tensor y = out.value();
  ops::binary(a.value(), b.value(), y, f);
  return out;
}
// Input i's share of the gradient, f(dy, other input), computed at the output's shape and then accumulated.
// A first contribution of the output's shape is written in place (Note [first contribution writes]).
template <class F>
void accumulate_product(BackwardContext& ctx, int i, const Tensor& other, F f) {
  if (ctx.input(i).shape() == ctx.grad_output().shape()) {
    const GradTarget target = ctx.input_grad_target(i);
    if (target.overwrite) return ops::binary(ctx.grad_output(), other, target.grad, f);
  }
  Tensor g = ctx.scratch(ctx.grad_output().shape());
  ops::binary(ctx.grad_output(), other, g, f);
  ctx.accumulate(i, g);
}
}  // namespace

Var add(const Var& a, const Var& b) {
  Var out = binary_forward("add", a, b, [](auto x, auto y) { return x + y; });
  a.tape().record("add", out, {a, b}, [](BackwardContext& ctx) {
    if (ctx.needs_grad(0)) ctx.accumulate(0, ctx.grad_output());
    if (ctx.needs_grad(1)) ctx.accumulate(1, ctx.grad_output());
  });
  return out;
}

Var sub(const Var& a, const Var& b) {
  Var out = binary_forward("sub", a, b, [](auto x, auto y) { return x - y; });
  a.tape().record("sub", out, {a, b}, [](BackwardContext& ctx) {
    if (ctx.needs_grad(0)) ctx.accumulate(0, ctx.grad_output());
    if (ctx.needs_grad(1)) {
      Tensor g = ctx.scratch(ctx.grad_output().shape());
      ops::unary(ctx.grad_output(), g, [](auto dy) { return -dy; });
      ctx.accumulate(1, g);
    }
  });
  return out;
}

// d(ab)/da = b, d(ab)/db = a.
Var mul(const Var& a, const Var& b) {
  Var out = binary_forward("mul", a, b, [](auto x, auto y) { return x * y; });
  a.tape().record("mul", out, {a, b}, [](BackwardContext& ctx) {
    auto times = [](auto dy, auto v) { return dy * v; };
    if (ctx.needs_grad(0)) accumulate_product(ctx, 0, ctx.input(1), times);
    if (ctx.needs_grad(1)) accumulate_product(ctx, 1, ctx.input(0), times);
  });
  return out;
}

// y = a / b: dy/da = 1 / b, dy/db = -a / b^2 = -y / b.
Var div(const Var& a, const Var& b) {
  Var out = binary_forward("div", a, b, [](auto x, auto y) { return x / y; });
  a.tape().record("div", out, {a, b}, [](BackwardContext& ctx) {
    if (ctx.needs_grad(0)) accumulate_product(ctx, 0, ctx.input(1), [](auto dy, auto v) { return dy / v; });
    if (ctx.needs_grad(1)) {
      Tensor g = ctx.scratch(ctx.grad_output().shape());  // -dy * y at the output's shape ...
      ops::binary(ctx.grad_output(), ctx.output(), g, [](auto dy, auto y) { return -(dy * y); });
      Tensor h = ctx.scratch(ctx.grad_output().shape());  // ... divided by b (broadcast)
      ops::binary(g, ctx.input(1), h, [](auto gy, auto v) { return gy / v; });
      ctx.accumulate(1, h);
    }
  });
  return out;
}

Var neg(const Var& x) {
  return unary_op("neg", x, [](auto v) { return -v; }, [](auto dy, auto, auto) { return -dy; });
}

Var add_scalar(const Var& x, double s) {
  return unary_op("add_scalar", x, [s](auto v) { return v + decltype(v)(s); }, [](auto dy, auto, auto) { return dy; });
}

Var mul_scalar(const Var& x, double s) {
  return unary_op("mul_scalar", x, [s](auto v) { return v * decltype(v)(s); },
                  [s](auto dy, auto, auto) { return dy * decltype(dy)(s); });
}

Var rsub_scalar(double s, const Var& x) {
  return unary_op("rsub_scalar", x, [s](auto v) { return decltype(v)(s) - v; }, [](auto dy, auto, auto) { return -dy; });
}

// y = s / x: dy/dx = -s / x^2 = -y / x.
Var rdiv_scalar(double s, const Var& x) {
  return unary_op("rdiv_scalar", x, [s](auto v) { return decltype(v)(s) / v; },
                  [](auto dy, auto v, auto y) { return -(dy * y) / v; });
}

// y = x^p: dy/dx = p x^(p-1).
Var pow(const Var& x, double p) {
  return unary_op("pow", x, [p](auto v) { return xsimd::pow(v, decltype(v)(p)); },
                  [p](auto dy, auto v, auto) { return dy * decltype(v)(p) * xsimd::pow(v, decltype(v)(p - 1)); });
}

Var square(const Var& x) {
  return unary_op("square", x, [](auto v) { return v * v; },
                  [](auto dy, auto v, auto) { return dy * (v + v); });
}

// y = sqrt(x): dy/dx = 1 / (2 y).
Var sqrt(const Var& x) {
  return unary_op("sqrt", x, [](auto v) { return xsimd::sqrt(v); },
                  [](auto dy, auto, auto y) { return dy / (y + y); });
}

// y = exp(x): dy/dx = y.
Var exp(const Var& x) {
  return unary_op("exp", x, [](auto v) { return xsimd::exp(v); }, [](auto dy, auto, auto y) { return dy * y; });
}

Var log(const Var& x) {
  return unary_op("log", x, [](auto v) { return xsimd::log(v); }, [](auto dy, auto v, auto) { return dy / v; });
}

Var log1p(const Var& x) {
  return unary_op("log1p", x, [](auto v) { return xsimd::log1p(v); },
                  [](auto dy, auto v, auto) { return dy / (v + decltype(v)(1)); });
}

Var abs(const Var& x) {
  return unary_op("abs", x, [](auto v) { return xsimd::abs(v); }, [](auto dy, auto v, auto) {
    using B = decltype(v);
    return xsimd::select(v > B(0), dy, xsimd::select(v < B(0), -dy, B(0)));
  });
}

Var clamp(const Var& x, double low, double high) {
  if (!(low <= high)) fail<ValueError>("clamp: low must be <= high, got ", low, " and ", high);
  return unary_op(
      "clamp", x, [low, high](auto v) { return xsimd::min(xsimd::max(v, decltype(v)(low)), decltype(v)(high)); },
      [low, high](auto dy, auto v, auto) {
        using B = decltype(v);
        return xsimd::select((v > B(low)) && (v < B(high)), dy, B(0));
      });
}

}  // namespace tapegrad
