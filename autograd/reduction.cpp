// Reductions and the softmax family: each op's forward and backward side by side (equations in reduction.h).
#include "autograd/reduction.h"

#include <limits>

#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/softmax.h"

namespace tapegrad {
namespace {

// Which axes an op reduces, and the result's shape with (kept) and without (out) the reduced axes.
// Trivially destructible, so backward closures capture it whole.
struct AxisPlan {
  ops::AxisMask mask{};
  Shape kept;  // reduced axes as size 1: the shape dy is viewed as to broadcast back over x
  Shape out;   // the result's shape
};

std::string axes_str(const Axes& axes) {
  std::string s = "[";
  for (size_t i = 0; i < axes.size(); ++i) s += (i ? ", " : "") + std::to_string(axes[i]);
  return s + "]";
}

AxisPlan plan_axes(const char* op, const Shape& shape, const Axes& axes, bool keepdims) {
  AxisPlan p;
  if (axes.empty())  // PyTorch: an empty dim list reduces everything
    for (int a = 0; a < shape.rank(); ++a) p.mask[a] = true;
  for (int axis : axes) {
    const int a = shape.normalize_axis(axis, op);
    if (p.mask[a]) fail<ValueError>(op, ": axes must be distinct, got ", axes_str(axes), " for shape ", shape);
    p.mask[a] = true;
  }
  p.kept = ops::reduced_shape(shape, p.mask);
  for (int a = 0; a < shape.rank(); ++a)
    if (!p.mask[a] || keepdims) p.out.push_back(p.kept[a]);
  return p;
}

// dx += g * dy, with dy (viewed with kept axes) broadcast over x's shape; g may be overwritten.
void accumulate_scaled(BackwardContext& ctx, Tensor& g, const Shape& kept) {
  const GradTarget dx = ctx.input_grad_target(0);
  if (dx.overwrite) return ops::binary(g, ctx.grad_output().reshaped(kept), dx.grad, [](auto a, auto dy) { return a * dy; });
  ops::binary(g, ctx.grad_output().reshaped(kept), g, [](auto a, auto dy) { return a * dy; });
  ops::add_into(dx.grad, g);
}

// dx (+)= scale * dy, dy (viewed with kept axes) broadcast back over x's shape: the backward of sum (scale 1,
// exact) and mean (1 / N). On the first contribution x's value only lends its shape to the broadcast (dx's
// buffer is uninitialised then: Note [first contribution writes]).
void broadcast_back(BackwardContext& ctx, const Shape& kept, double scale) {
  const GradTarget dx = ctx.input_grad_target(0);
  const Tensor dy = ctx.grad_output().reshaped(kept);
  if (dx.overwrite) ops::binary(ctx.input(0), dy, dx.grad, [scale](auto, auto g) { return g * decltype(g)(scale); });
  else ops::binary(dx.grad, dy, dx.grad, [scale](auto a, auto g) { return a + g * decltype(g)(scale); });
}

}  // namespace

Var sum(const Var& x, const Axes& axes, bool keepdims) {
  const AxisPlan p = plan_axes("sum", x.shape(), axes, keepdims);
  Var out = x.tape().result(p.out, x.dtype(), {x});
  Tensor y = out.value();
  ops::sum_axes(x.value(), p.mask, y);
  x.tape().record("sum", out, {x}, [kept = p.kept](BackwardContext& ctx) { broadcast_back(ctx, kept, 1.0); });
  return out;
}

Var sum(const Var& x) { return sum(x, Axes(), false); }

Var mean(const Var& x, const Axes& axes, bool keepdims) {
  const AxisPlan p = plan_axes("mean", x.shape(), axes, keepdims);
  Var out = x.tape().result(p.out, x.dtype(), {x});
  Tensor y = out.value();
  ops::sum_axes(x.value(), p.mask, y);
  const int64_t n = p.out.numel() ? x.numel() / p.out.numel() : 0;
  const double scale = n ? 1.0 / static_cast<double>(n) : std::numeric_limits<double>::quiet_NaN();  // empty: NaN
  ops::unary(y, y, [scale](auto v) { return v * decltype(v)(scale); });
  x.tape().record("mean", out, {x}, [kept = p.kept, scale](BackwardContext& ctx) {
    broadcast_back(ctx, kept, scale);
  });
  return out;
}

Var mean(const Var& x) { return mean(x, Axes(), false); }

Var max(const Var& x, const Axes& axes, bool keepdims) {
  const AxisPlan p = plan_axes("max", x.shape(), axes, keepdims);
  Var out = x.tape().result(p.out, x.dtype(), {x});
  Tensor y = out.value();
  ops::max_axes(x.value(), p.mask, y);
  x.tape().record("max", out, {x}, [p](BackwardContext& ctx) {
    const Tensor& xv = ctx.input(0);
    Tensor tie = ctx.scratch(xv.shape());  // [x == y]
    ops::binary(xv, ctx.output().reshaped(p.kept), tie, [](auto v, auto m) {
      using V = decltype(v);
      return xsimd::select(v == m, V(1), V(0));
    });
    Tensor share = ctx.scratch(p.kept);  // dy / #ties, per output
    ops::sum_axes(tie, p.mask, share);
    ops::binary(ctx.grad_output().reshaped(p.kept), share, share, [](auto dy, auto count) { return dy / count; });
    ops::binary(tie, share, tie, [](auto t, auto s) { return t * s; });
    ops::add_into(ctx.input_grad(0), tie);
  });
  return out;
}

Var logsumexp(const Var& x, const Axes& axes, bool keepdims) {
  const AxisPlan p = plan_axes("logsumexp", x.shape(), axes, keepdims);
  Tape& tape = x.tape();
  Var out = tape.result(p.out, x.dtype(), {x});
  Tensor y = out.value().reshaped(p.kept);
  // The shift: the max, or 0 where the max is infinite, as PyTorch does. A line of -inf then gives
  // log(0) + 0 = -inf instead of -inf - -inf = NaN, and a line holding +inf gives +inf.
  Tensor m = tape.scratch(p.kept, x.dtype());
  ops::max_axes(x.value(), p.mask, m);
  ops::unary(m, m, [](auto v) {
    using V = decltype(v);
    return xsimd::select(xsimd::abs(v) == V(std::numeric_limits<double>::infinity()), V(0), v);
  });
  Tensor e = tape.scratch(x.shape(), x.dtype());  // exp(x - m) <= 1
  ops::binary(x.value(), m, e, [](auto v, auto s) { return xsimd::exp(v - s); });
  ops::sum_axes(e, p.mask, y);
  ops::binary(y, m, y, [](auto s, auto shift) { return xsimd::log(s) + shift; });
  tape.record("logsumexp", out, {x}, [kept = p.kept](BackwardContext& ctx) {
    Tensor g = ctx.scratch(ctx.input(0).shape());  // exp(x - y), 0 where x = -inf (also when y = -inf)
    ops::binary(ctx.input(0), ctx.output().reshaped(kept), g, [](auto v, auto lse) {
      using V = decltype(v);
      return xsimd::select(v == V(-std::numeric_limits<double>::infinity()), V(0), xsimd::exp(v - lse));
    });
    accumulate_scaled(ctx, g, kept);
  });
  return out;
}

Var softmax(const Var& x, int axis) {
  const int a = x.shape().normalize_axis(axis, "softmax");
  Var out = x.tape().result(x.shape(), x.dtype(), {x});
  Tensor y = out.value();
  ops::softmax(x.value(), a, y);
  x.tape().record("softmax", out, {x}, [a](BackwardContext& ctx) {
    ops::softmax_backward(ctx.grad_output(), ctx.output(), a, ctx.input_grad(0));  // dx += y * (dy - sum(dy y))
  });
  return out;
}

Var log_softmax(const Var& x, int axis) {
  const int a = x.shape().normalize_axis(axis, "log_softmax");
  Var out = x.tape().result(x.shape(), x.dtype(), {x});
  Tensor y = out.value();
  ops::log_softmax(x.value(), a, y);
  x.tape().record("log_softmax", out, {x}, [a](BackwardContext& ctx) {
    ops::log_softmax_backward(ctx.grad_output(), ctx.output(), a, ctx.input_grad(0));  // dx += dy - e^y sum(dy)
  });
  return out;
}

}  // namespace tapegrad
