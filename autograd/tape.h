// The tape: reverse-mode automatic differentiation as a Wengert list.
//
// Every differentiable op computes its result, then appends one Node to the tape: which slots it read, which
// slot it wrote, and a backward rule. `backward(loss)` seeds d(loss)/d(loss) = 1 and walks the nodes from last
// to first; each rule reads its output's gradient and adds (+=) into its inputs' gradients (or writes the first
// contribution: Note [first contribution writes] in tape.cpp). Creation order is already a topological order,
// so there is no sort, no recursion and no reference counting (docs/autograd.md).
//
// Memory (Note [arena]): values, gradients, input lists and backward closures of intermediate results live in
// an arena that `reset()` rewinds. Parameters live in their modules and outlive the tape; their gradients are
// accumulated straight into Parameter::grad. A Var is a small handle (tape, slot, generation); using one after
// its tape was reset throws TapeError instead of reading recycled memory.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "ops/arena.h"
#include "ops/tensor.h"

namespace tapegrad {

class Tape;

// A trainable tensor owned by a module: value and gradient, named like PyTorch's state_dict keys.
struct Parameter {
  std::string name;
  Tensor value;
  Tensor grad;  // same shape; backward accumulates into it
  // Set by Optimizer::zero_grad: grad's content is stale and stands for zeros, so the next backward writes its
  // first contribution instead of adding it to a zeroed buffer (Note [first contribution writes]). PyTorch's
  // zero_grad(set_to_none=True), keeping the buffer. Read grad through current_grad() unless a backward has
  // just written it.
  bool grad_stale = false;

  Parameter() = default;
  Parameter(std::string parameter_name, Tensor initial_value);
  // The gradient, zeroed first if it is stale (nothing reached this parameter since zero_grad).
  Tensor& current_grad();
};

// A handle to a value recorded on a tape. Cheap to copy (16 bytes).
class Var {
 public:
  Var() = default;
  const Tensor& value() const;
  const Shape& shape() const { return value().shape(); }
  DType dtype() const { return value().dtype(); }
  int64_t numel() const { return value().numel(); }
  int rank() const { return value().rank(); }
  int64_t dim(int axis) const { return value().dim(axis); }
  bool requires_grad() const;
  // The accumulated gradient after backward (zeros if nothing reached it); for leaves made with Tape::leaf.
  Tensor grad() const;
  double item() const;  // value of a one-element Var
  Tape& tape() const;
  uint32_t slot() const { return slot_; }

 private:
  friend class Tape;
  Var(Tape* tape, uint32_t slot, uint32_t generation) : tape_(tape), slot_(slot), generation_(generation) {}
  void check_alive() const;
  Tape* tape_ = nullptr;
  uint32_t slot_ = 0;
  uint32_t generation_ = 0;
};

class BackwardContext;

// Where a backward rule puts input i's gradient (BackwardContext::input_grad_target). With `overwrite`, nothing
// has been written to it in this pass and the buffer is uninitialised: the rule must assign (=) every element.
// Otherwise it adds (+=). Note [first contribution writes].
struct GradTarget {
  Tensor& grad;
  bool overwrite;
};

using BackwardFn = void (*)(const void* closure, BackwardContext& ctx);

struct Node {
  uint32_t output;
  uint32_t num_inputs;
  const uint32_t* inputs;  // arena array of input slots
  BackwardFn backward;
  const void* closure;     // arena copy of the op's captured values
  const char* op;          // for error messages and the non-finite check
};

// What a backward rule sees: its output's gradient, its inputs' values, and where to add their gradients.
class BackwardContext {
 public:
  BackwardContext(Tape& tape, const Node& node) : tape_(tape), node_(node) {}
  const Tensor& grad_output() const;
  const Tensor& output() const;
  const Tensor& input(int i) const;
  bool needs_grad(int i) const;
  // The gradient buffer of input i (same shape as the input), allocated and zeroed on first use: add into it.
  Tensor& input_grad(int i);
  // The same buffer, not zeroed on first use: the rule writes its contribution (overwrite) or adds it.
  GradTarget input_grad_target(int i);
  // Adds g into input i's gradient; g may have the broadcast shape of the op's output, in which case the
  // broadcast axes are summed away first (the one shared helper for broadcasting, Note [broadcast grad]).
  void accumulate(int i, const Tensor& g);
  // Arena scratch of the op's dtype, valid until the tape is reset.
  Tensor scratch(const Shape& shape) const;
  Tape& tape() const { return tape_; }

 private:
  Tape& tape_;
  const Node& node_;
};

class Tape {
 public:
  explicit Tape(size_t arena_bytes = size_t{1} << 22);
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  // Leaves.
  Var constant(const Tensor& value);                     // data: no gradient
  Var leaf(const Tensor& value, bool requires_grad = true);  // gradient readable with Var::grad()
  Var param(Parameter& parameter);                       // gradient accumulates into parameter.grad

