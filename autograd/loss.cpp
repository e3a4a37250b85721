// Losses: forward and backward side by side; equations and sources in loss.h.
#include "autograd/loss.h"

#include <cstring>

#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/softmax.h"

namespace tapegrad {
namespace {

// 1 for sum, 1/n for mean (none has no reduction factor).
double reduction_scale(Reduction reduction, int64_t n) { return reduction == Reduction::mean ? 1.0 / double(n) : 1.0; }

// A loss computed elementwise from (a, b) of one shape: y_i = f(a_i, b_i), then reduced.
// Backward: da_i += dy_i * dfa(a_i, b_i), db_i += dy_i * dfb(a_i, b_i), where for sum and mean dy_i is the
// scalar gradient times reduction_scale. f, dfa, dfb are capture-free generic lambdas over xsimd batches.
template <class F, class DA, class DB>
Var pointwise_loss(const char* op, const Var& a, const Var& b, Reduction reduction, F f, DA dfa, DB dfb) {
  Tape& tape = common_tape(op, {a, b});
  if (a.dtype() != b.dtype())
    fail<ValueError>(op, ": dtypes must match, got ", dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
  if (!(a.shape() == b.shape()))
    fail<ShapeError>(op, ": targets must have the shape of the input ", a.shape(), ", got ", b.shape());
  const bool reduce = reduction != Reduction::none;
  Var out = tape.result(reduce ? Shape{} : a.shape(), a.dtype(), {a, b});
  Tensor y = out.value();
  Tensor per_element = reduce ? tape.scratch(a.shape(), a.dtype()) : y;
  ops::binary(a.value(), b.value(), per_element, f);
  const double scale = reduction_scale(reduction, a.numel());
  if (reduce) {
    ops::AxisMask all{};
    all.fill(true);
    ops::sum_axes(per_element, all, y);
    y.set_item(0, y.item(0) * scale);
  }
  tape.record(op, out, {a, b}, [reduce, scale, dfa, dfb](BackwardContext& ctx) {
    const Tensor &dy = ctx.grad_output(), &av = ctx.input(0), &bv = ctx.input(1);
    auto rule = [&](int i, auto df) {
      if (!ctx.needs_grad(i)) return;
      const GradTarget dx = ctx.input_grad_target(i);
      if (!reduce) {
        ops::ternary_into(dy, av, bv, dx.grad, [df](auto g, auto x, auto t) { return g * df(x, t); }, !dx.overwrite);
        return;
      }
      const double g = dy.item(0) * scale;
      ops::ternary_into(av, bv, av, dx.grad, [df, g](auto x, auto t, auto) { return decltype(x)(g) * df(x, t); },
                        !dx.overwrite);
    };
    rule(0, dfa);
    rule(1, dfb);
  });
  return out;
}

}  // namespace

Var binary_cross_entropy_with_logits(const Var& logits, const Var& targets, Reduction reduction) {
  return pointwise_loss(
      "binary_cross_entropy_with_logits", logits, targets, reduction,
      [](auto l, auto t) {
        using V = decltype(l);
        return xsimd::max(l, V(0)) - l * t + simd::log1p_exp_neg_abs(l);  // Note [log1p of exp(-|x|)]
      },
      // sigmoid(l) - t; 1 / (1 + exp(-l)) stays finite: exp overflows to inf only where the answer is 0.
      [](auto l, auto t) {
        using V = decltype(l);
        return V(1) / (V(1) + xsimd::exp(-l)) - t;
      },
      [](auto l, auto) { return -l; });
}

Var mse_loss(const Var& pred, const Var& target, Reduction reduction) {
  return pointwise_loss(
      "mse_loss", pred, target, reduction,
      [](auto p, auto t) { return (p - t) * (p - t); },
      [](auto p, auto t) { return (p - t) + (p - t); },
      [](auto p, auto t) { return (t - p) + (t - p); });
}

// Fused log_softmax + NLL: forward keeps log_softmax(x) in the arena; backward is g_b (exp(logp_b) - onehot(k_b)).
Var cross_entropy(const Var& logits, std::span<const int32_t> labels, Reduction reduction) {
  const char* op = "cross_entropy";
  if (logits.rank() != 2) fail<ShapeError>(op, ": logits must have shape (B, C), got ", logits.shape());
  const int64_t B = logits.dim(0), C = logits.dim(1);
  if (static_cast<int64_t>(labels.size()) != B)
    fail<ShapeError>(op, ": labels must hold one class per row of logits ", logits.shape(), ", got ", labels.size(),
                     " labels");
  for (int64_t b = 0; b < B; ++b)
    if (labels[b] < 0 || labels[b] >= C)
      fail<ValueError>(op, ": labels must be in [0, ", C, "), got ", labels[b], " at index ", b, " for ", C,
                       " classes");
  Tape& tape = logits.tape();
  const DType dtype = logits.dtype();
  Tensor logp = tape.scratch(logits.shape(), dtype);
  ops::log_softmax(logits.value(), 1, logp);
  // Backward runs after the caller's labels may be gone: keep a copy in the arena (int32 in 4-byte slots).
  Tensor saved = tape.scratch(Shape{B}, DType::f32);
  if (B) std::memcpy(saved.raw(), labels.data(), sizeof(int32_t) * B);
  const int32_t* k = static_cast<const int32_t*>(saved.raw());
  const void* lp = logp.raw();

  const bool reduce = reduction != Reduction::none;
  const double scale = reduction_scale(reduction, B);
  Var out = tape.result(reduce ? Shape{} : Shape{B}, dtype, {logits});
  Tensor y = out.value();
  dispatch(dtype, [&]<class T>() {
    const T* p = static_cast<const T*>(lp);
    T* py = y.data<T>();
    double total = 0;  // serial in row order: deterministic
    for (int64_t b = 0; b < B; ++b) {
      const T loss = -p[b * C + k[b]];
      if (reduce) total += loss;
      else py[b] = loss;
    }
    if (reduce) py[0] = static_cast<T>(total * scale);
  });

  tape.record(op, out, {logits}, [lp, k, B, C, reduce, scale](BackwardContext& ctx) {
    const Tensor& dy = ctx.grad_output();
    Tensor& dx = ctx.input_grad(0);
    dispatch(dx.dtype(), [&]<class T>() {
      const T* p = static_cast<const T*>(lp);
      const T* g = dy.data<T>();
      T* d = dx.data<T>();
      parallel_for(B, std::max<int64_t>(1, ops::kElementwiseGrain / std::max<int64_t>(C, 1)), [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const T gb = reduce ? static_cast<T>(g[0] * scale) : g[b];
          const T* row = p + b * C;
          simd::zip3(row, row, row, d + b * C, C, [gb](auto v, auto, auto) { return decltype(v)(gb) * xsimd::exp(v); },
                     /*accumulate=*/true);
          d[b * C + k[b]] -= gb;
        }
      }, C);
    });
  });
  return out;
}

}  // namespace tapegrad
