// Shape: the dimensions of a row-major tensor, stored inline (no heap) so that tape nodes stay allocation-free.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <span>
#include <string>

namespace tapegrad {

inline constexpr int kMaxRank = 6;

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(std::span<const int64_t> dims);

  int rank() const { return rank_; }
  int64_t operator[](int axis) const { return dims_[axis]; }
  int64_t& operator[](int axis) { return dims_[axis]; }
  const int64_t* begin() const { return dims_.data(); }
  const int64_t* end() const { return dims_.data() + rank_; }
  int64_t numel() const;

  // Python-style axis: -1 is the last axis. Throws ValueError naming `op` when out of range.
  int normalize_axis(int axis, const char* op) const;
  // Dimension at a Python-style axis.
  int64_t dim(int axis) const { return dims_[normalize_axis(axis, "dim")]; }

  void push_back(int64_t d);
  Shape with_dim(int axis, int64_t d) const;  // copy with one dimension replaced
  Shape without_axis(int axis) const;         // copy with one axis removed
  std::string str() const;                    // "(3, 4)"; "()" for a scalar

  friend bool operator==(const Shape& a, const Shape& b);

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

std::ostream& operator<<(std::ostream& out, const Shape& shape);

// NumPy broadcasting: align trailing axes; each pair must be equal or contain a 1.
// Throws ShapeError "<op>: shapes must broadcast, got (2, 3) and (4,)".
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// Row-major strides in elements; broadcast axes (size 1 in `shape`, larger in `target`) get stride 0.
std::array<int64_t, kMaxRank> broadcast_strides(const Shape& shape, const Shape& target);

}  // namespace tapegrad