  // Seeds d(out)/d(out) = 1 for a one-element `out`, or `seed` (same shape as out), then walks the tape.
  void backward(const Var& out);
  void backward(const Var& out, const Tensor& seed);

  // Forget every node and intermediate value; handles from before become invalid. Keeps the memory.
  void reset();

  bool grad_enabled() const { return grad_enabled_; }
  // Note [check finite]: when on, every op's output is checked as it is recorded and, in backward, the
  // gradients each node added into its inputs; the first NaN or Inf throws NonFiniteError naming the op and
  // its input shapes. Off by default: then the cost is one branch per op.
  void set_check_finite(bool on) { check_finite_ = on; }
  bool check_finite() const { return check_finite_; }
  size_t node_count() const { return nodes_.size(); }
  size_t slot_count() const { return slots_.size(); }
  const Arena& arena() const { return arena_; }
  uint32_t generation() const { return generation_; }

  // ---- For op authors (see docs/autograd.md, "Adding an op") ----
  // A new slot for an op's result, uninitialised, in the arena. requires_grad when any input requires it.
  Var result(const Shape& shape, DType dtype, std::initializer_list<Var> inputs);
  Var result(const Shape& shape, DType dtype, const Var* inputs, size_t count);
  // A slot whose value is x's storage under another shape of as many elements (reshape: Note [reshape is a view]
  // in autograd/shape.cpp). requires_grad as x.
  Var alias(const Var& x, const Shape& shape);
  // Records the backward rule of `out` = op(inputs) when gradients are on and out requires a gradient.
  // The closure is copied into the arena, so it must be trivially destructible: capture slots and numbers,
  // not Tensors or strings.
  template <class Rule>
  void record(const char* op, const Var& out, std::initializer_list<Var> inputs, Rule rule) {
    record(op, out, inputs.begin(), inputs.size(), std::move(rule));
  }
  template <class Rule>
  void record(const char* op, const Var& out, const Var* inputs, size_t count, Rule rule) {
    static_assert(std::is_trivially_destructible_v<Rule>, "backward closures live in the arena: capture PODs only");
    if (check_finite_) check_forward(op, out, inputs, count);
    if (!out.requires_grad() || !grad_enabled_) return;
    void* memory = arena_.allocate(sizeof(Rule), alignof(Rule));
    const Rule* closure = new (memory) Rule(std::move(rule));
    push_node(op, out, inputs, count, closure,
              [](const void* c, BackwardContext& ctx) { (*static_cast<const Rule*>(c))(ctx); });
  }
  Tensor scratch(const Shape& shape, DType dtype);  // arena memory, valid until reset

 private:
  friend class Var;
  friend class BackwardContext;
  friend class NoGradGuard;

  struct Slot {
    Tensor value;
    Tensor grad;                  // defined once something accumulates into it (or a parameter's own grad)
    bool requires_grad = false;
    bool grad_ready = false;      // grad holds this pass's gradient (not for parameters: grad_valid)
    Parameter* parameter = nullptr;  // grad aliases parameter->grad and survives backward and reset
  };
  static bool grad_valid(const Slot& slot);  // grad holds a (written or accumulated) gradient
  Var add_slot(Tensor value, bool requires_grad);
  void push_node(const char* op, const Var& out, const Var* inputs, size_t count, const void* closure, BackwardFn fn);
  Tensor& grad_buffer(uint32_t slot);  // allocated and zeroed on first use in a pass
  GradTarget grad_target(uint32_t slot);  // allocated, not zeroed, on first use in a pass
  Tensor& begin_backward(const Var& out);
  void walk_backward();
  void check_forward(const char* op, const Var& out, const Var* inputs, size_t count) const;
  void check_backward(const Node& node) const;
  void check_var(const Var& v) const;

  Arena arena_;
  std::vector<Slot> slots_;
  std::vector<Node> nodes_;
  uint32_t generation_ = 1;
  bool grad_enabled_ = true;
  bool check_finite_ = false;
};

// Within this scope ops record nothing (evaluation, sampling); values are still computed on the tape.
class NoGradGuard {
 public:
  explicit NoGradGuard(Tape& tape) : tape_(tape), previous_(tape.grad_enabled_) { tape.grad_enabled_ = false; }
  ~NoGradGuard() { tape_.grad_enabled_ = previous_; }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  Tape& tape_;
  bool previous_;
};

// The tape shared by the arguments of an op; throws TapeError naming `op` when they come from different tapes.
Tape& common_tape(const char* op, std::initializer_list<Var> vars);

}  // namespace tapegrad
