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

// BCE with logits per element and its derivative in the logits, for both BCE ops below.
struct BceWithLogits {
  template <class V>
  static V value(V l, V t) {
    return xsimd::max(l, V(0)) - l * t + simd::log1p_exp_neg_abs(l);  // Note [log1p of exp(-|x|)]
  }
  // sigmoid(l) - t; 1 / (1 + exp(-l)) stays finite: exp overflows to inf only where the answer is 0.
  template <class V>
  static V d_logits(V l, V t) {
    return V(1) / (V(1) + xsimd::exp(-l)) - t;
  }
};

}  // namespace

Var binary_cross_entropy_with_logits(const Var& logits, const Var& targets, Reduction reduction) {
  return pointwise_loss(
      "binary_cross_entropy_with_logits", logits, targets, reduction,
      [](auto l, auto t) { return BceWithLogits::value(l, t); },
      [](auto l, auto t) { return BceWithLogits::d_logits(l, t); }, [](auto l, auto) { return -l; });
}

// Note [BCE summed per row]: every model here needs -log p(x|z) = sum_d BCE(l_d, x_d), one value per image (or per
// image and class, image and component). As sum(binary_cross_entropy_with_logits(l, x, none), {-1}) that writes the
// (rows, D) per-element losses and reads them back, its backward writes the row gradients broadcast to (rows, D)
// before BCE's backward reads them, and the caller first copies x once per class or component to match l: five
// passes over the largest tensors of a step (M2: 1,000 x 784 floats, 3 MB each, more than an AVX-512 Xeon's 2 MB
// L2, where a copy runs at about 10 GB/s). Here each row is summed in registers, the targets are read through their
// broadcast strides, and the backward reads the row gradient as one scalar per row. Each row is one task's work,
// summed in a fixed order (four SIMD accumulators, then the padded tail): bits do not depend on the thread count.
namespace {

// Offset of the targets row that logits row `row` reads: the leading axes of `shape` against `strides`.
int64_t broadcast_row_offset(const Shape& shape, const std::array<int64_t, kMaxRank>& strides, int64_t row) {
  int64_t offset = 0;
  for (int axis = shape.rank() - 2; axis >= 0; --axis) {
    offset += (row % shape[axis]) * strides[axis];
    row /= shape[axis];
  }
  return offset;
}

// sum_d BCE(l[d], t[d]) over one row of n values.
template <class T>
T bce_row_sum(const T* l, const T* t, int64_t n) {
  using B = simd::Batch<T>;
  constexpr int64_t W = simd::width<T>;
  auto bce = [](const B& x, const B& y) { return BceWithLogits::value(x, y); };
  B acc[4] = {B(0), B(0), B(0), B(0)};
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W)
    for (int k = 0; k < 4; ++k) acc[k] += bce(B::load_unaligned(l + i + k * W), B::load_unaligned(t + i + k * W));
  for (; i + W <= n; i += W) acc[0] += bce(B::load_unaligned(l + i), B::load_unaligned(t + i));
  if (i < n) {  // padded tail: lanes past n are computed, then zeroed before they are added
    alignas(64) T pl[W] = {}, pt[W] = {}, out[W];
    std::copy(l + i, l + n, pl);
    std::copy(t + i, t + n, pt);
    bce(B::load_aligned(pl), B::load_aligned(pt)).store_aligned(out);
    std::fill(out + (n - i), out + W, T(0));
    acc[1] += B::load_aligned(out);
  }
  return simd::horizontal_sum((acc[0] + acc[1]) + (acc[2] + acc[3]));
}

