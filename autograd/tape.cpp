#include "autograd/tape.h"

#include <cmath>
#include <cstring>
#include <sstream>

#include "ops/elementwise.h"
#include "ops/reduce.h"

namespace tapegrad {

Parameter::Parameter(std::string parameter_name, Tensor initial_value)
    : name(std::move(parameter_name)),
      value(std::move(initial_value)),
      grad(Tensor::zeros(value.shape(), value.dtype())) {}

Tensor& Parameter::current_grad() {
  if (grad_stale) {
    ops::zero(grad);
    grad_stale = false;
  }
  return grad;
}

// ---- Var ----

void Var::check_alive() const {
  if (!tape_) throw TapeError("Var: this variable was default-constructed and holds no value");
  tape_->check_var(*this);
}
const Tensor& Var::value() const {
  check_alive();
  return tape_->slots_[slot_].value;
}
bool Var::requires_grad() const {
  check_alive();
  return tape_->slots_[slot_].requires_grad;
}
Tensor Var::grad() const {
  check_alive();
  const auto& slot = tape_->slots_[slot_];
  if (Tape::grad_valid(slot)) return slot.grad;
  return Tensor::zeros(slot.value.shape(), slot.value.dtype());
}
double Var::item() const {
  if (numel() != 1) fail<ShapeError>("item: variable must hold one element, got shape ", shape());
  return value().item(0);
}
Tape& Var::tape() const {
  check_alive();
  return *tape_;
}

// ---- Tape ----

Tape::Tape(size_t arena_bytes) : arena_(arena_bytes) {
  slots_.reserve(1024);
  nodes_.reserve(1024);
}

void Tape::check_var(const Var& v) const {
  if (v.tape_ != this) throw TapeError("Var: variable belongs to another tape");
  if (v.generation_ != generation_ || v.slot_ >= slots_.size())
    fail<TapeError>("Var: variable used after its tape was reset (made in generation ", v.generation_,
                    ", tape is at generation ", generation_, ")\nhint: keep results as Tensors (var.value().clone()) "
                    "if they must outlive Tape::reset()");
}

Var Tape::add_slot(Tensor value, bool requires_grad) {
  Slot slot;
  slot.value = std::move(value);
  slot.requires_grad = requires_grad;
  slots_.push_back(std::move(slot));
  return Var(this, static_cast<uint32_t>(slots_.size() - 1), generation_);
}

Var Tape::constant(const Tensor& value) { return add_slot(value, false); }

Var Tape::leaf(const Tensor& value, bool requires_grad) { return add_slot(value, requires_grad); }

Var Tape::param(Parameter& parameter) {
  if (!(parameter.grad.shape() == parameter.value.shape()) || parameter.grad.dtype() != parameter.value.dtype() ||
      !parameter.grad.defined()) {
    parameter.grad = Tensor::zeros(parameter.value.shape(), parameter.value.dtype());
    parameter.grad_stale = false;
  }
  Var v = add_slot(parameter.value, true);
  Slot& slot = slots_.back();
  slot.grad = parameter.grad;
  slot.parameter = &parameter;
  return v;
}

Tensor Tape::scratch(const Shape& shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  return Tensor::view_of(arena_.allocate(bytes == 0 ? 1 : bytes), shape, dtype);
}

Var Tape::result(const Shape& shape, DType dtype, std::initializer_list<Var> inputs) {
  return result(shape, dtype, inputs.begin(), inputs.size());
}

Var Tape::result(const Shape& shape, DType dtype, const Var* inputs, size_t count) {
  bool requires_grad = false;
  for (size_t i = 0; i < count; ++i) {
    check_var(inputs[i]);
    requires_grad = requires_grad || slots_[inputs[i].slot_].requires_grad;
  }
  return add_slot(scratch(shape, dtype), requires_grad && grad_enabled_);
}

Var Tape::alias(const Var& x, const Shape& shape) {
  check_var(x);
  return add_slot(slots_[x.slot_].value.reshaped(shape), slots_[x.slot_].requires_grad && grad_enabled_);
}

void Tape::push_node(const char* op, const Var& out, const Var* inputs, size_t count, const void* closure,
                     BackwardFn fn) {
  auto* input_slots = static_cast<uint32_t*>(arena_.allocate(sizeof(uint32_t) * (count ? count : 1), alignof(uint32_t)));
  for (size_t i = 0; i < count; ++i) input_slots[i] = inputs[i].slot_;
  nodes_.push_back(Node{out.slot_, static_cast<uint32_t>(count), input_slots, fn, closure, op});
}

// Note [first contribution writes]: most gradients have one contribution, so zeroing a buffer and then adding
// into it costs a pass over memory (a memset, and a read of the zeros) for nothing. A slot's buffer therefore
// starts uninitialised in each pass; rules that can write their contribution ask for input_grad_target and
// assign on the first contribution (a GEMM with beta = 0, a copy, dx = f(dy, x, y)), add on later ones; rules
// that only know how to add use input_grad, which zeroes on first use. A parameter's gradient works the same
// way after Optimizer::zero_grad marks it stale instead of zeroing 4 bytes per weight (PyTorch's
// set_to_none); one that no rule reached stays stale and reads as zeros (Parameter::current_grad). Bits:
// 0 + g == g, so writing gives the same values as adding into zeros (up to the sign of a zero).
GradTarget Tape::grad_target(uint32_t index) {
  Slot& slot = slots_[index];
  if (slot.parameter) {  // the flag lives in the parameter: a parameter used twice has two slots, one buffer
    const bool overwrite = slot.parameter->grad_stale;
    slot.parameter->grad_stale = false;
    return {slot.grad, overwrite};
  }
  if (slot.grad_ready) return {slot.grad, false};
  slot.grad = scratch(slot.value.shape(), slot.value.dtype());
  slot.grad_ready = true;
  return {slot.grad, true};
}

bool Tape::grad_valid(const Slot& slot) { return slot.parameter ? !slot.parameter->grad_stale : slot.grad_ready; }

Tensor& Tape::grad_buffer(uint32_t index) {
  const GradTarget target = grad_target(index);
  if (target.overwrite) ops::zero(target.grad);
  return target.grad;
}

void Tape::backward(const Var& out) {
  check_var(out);
  if (out.numel() != 1)
    fail<TapeError>("backward: output must be a single element to seed it with 1, got shape ", out.shape(),
                    "\nhint: reduce it first (sum or mean), or pass a seed gradient of the same shape");
  begin_backward(out).fill(1.0);
  walk_backward();
}

void Tape::backward(const Var& out, const Tensor& seed) {
  check_var(out);
  if (!(seed.shape() == out.shape()) || seed.dtype() != out.dtype())
    fail<ShapeError>("backward: seed gradient must match the output, got ", seed.shape(), " ", dtype_name(seed.dtype()),
                     " for ", out.shape(), " ", dtype_name(out.dtype()));
  begin_backward(out).copy_from(seed);
  walk_backward();
}

Tensor& Tape::begin_backward(const Var& out) {
  if (!slots_[out.slot_].requires_grad)
    throw TapeError("backward: output does not require a gradient (no parameter or leaf with requires_grad reaches it, "
                    "or it was computed under NoGradGuard)");
  // Each pass starts from zero for everything but parameters, whose gradients accumulate (as in PyTorch)
  // unless zero_grad marked them stale since (Note [first contribution writes]).
  for (Slot& slot : slots_) slot.grad_ready = false;
  return grad_buffer(out.slot_);
}

void Tape::walk_backward() {
  for (size_t k = nodes_.size(); k-- > 0;) {
    const Node& node = nodes_[k];
    if (!slots_[node.output].grad_ready) continue;  // nothing flowed into this op's result
    BackwardContext ctx(*this, node);
    node.backward(node.closure, ctx);
    if (check_finite_) check_backward(node);
  }
}

// ---- Non-finite detection (Note [check finite]) ----

namespace {
// "nan" or "inf" for the first non-finite element of t, or nullptr when every element is finite.
const char* first_non_finite(const Tensor& t) {
  if (!t.defined()) return nullptr;
  return dispatch(t.dtype(), [&]<class T>() -> const char* {
    const T* p = t.data<T>();
    for (int64_t i = 0, n = t.numel(); i < n; ++i)
      if (!std::isfinite(p[i])) return std::isnan(p[i]) ? "nan" : "inf";
    return nullptr;
  });
}
}  // namespace

void Tape::check_forward(const char* op, const Var& out, const Var* inputs, size_t count) const {
  const char* bad = first_non_finite(slots_[out.slot_].value);
  if (!bad) return;
  std::ostringstream shapes;
  for (size_t i = 0; i < count; ++i) shapes << (i ? ", " : "") << inputs[i].shape();
  fail<NonFiniteError>("non-finite value: ", op, " produced ", bad, " in forward, input", count == 1 ? " " : "s ",
                       shapes.str(), ", output ", slots_[out.slot_].value.shape(),
                       "\nhint: check this op's inputs (log or div of 0, exp overflow, a too large learning rate)");
}

void Tape::check_backward(const Node& node) const {
  for (uint32_t i = 0; i < node.num_inputs; ++i) {
    const Slot& slot = slots_[node.inputs[i]];
    if (!slot.requires_grad || !grad_valid(slot)) continue;
    if (const char* bad = first_non_finite(slot.grad))
      fail<NonFiniteError>("non-finite value: ", node.op, " produced ", bad, " in backward (gradient of input ", i,
                           " of ", node.op, ", shape ", slot.value.shape(), ")");
  }
}

void Tape::reset() {
  slots_.clear();
  nodes_.clear();
  arena_.reset();
  ++generation_;
}

Tape& common_tape(const char* op, std::initializer_list<Var> vars) {
  Tape* tape = nullptr;
  for (const Var& v : vars) {
    Tape& t = v.tape();
    if (tape && tape != &t) fail<TapeError>(op, ": inputs must come from the same tape");
    tape = &t;
  }
  if (!tape) fail<TapeError>(op, ": needs at least one input");
  return *tape;
}

// ---- BackwardContext ----

const Tensor& BackwardContext::grad_output() const { return tape_.slots_[node_.output].grad; }
const Tensor& BackwardContext::output() const { return tape_.slots_[node_.output].value; }
const Tensor& BackwardContext::input(int i) const { return tape_.slots_[node_.inputs[i]].value; }
bool BackwardContext::needs_grad(int i) const { return tape_.slots_[node_.inputs[i]].requires_grad; }
Tensor& BackwardContext::input_grad(int i) { return tape_.grad_buffer(node_.inputs[i]); }
GradTarget BackwardContext::input_grad_target(int i) { return tape_.grad_target(node_.inputs[i]); }
Tensor BackwardContext::scratch(const Shape& shape) const { return tape_.scratch(shape, output().dtype()); }

// Note [broadcast grad]: if y = f(a, b) broadcast a from shape S to the output shape, then each element of a fed
// every output along the broadcast axes, so dL/da is dL/dy summed over those axes (and reshaped to S).
void BackwardContext::accumulate(int i, const Tensor& g) {
  const Shape& in = input(i).shape();  // checked before the buffer is taken, which may leave it uninitialised
  const Shape& out = g.shape();
  if (in == out) {
    const GradTarget target = input_grad_target(i);
    if (target.overwrite) target.grad.copy_from(g);
    else ops::add_into(target.grad, g);
    return;
  }
  if (out.rank() < in.rank()) fail<ShapeError>(node_.op, ": gradient of shape ", out, " cannot reduce to input ", in);
  ops::AxisMask reduce{};
  const int lead = out.rank() - in.rank();
  for (int a = 0; a < out.rank(); ++a) {
    const int64_t in_dim = a < lead ? 1 : in[a - lead];
    if (in_dim != out[a]) {
      if (in_dim != 1) fail<ShapeError>(node_.op, ": gradient of shape ", out, " cannot reduce to input ", in);
      reduce[a] = true;
    }
  }
  const GradTarget target = input_grad_target(i);
  if (target.overwrite) return ops::sum_axes(g, reduce, target.grad);
  Tensor reduced = scratch(in);
  ops::sum_axes(g, reduce, reduced);
  ops::add_into(target.grad, reduced);
}

}  // namespace tapegrad
