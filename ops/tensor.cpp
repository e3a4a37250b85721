#include "ops/tensor.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

namespace tapegrad {

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  const size_t bytes = (t.nbytes() + kAlignment - 1) / kAlignment * kAlignment;
  void* memory = std::aligned_alloc(kAlignment, bytes == 0 ? kAlignment : bytes);
  if (!memory) throw std::bad_alloc();
  t.owner_ = std::shared_ptr<void>(memory, [](void* p) { std::free(p); });
  t.data_ = memory;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill(value);
  return t;
}

template <class T>
Tensor Tensor::from(std::span<const T> values, const Shape& shape) {
  if (static_cast<int64_t>(values.size()) != shape.numel())
    fail<ShapeError>("Tensor::from: value count must equal the shape's ", shape.numel(), " elements for shape ", shape,
                     ", got ", values.size());
  Tensor t = empty(shape, dtype_of<T>());
  std::memcpy(t.data_, values.data(), t.nbytes());
  return t;
}
template Tensor Tensor::from<float>(std::span<const float>, const Shape&);
template Tensor Tensor::from<double>(std::span<const double>, const Shape&);

Tensor Tensor::view_of(void* data, const Shape& shape, DType dtype) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.data_ = data;
  return t;
}

double Tensor::item(int64_t flat) const {
  if (flat < 0 || flat >= numel()) fail<ValueError>("Tensor::item: index must be in [0, ", numel(), "), got ", flat);
  return dispatch(dtype_, [&]<class T>() { return static_cast<double>(static_cast<const T*>(data_)[flat]); });
}

void Tensor::set_item(int64_t flat, double value) {
  if (flat < 0 || flat >= numel()) fail<ValueError>("Tensor::set_item: index must be in [0, ", numel(), "), got ", flat);
  dispatch(dtype_, [&]<class T>() { static_cast<T*>(data_)[flat] = static_cast<T>(value); });
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_);
  if (nbytes()) std::memcpy(t.data_, data_, nbytes());
  return t;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return clone();
  Tensor t = empty(shape_, dtype);
  const int64_t n = numel();
  dispatch(dtype_, [&]<class Src>() {
    dispatch(dtype, [&]<class Dst>() {
      const Src* src = static_cast<const Src*>(data_);
      Dst* dst = static_cast<Dst*>(t.data_);
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(src[i]);
    });
  });
  return t;
}

Tensor Tensor::reshaped(const Shape& shape) const {
  if (shape.numel() != numel())
    fail<ShapeError>("reshape: element count must stay ", numel(), ", got ", shape, " (", shape.numel(), ") from ", shape_);
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

void Tensor::fill(double value) {
  const int64_t n = numel();
  dispatch(dtype_, [&]<class T>() {
    T* p = static_cast<T*>(data_);
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(value);
  });
}

void Tensor::copy_from(const Tensor& src) {
  if (!(src.shape_ == shape_) || src.dtype_ != dtype_)
    fail<ShapeError>("copy_from: shape and dtype must match, got ", src.shape_, " ", dtype_name(src.dtype_), " into ", shape_,
                     " ", dtype_name(dtype_));
  if (nbytes()) std::memmove(data_, src.data_, nbytes());
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  if (!(a.shape() == b.shape())) fail<ShapeError>("max_abs_diff: shapes must match, got ", a.shape(), " and ", b.shape());
  double worst = 0;
  for (int64_t i = 0; i < a.numel(); ++i) worst = std::max(worst, std::abs(a.item(i) - b.item(i)));
  return worst;
}

}  // namespace tapegrad