// Both forms of the op: row r of `logits` (its last axis, D values) against the D targets at target_offset[r]
// (arena memory, one offset per row). Forward and backward run one row per iteration, so the bits of a row do not
// depend on the others or on the thread count.
Var bce_row_sum_at(const char* op, const Var& logits, const Var& targets, const int64_t* target_offset) {
  Tape& tape = logits.tape();
  const Shape& shape = logits.shape();
  const Shape rows_shape = shape.without_axis(shape.rank() - 1);
  const int64_t D = shape[shape.rank() - 1], rows = rows_shape.numel();
  const int64_t grain = std::max<int64_t>(1, ops::kElementwiseGrain / std::max<int64_t>(D, 1));  // rows per task
  Var out = tape.result(rows_shape, logits.dtype(), {logits, targets});
  Tensor y = out.value();
  dispatch(logits.dtype(), [&]<class T>() {
    const T *l = logits.value().data<T>(), *t = targets.value().data<T>();
    T* py = y.data<T>();
    parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) py[r] = bce_row_sum(l + r * D, t + target_offset[r], D);
    }, D);
  });

  tape.record(op, out, {logits, targets}, [target_offset, D, rows, grain](BackwardContext& ctx) {
    const Tensor &dy = ctx.grad_output(), &lv = ctx.input(0), &tv = ctx.input(1);
    dispatch(lv.dtype(), [&]<class T>() {
      using B = simd::Batch<T>;
      const T *g = dy.data<T>(), *l = lv.data<T>(), *t = tv.data<T>();
      // dl = g_row (sigmoid(l) - t)
      if (ctx.needs_grad(0)) {
        const GradTarget dl = ctx.input_grad_target(0);
        T* pd = dl.grad.data<T>();
        parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const B gr(g[r]);
            simd::zip3(l + r * D, t + target_offset[r], l + r * D, pd + r * D, D,
                       [gr](B x, B y, B) { return gr * BceWithLogits::d_logits(x, y); }, !dl.overwrite);
          }
        }, D);
      }
      // dt = -g_row l, added into the target row each logits row read. Several rows may read one target row, so
      // each task owns a range of columns and adds the rows in order: no races, the same bits on any thread count.
      if (ctx.needs_grad(1)) {
        T* pd = ctx.input_grad(1).data<T>();
        parallel_for(D, ops::kElementwiseGrain, [&](int64_t c0, int64_t c1) {
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = c0; c < c1; ++c) pd[target_offset[r] + c] -= g[r] * l[r * D + c];
        }, rows);
      }
    });
  });
  return out;
}

// One int64 per logits row in the arena (8-byte slots of an f64 scratch tensor), so the backward can read them.
int64_t* row_offsets(Tape& tape, int64_t rows) {
  return static_cast<int64_t*>(tape.scratch(Shape{rows}, DType::f64).raw());
}

void check_row_sum_inputs(const char* op, const Var& logits, const Var& targets) {
  if (logits.dtype() != targets.dtype())
    fail<ValueError>(op, ": dtypes must match, got ", dtype_name(logits.dtype()), " and ", dtype_name(targets.dtype()));
  if (logits.rank() < 1) fail<ShapeError>(op, ": logits must have at least one axis, got ", logits.shape());
}

}  // namespace

Var binary_cross_entropy_with_logits_row_sum(const Var& logits, const Var& targets) {
  const char* op = "binary_cross_entropy_with_logits_row_sum";
  Tape& tape = common_tape(op, {logits, targets});
  check_row_sum_inputs(op, logits, targets);
  const Shape& shape = logits.shape();
  bool broadcasts = targets.rank() >= 1 && targets.rank() <= shape.rank() && targets.dim(-1) == shape[shape.rank() - 1];
  for (int axis = 1; broadcasts && axis < targets.rank(); ++axis) {  // aligned from the right, as NumPy does
    const int64_t t = targets.dim(-1 - axis), l = shape[shape.rank() - 1 - axis];
    broadcasts = t == l || t == 1;
  }
  if (!broadcasts)
    fail<ShapeError>(op, ": targets must broadcast to the logits ", shape, " over the leading axes only, got ",
                     targets.shape());
  const int64_t rows = shape.without_axis(shape.rank() - 1).numel();
  const auto strides = broadcast_strides(targets.shape(), shape);
  int64_t* offset = row_offsets(tape, rows);
  for (int64_t r = 0; r < rows; ++r) offset[r] = broadcast_row_offset(shape, strides, r);
  return bce_row_sum_at(op, logits, targets, offset);
}

Var binary_cross_entropy_with_logits_row_sum(const Var& logits, const Var& targets,
                                             std::span<const int64_t> target_rows) {
  const char* op = "binary_cross_entropy_with_logits_row_sum";
  Tape& tape = common_tape(op, {logits, targets});
  check_row_sum_inputs(op, logits, targets);
  const Shape& shape = logits.shape();
  const int64_t D = shape[shape.rank() - 1], rows = shape.without_axis(shape.rank() - 1).numel();
  if (targets.rank() != 2 || targets.dim(1) != D)
    fail<ShapeError>(op, ": targets must be (rows, ", D, ") to serve the logits ", shape, ", got ", targets.shape());
  if (static_cast<int64_t>(target_rows.size()) != rows)
    fail<ShapeError>(op, ": target_rows must name one targets row per logits row, ", rows, " for ", shape, ", got ",
                     target_rows.size());
  int64_t* offset = row_offsets(tape, rows);
  for (int64_t r = 0; r < rows; ++r) {
    if (target_rows[r] < 0 || target_rows[r] >= targets.dim(0))
      fail<ValueError>(op, ": target_rows must be in [0, ", targets.dim(0), "), got ", target_rows[r], " at index ", r);
    offset[r] = target_rows[r] * D;
  }
  return bce_row_sum_at(op, logits, targets, offset);
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
