// Tensor: a dense, contiguous, row-major N-d array of float32 or float64.
//
// Note [dtype]: models train in float32; float64 exists so that every differentiable op can be checked
// against central finite differences to ~1e-8 (float32 would drown the check in rounding). The dtype is a
// runtime tag rather than a template parameter so that the tape and the ops stay ordinary functions; kernels
// are templates, selected once per call by `dispatch`.
//
// Storage is 64-byte aligned (one cache line, one AVX-512 vector). A tensor either owns its storage (shared,
// reference-counted: copies alias, like PyTorch) or is a view of memory owned by someone else (the tape's arena).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "ops/error.h"
#include "ops/shape.h"

namespace tapegrad {

enum class DType : uint8_t { f32, f64 };

template <class T>
constexpr DType dtype_of() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "tapegrad tensors hold float or double");
  return std::is_same_v<T, float> ? DType::f32 : DType::f64;
}
inline size_t dtype_size(DType dtype) { return dtype == DType::f32 ? 4 : 8; }
inline const char* dtype_name(DType dtype) { return dtype == DType::f32 ? "float32" : "float64"; }

// Calls fn.template operator()<T>() with T the C++ type of `dtype`:
//   dispatch(x.dtype(), [&]<class T>() { kernel<T>(x.data<T>(), ...); });
template <class Fn>
decltype(auto) dispatch(DType dtype, Fn&& fn) {
  if (dtype == DType::f32) return fn.template operator()<float>();
  return fn.template operator()<double>();
}

inline constexpr size_t kAlignment = 64;

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype = DType::f32);  // uninitialised
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32);
  template <class T>
  static Tensor from(std::span<const T> values, const Shape& shape);
  template <class T>
  static Tensor from(const std::vector<T>& values, const Shape& shape) {
    return from<T>(std::span<const T>(values.data(), values.size()), shape);
  }
  static Tensor from(std::initializer_list<float> values, const Shape& shape) {
    return from<float>(std::span<const float>(values.begin(), values.size()), shape);
  }
  static Tensor scalar(double value, DType dtype = DType::f32) { return full(Shape{}, value, dtype); }
  // A non-owning view of `data` (which must be kAlignment-aligned and outlive the view).
  static Tensor view_of(void* data, const Shape& shape, DType dtype);

  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  int rank() const { return shape_.rank(); }
  int64_t numel() const { return shape_.numel(); }
  int64_t dim(int axis) const { return shape_.dim(axis); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool defined() const { return data_ != nullptr || numel() == 0; }

  template <class T>
  T* data() {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(data_);
  }
  template <class T>
  const T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<const T*>(data_);
  }
  void* raw() { return data_; }
  const void* raw() const { return data_; }

  // Element `flat` (row-major index) converted to double: for tests and printing, not for kernels.
  double item(int64_t flat = 0) const;
  void set_item(int64_t flat, double value);

  Tensor clone() const;                        // deep copy, owning
  Tensor to(DType dtype) const;                // converted deep copy
  Tensor reshaped(const Shape& shape) const;   // same storage, new shape (numel must match)
  void fill(double value);
  void copy_from(const Tensor& src);           // shapes and dtypes must match
  bool same_storage(const Tensor& other) const { return data_ == other.data_; }

 private:
  void check_dtype(DType expected) const {
    if (expected != dtype_) fail<ValueError>("Tensor::data: dtype must be ", dtype_name(expected), ", got ", dtype_name(dtype_));
  }

  Shape shape_;
  DType dtype_ = DType::f32;
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;  // empty for views
};

// Exact equality of shape, dtype and every bit of the data (the determinism tests use this).
bool bitwise_equal(const Tensor& a, const Tensor& b);
// Largest |a - b| over all elements (shapes must match).
double max_abs_diff(const Tensor& a, const Tensor& b);

}  // namespace tapegrad
