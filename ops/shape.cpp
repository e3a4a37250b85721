#include "ops/shape.h"

#include <algorithm>

#include "ops/error.h"

namespace tapegrad {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::span<const int64_t>(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const int64_t> dims) {
  if (dims.size() > static_cast<size_t>(kMaxRank)) fail<ShapeError>("Shape: rank must be at most ", kMaxRank, ", got ", dims.size());
  for (int64_t d : dims) push_back(d);
}

void Shape::push_back(int64_t d) {
  if (rank_ == kMaxRank) fail<ShapeError>("Shape: rank must be at most ", kMaxRank, ", got ", rank_ + 1);
  if (d < 0) fail<ShapeError>("Shape: dimensions must be non-negative, got ", d);
  dims_[rank_++] = d;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

int Shape::normalize_axis(int axis, const char* op) const {
  int normalized = axis < 0 ? axis + rank_ : axis;
  if (normalized < 0 || normalized >= rank_)
    fail<ValueError>(op, ": axis must be in [", -rank_, ", ", rank_, "), got ", axis, " for shape ", str());
  return normalized;
}

Shape Shape::with_dim(int axis, int64_t d) const {
  Shape copy = *this;
  copy.dims_[normalize_axis(axis, "with_dim")] = d;
  return copy;
}

Shape Shape::without_axis(int axis) const {
  int removed = normalize_axis(axis, "without_axis");
  Shape copy;
  for (int i = 0; i < rank_; ++i)
    if (i != removed) copy.push_back(dims_[i]);
  return copy;
}

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < rank_; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[i]);
  }
  if (rank_ == 1) s += ",";
  return s + ")";
}

bool operator==(const Shape& a, const Shape& b) {
  if (a.rank_ != b.rank_) return false;
  for (int i = 0; i < a.rank_; ++i)
    if (a.dims_[i] != b.dims_[i]) return false;
  return true;
}

std::ostream& operator<<(std::ostream& out, const Shape& shape) { return out << shape.str(); }

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const int rank = std::max(a.rank(), b.rank());
  Shape out;
  for (int i = 0; i < rank; ++i) {
    const int ia = i - (rank - a.rank()), ib = i - (rank - b.rank());
    const int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    if (da != db && da != 1 && db != 1) fail<ShapeError>(op, ": shapes must broadcast, got ", a, " and ", b);
    out.push_back(da == 1 ? db : da);
  }
  return out;
}

std::array<int64_t, kMaxRank> broadcast_strides(const Shape& shape, const Shape& target) {
  std::array<int64_t, kMaxRank> strides{};
  const int offset = target.rank() - shape.rank();
  int64_t stride = 1;
  for (int i = shape.rank() - 1; i >= 0; --i) {
    strides[i + offset] = (shape[i] == 1 && target[i + offset] != 1) ? 0 : stride;
    stride *= shape[i];
  }
  return strides;
}

}  // namespace tapegrad
