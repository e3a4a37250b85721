#include "autograd/conv.h"

namespace tapegrad {

namespace {

enum class Direction { forward_conv, transposed };

// One implementation for both directions: they share a geometry written in conv2d terms and swap kernels
// (Note [transposed convolution is the adjoint] in ops/conv.h).
Var convolution(const char* op, Direction direction, const Var& x, const Var& weight, const Var* bias,
                const Conv2dOptions& options) {
  Tape& tape = bias ? common_tape(op, {x, weight, *bias}) : common_tape(op, {x, weight});
  if (x.dtype() != weight.dtype() || (bias && bias->dtype() != x.dtype()))
    fail<ValueError>(op, ": dtypes of input, weight and bias must match");
  const bool transposed = direction == Direction::transposed;
  const ops::Conv2dGeometry g = transposed ? ops::conv_transpose2d_geometry(x.shape(), weight.shape(), options)
                                           : ops::conv2d_geometry(x.shape(), weight.shape(), options);
  const int64_t out_channels = transposed ? g.C : g.F;
  if (bias && !(bias->shape() == Shape{out_channels}))
    fail<ShapeError>(op, ": bias must have shape (", out_channels, ",), got ", bias->shape());
  const Shape out_shape = transposed ? g.input_shape() : g.output_shape();
  const Var inputs[3] = {x, weight, bias ? *bias : x};
  const size_t count = bias ? 3 : 2;
  Var out = tape.result(out_shape, x.dtype(), inputs, count);
  Tensor y = out.value();
  dispatch(x.dtype(), [&]<class T>() {
    const T* b = bias ? bias->value().data<T>() : nullptr;
    if (transposed) ops::conv_transpose2d_forward<T>(g, x.value().data<T>(), weight.value().data<T>(), b, y.data<T>());
    else ops::conv2d_forward<T>(g, x.value().data<T>(), weight.value().data<T>(), b, y.data<T>());
  });
  tape.record(op, out, inputs, count, [g, transposed, has_bias = bias != nullptr](BackwardContext& ctx) {
    dispatch(ctx.output().dtype(), [&]<class T>() {
      const T* dy = ctx.grad_output().data<T>();
      const T* xv = ctx.input(0).data<T>();
      const T* wv = ctx.input(1).data<T>();
      if (ctx.needs_grad(0)) {
        T* dx = ctx.input_grad(0).data<T>();
        if (transposed) ops::conv_transpose2d_backward_input<T>(g, dy, wv, dx);
        else ops::conv2d_backward_input<T>(g, dy, wv, dx);
      }
      if (ctx.needs_grad(1)) {
        T* dw = ctx.input_grad(1).data<T>();
        if (transposed) ops::conv_transpose2d_backward_weight<T>(g, dy, xv, dw);
        else ops::conv2d_backward_weight<T>(g, dy, xv, dw);
      }
      if (has_bias && ctx.needs_grad(2)) {
        T* db = ctx.input_grad(2).data<T>();
        if (transposed) ops::conv_transpose2d_backward_bias<T>(g, dy, db);
        else ops::conv2d_backward_bias<T>(g, dy, db);
      }
    });
  });
  return out;
}

}  // namespace

Var conv2d(const Var& x, const Var& weight, const Conv2dOptions& options) {
  return convolution("conv2d", Direction::forward_conv, x, weight, nullptr, options);
}
Var conv2d(const Var& x, const Var& weight, const Var& bias, const Conv2dOptions& options) {
  return convolution("conv2d", Direction::forward_conv, x, weight, &bias, options);
}
Var conv_transpose2d(const Var& x, const Var& weight, const Conv2dOptions& options) {
  return convolution("conv_transpose2d", Direction::transposed, x, weight, nullptr, options);
}
Var conv_transpose2d(const Var& x, const Var& weight, const Var& bias, const Conv2dOptions& options) {
  return convolution("conv_transpose2d", Direction::transposed, x, weight, &bias, options);
}

}  // namespace tapegrad
