// Shape ops, forward and backward side by side. Every copy goes through ops::strided_copy, whose writes are
// deterministic for any thread count (Note [layout determinism]); see autograd/shape.h for the semantics.
#include "autograd/shape.h"

#include <cstring>
#include <vector>

#include "ops/elementwise.h"
#include "ops/layout.h"
#include "ops/parallel.h"

namespace tapegrad {

using ops::contiguous_strides;
using ops::strided_copy;
using ops::Strides;

namespace {
template <class Int>
std::string list_str(std::span<const Int> values) {
  std::string s = "(";
  for (size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + std::to_string(values[i]);
  return s + (values.size() == 1 ? ",)" : ")");
}

// Copies the caller's indices into the arena so the backward closure can point at them (Note [arena]).
const int64_t* arena_indices(Tape& tape, std::span<const int64_t> values) {
  Tensor buffer = tape.scratch(Shape{static_cast<int64_t>(values.size())}, DType::f64);  // 8 bytes per slot
  auto* p = static_cast<int64_t*>(buffer.raw());
  if (!values.empty()) std::memcpy(p, values.data(), values.size() * sizeof(int64_t));
  return p;
}

void check_indices(const char* op, std::span<const int64_t> values, int64_t size) {
  for (size_t i = 0; i < values.size(); ++i)
    if (values[i] < 0 || values[i] >= size)
      fail<ValueError>(op, ": index must be in [0, ", size, "), got ", values[i], " at position ", i);
}

// x viewed as (outer, size, inner) around `axis`.
struct AxisSplit {
  int64_t outer = 1, size = 1, inner = 1;
};
AxisSplit split_at(const Shape& shape, int axis) {
  AxisSplit s;
  for (int a = 0; a < axis; ++a) s.outer *= shape[a];
  s.size = shape[axis];
  for (int a = axis + 1; a < shape.rank(); ++a) s.inner *= shape[a];
  return s;
}
}  // namespace

// ---- reshape: the same row-major elements, so forward and backward are plain copies ----

Var reshape(const Var& x, std::span<const int64_t> dims) {
  Shape shape;
  int inferred = -1;
  int64_t known = 1;
  for (size_t a = 0; a < dims.size(); ++a) {
    if (dims[a] == -1 && inferred < 0) {
      inferred = static_cast<int>(a);
      shape.push_back(0);
    } else if (dims[a] < 0) {
      fail<ShapeError>("reshape: dimensions must be non-negative with at most one -1, got ", list_str(dims));
    } else {
      shape.push_back(dims[a]);
      known *= dims[a];
    }
  }
  if (inferred >= 0) shape[inferred] = known == 0 ? 0 : x.numel() / known;
  if (shape.numel() != x.numel())
    fail<ShapeError>("reshape: element count must be preserved, got ", x.shape(), " (", x.numel(), " elements) to ",
                     list_str(dims), " (", inferred >= 0 ? "no whole size for -1" : std::to_string(shape.numel()) + " elements",
                     ")");
  // Note [reshape is a view]: an op writes its result once, when it creates it, and nothing writes a value on
  // the tape after that, so the result can share x's storage (as torch.reshape of a contiguous tensor does)
  // instead of copying it: M2 reshapes its 1,000 x 784 decoder logits every step.
  Var out = x.tape().alias(x, shape);
  x.tape().record("reshape", out, {x}, [](BackwardContext& ctx) {
    ctx.accumulate(0, ctx.grad_output().reshaped(ctx.input(0).shape()));
  });
  return out;
}
Var reshape(const Var& x, std::initializer_list<int64_t> shape) {
  return reshape(x, std::span<const int64_t>(shape.begin(), shape.size()));
}
Var reshape(const Var& x, const Shape& shape) { return reshape(x, std::span<const int64_t>(shape.begin(), shape.end())); }

// ---- permute / transpose: y walks x through permuted strides; dx walks back through the same strides ----

Var permute(const Var& x, std::span<const int> axes_in) {
  const int rank = x.rank();
  std::array<int, kMaxRank> axes{};
  std::array<bool, kMaxRank> seen{};
  bool ok = static_cast<int>(axes_in.size()) == rank;
  for (int d = 0; ok && d < rank; ++d) {
    const int a = axes_in[d] < 0 ? axes_in[d] + rank : axes_in[d];
    ok = a >= 0 && a < rank && !seen[a];
    if (ok) seen[a] = true, axes[d] = a;
  }
  if (!ok)
    fail<ValueError>("permute: axes must be a permutation of [0, ", rank, "), got ", list_str(axes_in), " for shape ",
                     x.shape());
  Shape shape;
  for (int d = 0; d < rank; ++d) shape.push_back(x.dim(axes[d]));
  Var out = x.tape().result(shape, x.dtype(), {x});
  Tensor y = out.value();
  ops::permute_copy(x.value(), std::span<const int>(axes.data(), rank), y);
  x.tape().record("permute", out, {x}, [axes, rank](BackwardContext& ctx) {
    // dx[perm(i)] += dy[i]: read dy in order, write dx through the strides forward read x with.
    Tensor& dx = ctx.input_grad(0);
    const Strides x_strides = contiguous_strides(dx.shape());
    Strides dst{};
    for (int d = 0; d < rank; ++d) dst[d] = x_strides[axes[d]];
    const Tensor& dy = ctx.grad_output();
    strided_copy(dy.shape(), dy, 0, contiguous_strides(dy.shape()), dx, 0, dst, /*accumulate=*/true);
  });
  return out;
}
Var permute(const Var& x, std::initializer_list<int> axes) {
  return permute(x, std::span<const int>(axes.begin(), axes.size()));
}

Var transpose(const Var& x, int axis0, int axis1) {
  const int a0 = x.shape().normalize_axis(axis0, "transpose"), a1 = x.shape().normalize_axis(axis1, "transpose");
  std::array<int, kMaxRank> axes{};
  for (int d = 0; d < x.rank(); ++d) axes[d] = d;
  std::swap(axes[a0], axes[a1]);
  return permute(x, std::span<const int>(axes.data(), x.rank()));
}

// ---- slice: a window of x; dx gets dy added into the same window ----

Var slice(const Var& x, int axis_in, int64_t start, int64_t end) {
  const int axis = x.shape().normalize_axis(axis_in, "slice");
  const int64_t size = x.dim(axis);
  const int64_t begin = start < 0 ? start + size : start, stop = end < 0 ? end + size : end;
  if (begin < 0 || begin > stop || stop > size)
    fail<ValueError>("slice: range must satisfy 0 <= start <= end <= ", size, ", got [", start, ", ", end,
                     ") on axis ", axis, " of shape ", x.shape());
  const Shape shape = x.shape().with_dim(axis, stop - begin);
  Var out = x.tape().result(shape, x.dtype(), {x});
  Tensor y = out.value();
  const Strides xs = contiguous_strides(x.shape());
  strided_copy(shape, x.value(), begin * xs[axis], xs, y, 0, contiguous_strides(shape), false);
  x.tape().record("slice", out, {x}, [axis, begin](BackwardContext& ctx) {
    Tensor& dx = ctx.input_grad(0);
    const Tensor& dy = ctx.grad_output();
    const Strides dxs = contiguous_strides(dx.shape());
    strided_copy(dy.shape(), dy, 0, contiguous_strides(dy.shape()), dx, begin * dxs[axis], dxs, true);
  });
  return out;
}

// ---- concat / stack: input i fills a window of the output; its gradient is that window of dy ----

namespace {
// Input i as a piece of the output: its shape with a size-1 axis inserted for stack.
Shape piece_shape(const Shape& in, int axis, bool new_axis) {
  if (!new_axis) return in;
  Shape s;
  for (int a = 0; a < in.rank(); ++a) {
    if (a == axis) s.push_back(1);
    s.push_back(in[a]);
  }
  if (axis == in.rank()) s.push_back(1);
  return s;
}

Var join(const char* op, std::span<const Var> vars, int axis_in, bool new_axis) {
  if (vars.empty()) fail<ValueError>(op, ": inputs must be at least one, got 0");
  const Var& first = vars[0];
  Tape& tape = first.tape();
  const int out_rank = first.rank() + (new_axis ? 1 : 0);
  const int axis = axis_in < 0 ? axis_in + out_rank : axis_in;
  if (axis < 0 || axis >= out_rank)
    fail<ValueError>(op, ": axis must be in [", -out_rank, ", ", out_rank, "), got ", axis_in, " for shape ",
                     first.shape());
  int64_t total = 0;
  for (const Var& v : vars) {
    if (&v.tape() != &tape) fail<TapeError>(op, ": inputs must come from the same tape");
    if (v.dtype() != first.dtype())
      fail<ValueError>(op, ": dtypes must match, got ", dtype_name(first.dtype()), " and ", dtype_name(v.dtype()));
    bool match = v.rank() == first.rank();
    for (int a = 0; match && a < v.rank(); ++a) match = v.dim(a) == first.dim(a) || (!new_axis && a == axis);
    if (!match)
      fail<ShapeError>(op, ": input shapes must match", new_axis ? "" : cat(" except on axis ", axis).c_str(), ", got ",
                       first.shape(), " and ", v.shape());
    total += new_axis ? 1 : v.dim(axis);
  }
  const Shape shape = piece_shape(first.shape(), axis, new_axis).with_dim(axis, total);
  Var out = tape.result(shape, first.dtype(), vars.data(), vars.size());
  Tensor y = out.value();
  const Strides ys = contiguous_strides(shape);
  int64_t offset = 0;
  for (const Var& v : vars) {
    const Shape piece = piece_shape(v.shape(), axis, new_axis);
    strided_copy(piece, v.value(), 0, contiguous_strides(piece), y, offset * ys[axis], ys, false);
    offset += piece[axis];
  }
  const size_t count = vars.size();
  tape.record(op, out, vars.data(), count, [axis, new_axis, count](BackwardContext& ctx) {
    const Tensor& dy = ctx.grad_output();
    const Strides dys = contiguous_strides(dy.shape());
    int64_t offset = 0;
    for (size_t i = 0; i < count; ++i) {
      const Shape piece = piece_shape(ctx.input(int(i)).shape(), axis, new_axis);
      if (ctx.needs_grad(int(i))) {
        Tensor& dx = ctx.input_grad(int(i));
        strided_copy(piece, dy, offset * dys[axis], dys, dx, 0, contiguous_strides(piece), true);
      }
      offset += piece[axis];
    }
  });
  return out;
}
}  // namespace

Var concat(std::span<const Var> vars, int axis) { return join("concat", vars, axis, false); }
Var concat(std::initializer_list<Var> vars, int axis) { return concat(std::span<const Var>(vars.begin(), vars.size()), axis); }
Var stack(std::span<const Var> vars, int axis) { return join("stack", vars, axis, true); }
Var stack(std::initializer_list<Var> vars, int axis) { return stack(std::span<const Var>(vars.begin(), vars.size()), axis); }

// ---- broadcast_to: reads with stride 0 on broadcast axes; the shared helper sums them back ----

Var broadcast_to(const Var& x, const Shape& shape) {
  const Shape joined = broadcast_shapes(x.shape(), shape, "broadcast_to");
  if (!(joined == shape))
    fail<ShapeError>("broadcast_to: input must broadcast to the target shape, got ", x.shape(), " to ", shape);
  Var out = x.tape().result(shape, x.dtype(), {x});
  Tensor y = out.value();
  strided_copy(shape, x.value(), 0, broadcast_strides(x.shape(), shape), y, 0, contiguous_strides(shape), false);
  x.tape().record("broadcast_to", out, {x}, [](BackwardContext& ctx) { ctx.accumulate(0, ctx.grad_output()); });
  return out;
}

// ---- index_select: rows of x picked by index; dx scatter-adds dy back ----

Var index_select(const Var& x, int axis_in, std::span<const int64_t> indices) {
  const int axis = x.shape().normalize_axis(axis_in, "index_select");
  const AxisSplit s = split_at(x.shape(), axis);
  check_indices("index_select", indices, s.size);
  const int64_t n = static_cast<int64_t>(indices.size());
  const int64_t* idx = arena_indices(x.tape(), indices);
  Var out = x.tape().result(x.shape().with_dim(axis, n), x.dtype(), {x});
  Tensor y = out.value();
  // y[o, j, :] = x[o, idx[j], :]: every output row is independent, so split over all (o, j) rows.
  dispatch(x.dtype(), [&]<class T>() {
    const T* px = x.value().data<T>();
    T* py = y.data<T>();
    parallel_for(s.outer * n, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        std::memcpy(py + r * s.inner, px + ((r / n) * s.size + idx[r % n]) * s.inner, s.inner * sizeof(T));
    }, s.inner);
  });
  x.tape().record("index_select", out, {x}, [s, n, idx](BackwardContext& ctx) {
    // dx[o, idx[j], :] += dy[o, j, :]. Repeated indices add into the same row; within a slab j runs in order,
    // and slabs are disjoint, so the sum order is fixed whatever the thread count.
    dispatch(ctx.output().dtype(), [&]<class T>() {
      const T* dy = ctx.grad_output().data<T>();
      T* dx = ctx.input_grad(0).data<T>();
      parallel_for(s.outer, 1, [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o)
          for (int64_t j = 0; j < n; ++j) {
            const T* src = dy + (o * n + j) * s.inner;
            T* dst = dx + (o * s.size + idx[j]) * s.inner;
            for (int64_t k = 0; k < s.inner; ++k) dst[k] += src[k];
          }
      }, n * s.inner);
    });
  });
  return out;
}
Var index_select(const Var& x, int axis, std::initializer_list<int64_t> indices) {
  return index_select(x, axis, std::span<const int64_t>(indices.begin(), indices.size()));
}

