// matmul and linear, forward and backward side by side. See autograd/linalg.h for shapes and equations.
#include "autograd/linalg.h"

#include "ops/gemm.h"
#include "ops/thin_linear.h"
#include "ops/layout.h"

namespace tapegrad {

using ops::Trans;

namespace {
// (M, K, N) of one product and the batch count; `b_batched` is false when one matrix b serves every batch.
struct MatmulDims {
  int64_t batch = 1, M = 0, K = 0, N = 0;
  bool b_batched = false;
};

MatmulDims matmul_dims(const Var& a, const Var& b) {
  common_tape("matmul", {a, b});
  const Shape &sa = a.shape(), &sb = b.shape();
  if (a.dtype() != b.dtype())
    fail<ValueError>("matmul: dtypes must match, got ", dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
  const bool ranks_ok = (sa.rank() == 2 && sb.rank() == 2) || (sa.rank() == 3 && (sb.rank() == 2 || sb.rank() == 3));
  if (!ranks_ok)
    fail<ShapeError>("matmul: operands must be (M, K) @ (K, N), (B, M, K) @ (B, K, N) or (B, M, K) @ (K, N), got ",
                     sa, " @ ", sb);
  MatmulDims d;
  d.M = sa[sa.rank() - 2];
  d.K = sa[sa.rank() - 1];
  d.N = sb[sb.rank() - 1];
  if (sb[sb.rank() - 2] != d.K) fail<ShapeError>("matmul: inner dimensions must match, got ", sa, " @ ", sb);
  if (sa.rank() == 3) {
    d.batch = sa[0];
    d.b_batched = sb.rank() == 3;
    if (d.b_batched && sb[0] != d.batch) fail<ShapeError>("matmul: batch dimensions must match, got ", sa, " @ ", sb);
  }
  return d;
}
}  // namespace

// Note [matmul broadcast]: (B, M, K) @ (K, N) is one (B*M, K) @ (K, N) product, since a's batches are
// contiguous rows; so that case (and its gradient dB = A^T dY summed over the batch) is a single gemm.
Var matmul(const Var& a, const Var& b) {
  MatmulDims d = matmul_dims(a, b);
  if (!d.b_batched) {
    d.M *= d.batch;
    d.batch = 1;
  }
  const Shape out_shape = a.rank() == 3 ? Shape{a.dim(0), a.dim(1), d.N} : Shape{d.M, d.N};
  Var out = a.tape().result(out_shape, a.dtype(), {a, b});
  Tensor y = out.value();
  dispatch(a.dtype(), [&]<class T>() {
    const T *pa = a.value().data<T>(), *pb = b.value().data<T>();
    T* py = y.data<T>();
    for (int64_t i = 0; i < d.batch; ++i)
      ops::gemm<T>(Trans::no, Trans::no, d.M, d.N, d.K, T(1), pa + i * d.M * d.K, d.K, pb + i * d.K * d.N, d.N, T(0),
                   py + i * d.M * d.N, d.N);
  });
  a.tape().record("matmul", out, {a, b}, [d](BackwardContext& ctx) {
    dispatch(ctx.output().dtype(), [&]<class T>() {
      const T* dy = ctx.grad_output().data<T>();
      const T *pa = ctx.input(0).data<T>(), *pb = ctx.input(1).data<T>();
      const int64_t sa = d.M * d.K, sb = d.K * d.N, sy = d.M * d.N;
      // beta = 0 writes a first contribution, 1 adds to earlier ones (Note [first contribution writes]).
      if (ctx.needs_grad(0)) {  // dA (M, K) (+)= dY (M, N) @ B^T (N, K)
        const GradTarget da = ctx.input_grad_target(0);
        for (int64_t i = 0; i < d.batch; ++i)
          ops::gemm<T>(Trans::no, Trans::yes, d.M, d.K, d.N, T(1), dy + i * sy, d.N, pb + i * sb, d.N,
                       da.overwrite ? T(0) : T(1), da.grad.data<T>() + i * sa, d.K);
      }
      if (ctx.needs_grad(1)) {  // dB (K, N) (+)= A^T (K, M) @ dY (M, N)
        const GradTarget db = ctx.input_grad_target(1);
        for (int64_t i = 0; i < d.batch; ++i)
          ops::gemm<T>(Trans::yes, Trans::no, d.K, d.N, d.M, T(1), pa + i * sa, d.K, dy + i * sy, d.N,
                       db.overwrite ? T(0) : T(1), db.grad.data<T>() + i * sb, d.N);
      }
    });
  });
  return out;
}

namespace {
struct LinearDims {
  int64_t rows, in, out;
};

// Note [linear at small batch]: gemm packs its B operand, all of it, on every call. y = x w^T makes the weight
// the B operand, so at batch 16 each forward transposed and packed all 784 x 400 weights to multiply them by
// only 16 rows (transpose_8x8 and pack_b took 16% of an epoch, about as much as the multiply-adds). The
// transposed products y^T = w x^T and dx^T = w^T dy^T make the weight the A operand instead, which gemm reads
// in place when the other side has at most 2 NR columns (Note [gemm blocking]); only x^T or dy^T is packed.
// Bits: every element is the same FMA chain over the same K blocks onto the same starting value (the bias, or
// dx), because a * b = b * a exactly (Note [gemm determinism]); the choice depends on the batch alone, never on
// the thread count. 16 rows are at most 2 NR columns for floats (NR = 16) and doubles (NR = 8) with AVX2.
constexpr int64_t kSmallBatch = 16;

// dst (cols, rows) = src (rows, cols)^T.
template <class T>
void transpose(const T* src, int64_t rows, int64_t cols, T* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

LinearDims linear_dims(const Var& x, const Var& w, const Var* b) {
  if (b) common_tape("linear", {x, w, *b});
  else common_tape("linear", {x, w});
  if (x.dtype() != w.dtype() || (b && b->dtype() != x.dtype()))
    fail<ValueError>("linear: dtypes must match, got ", dtype_name(x.dtype()), " and ", dtype_name(w.dtype()));
  if (w.rank() != 2) fail<ShapeError>("linear: weight must be 2-D (out, in), got ", w.shape());
  if (x.rank() < 1 || x.dim(-1) != w.dim(1))
    fail<ShapeError>("linear: input features must match the weight's (out, in), got ", x.shape(), " and ", w.shape());
  if (b && !(b->shape() == Shape{w.dim(0)}))
    fail<ShapeError>("linear: bias must have shape (", w.dim(0), ",), got ", b->shape());
  return {x.numel() / w.dim(1), w.dim(1), w.dim(0)};
}

// x: (rows, in), w: (out, in), b: (out,) or null.
Var linear_impl(const Var& x, const Var& w, const Var* b) {
  const LinearDims d = linear_dims(x, w, b);
  const Shape out_shape = x.shape().with_dim(-1, d.out);
  Tape& tape = x.tape();
  const Var inputs[3] = {x, w, b ? *b : w};
  Var out = tape.result(out_shape, x.dtype(), inputs, b ? 3 : 2);
  Tensor y = out.value();
  const bool thin = d.out >= 1 && d.out <= ops::kThinOutputs;  // Note [thin linear] in ops/thin_linear.h
  if (thin) {  // at every batch size, so that a row's bits do not depend on the batch
    dispatch(x.dtype(), [&]<class T>() {
      ops::thin_linear_forward<T>(x.value().data<T>(), w.value().data<T>(), b ? b->value().data<T>() : nullptr,
                                  y.data<T>(), d.rows, d.in, d.out);
    });
  } else if (d.rows <= kSmallBatch) {  // Note [linear at small batch]: y^T = w x^T, then one small transpose
    Tensor yt = tape.scratch(Shape{d.out, d.rows}, x.dtype());
    if (b) {  // y^T's rows start as the bias, as y's rows do below
      ops::Strides from_bias{}, rows{};
      from_bias[0] = 1;
      rows[0] = d.rows;
      rows[1] = 1;
      ops::strided_copy(Shape{d.out, d.rows}, b->value(), 0, from_bias, yt, 0, rows, /*accumulate=*/false);
    }
    dispatch(x.dtype(), [&]<class T>() {
      ops::gemm<T>(Trans::no, Trans::yes, d.out, d.rows, d.in, T(1), w.value().data<T>(), d.in, x.value().data<T>(),
                   d.in, b ? T(1) : T(0), yt.data<T>(), d.rows);
      transpose(yt.data<T>(), d.out, d.rows, y.data<T>());
    });
  } else {
    dispatch(x.dtype(), [&]<class T>() {  // the bias enters in gemm's epilogue: no pass over y (Note [gemm bias])
      ops::gemm<T>(Trans::no, Trans::yes, d.rows, d.out, d.in, T(1), x.value().data<T>(), d.in, w.value().data<T>(),
                   d.in, T(0), y.data<T>(), d.out, b ? b->value().data<T>() : nullptr);
    });
  }
  const bool has_bias = b != nullptr;
  tape.record("linear", out, inputs, b ? 3 : 2, [d, has_bias, thin](BackwardContext& ctx) {
    dispatch(ctx.output().dtype(), [&]<class T>() {
      const T* dy = ctx.grad_output().data<T>();
      // beta = 0 writes a first contribution, 1 adds to earlier ones (Note [first contribution writes]).
      if (ctx.needs_grad(0) && d.rows <= kSmallBatch) {  // dx^T (in, rows) (+)= w^T (in, out) @ dy^T (out, rows)
        const GradTarget dx = ctx.input_grad_target(0);
        Tensor dxt = ctx.scratch(Shape{d.in, d.rows});
        if (!dx.overwrite) transpose(dx.grad.data<T>(), d.rows, d.in, dxt.data<T>());
        ops::gemm<T>(Trans::yes, Trans::yes, d.in, d.rows, d.out, T(1), ctx.input(1).data<T>(), d.in, dy, d.out,
                     dx.overwrite ? T(0) : T(1), dxt.data<T>(), d.rows);
        transpose(dxt.data<T>(), d.in, d.rows, dx.grad.data<T>());
      } else if (ctx.needs_grad(0)) {  // dx (rows, in) (+)= dy (rows, out) @ w (out, in)
        const GradTarget dx = ctx.input_grad_target(0);
        ops::gemm<T>(Trans::no, Trans::no, d.rows, d.in, d.out, T(1), dy, d.out, ctx.input(1).data<T>(), d.in,
                     dx.overwrite ? T(0) : T(1), dx.grad.data<T>(), d.in);
      }
      if (ctx.needs_grad(1) && thin) {
        const GradTarget dw = ctx.input_grad_target(1);
        ops::thin_linear_weight_grad<T>(dy, ctx.input(0).data<T>(), dw.grad.data<T>(), d.rows, d.in, d.out,
                                        !dw.overwrite);
      } else if (ctx.needs_grad(1)) {  // dw (out, in) (+)= dy^T (out, rows) @ x (rows, in)
        const GradTarget dw = ctx.input_grad_target(1);
        ops::gemm<T>(Trans::yes, Trans::no, d.out, d.in, d.rows, T(1), dy, d.out, ctx.input(0).data<T>(), d.in,
                     dw.overwrite ? T(0) : T(1), dw.grad.data<T>(), d.in);
      }
    });
    // db += dy summed over rows: the broadcast-gradient helper's deterministic column sum (ops::sum_axes).
    if (has_bias && ctx.needs_grad(2)) ctx.accumulate(2, ctx.grad_output());
  });
  return out;
}
}  // namespace

Var linear(const Var& x, const Var& w) { return linear_impl(x, w, nullptr); }
Var linear(const Var& x, const Var& w, const Var& b) { return linear_impl(x, w, &b); }

}  // namespace tapegrad
