// The two shapes most differentiable ops take, written once (internal to autograd/):
//   unary_op:  y = f(x),    dx += g(dy, x, y)
//   binary_op: y = f(a, b), broadcasting, with a backward rule of its own.
// Backward formulas are written in terms of the input or the result (Adept-2): exp' = y, tanh' = 1 - y^2,
// so backward reuses what forward computed instead of recomputing it.
#pragma once

#include <xsimd/xsimd.hpp>

#include "autograd/tape.h"
#include "ops/elementwise.h"

namespace tapegrad::detail {

// `forward(x)` and `backward(dy, x, y)` are generic lambdas over xsimd batches. They may capture numbers
// (a slope, an exponent): the backward lambda is stored in the tape's arena.
template <class Forward, class Backward>
Var unary_op(const char* op, const Var& x, Forward forward, Backward backward) {
  Tape& tape = x.tape();
  Var out = tape.result(x.shape(), x.dtype(), {x});
  Tensor y = out.value();  // a Tensor copy aliases the slot's memory: writing it fills the result
  ops::unary(x.value(), y, forward);
  tape.record(op, out, {x}, [backward](BackwardContext& ctx) {
    const GradTarget dx = ctx.input_grad_target(0);
    ops::ternary_into(ctx.grad_output(), ctx.input(0), ctx.output(), dx.grad, backward, !dx.overwrite);
  });
  return out;
}

// Checks that a and b share a tape and a dtype, and returns their broadcast shape.
Shape binary_shape(const char* op, const Var& a, const Var& b);

}  // namespace tapegrad::detail