// ---- gather: y[i] = x[i with axis coordinate replaced by index[i]]; dx scatter-adds ----

namespace {
// Calls f(flat output index, flat x offset) for the outputs of outer slabs [o0, o1) (slab = coordinates before
// `axis`), in row-major order. Slabs never share an x element, so they may run on different threads.
template <class F>
void for_each_gathered(const Shape& index_shape, const Strides& x_strides, int axis, const int64_t* index, int64_t o0,
                       int64_t o1, F f) {
  int64_t slab = 1;
  for (int a = axis; a < index_shape.rank(); ++a) slab *= index_shape[a];
  for (int64_t flat = o0 * slab; flat < o1 * slab; ++flat) {
    int64_t rest = flat, offset = 0;
    for (int a = index_shape.rank() - 1; a >= 0; --a) {
      const int64_t coordinate = rest % index_shape[a];
      rest /= index_shape[a];
      offset += (a == axis ? index[flat] : coordinate) * x_strides[a];
    }
    f(flat, offset);
  }
}
}  // namespace

Var gather(const Var& x, int axis_in, const Shape& index_shape, std::span<const int64_t> index) {
  const int axis = x.shape().normalize_axis(axis_in, "gather");
  if (index_shape.rank() != x.rank())
    fail<ShapeError>("gather: index rank must equal the input's, got ", index_shape, " for input ", x.shape());
  for (int a = 0; a < x.rank(); ++a)
    if (a != axis && index_shape[a] > x.dim(a))
      fail<ShapeError>("gather: index shape must not exceed the input's off axis ", axis, ", got ", index_shape,
                       " for input ", x.shape());
  if (static_cast<int64_t>(index.size()) != index_shape.numel())
    fail<ShapeError>("gather: index must hold ", index_shape.numel(), " values for shape ", index_shape, ", got ",
                     index.size());
  check_indices("gather", index, x.dim(axis));
  const int64_t* idx = arena_indices(x.tape(), index);
  Var out = x.tape().result(index_shape, x.dtype(), {x});
  Tensor y = out.value();
  const Strides xs = contiguous_strides(x.shape());
  const int64_t outer = split_at(index_shape, axis).outer;
  dispatch(x.dtype(), [&]<class T>() {
    const T* px = x.value().data<T>();
    T* py = y.data<T>();
    parallel_for(outer, 1, [&](int64_t o0, int64_t o1) {
      for_each_gathered(index_shape, xs, axis, idx, o0, o1, [&](int64_t i, int64_t off) { py[i] = px[off]; });
    }, index_shape.numel() / std::max<int64_t>(outer, 1) * 8);
  });
  x.tape().record("gather", out, {x}, [index_shape, xs, axis, idx, outer](BackwardContext& ctx) {
    dispatch(ctx.output().dtype(), [&]<class T>() {
      const T* dy = ctx.grad_output().data<T>();
      T* dx = ctx.input_grad(0).data<T>();
      parallel_for(outer, 1, [&](int64_t o0, int64_t o1) {
        for_each_gathered(index_shape, xs, axis, idx, o0, o1, [&](int64_t i, int64_t off) { dx[off] += dy[i]; });
      }, index_shape.numel() / std::max<int64_t>(outer, 1) * 8);
    });
  });
  return out;
}

// ---- one_hot: data, not a function of anything differentiable ----

Var one_hot(Tape& tape, std::span<const int64_t> labels, int64_t num_classes, DType dtype) {
  if (num_classes < 1) fail<ValueError>("one_hot: num_classes must be positive, got ", num_classes);
  check_indices("one_hot", labels, num_classes);
  const int64_t n = static_cast<int64_t>(labels.size());
  Tensor t = Tensor::zeros(Shape{n, num_classes}, dtype);
  for (int64_t i = 0; i < n; ++i) t.set_item(i * num_classes + labels[i], 1.0);
  return tape.constant(t);
}

}  // namespace tapegrad
