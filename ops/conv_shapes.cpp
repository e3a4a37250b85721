// Convolution geometry (validation, PyTorch's rules and messages) and the Tensor front ends of ops/conv.h.
#include <string>

#include "ops/conv.h"

namespace tapegrad::ops {
namespace {

std::string str(const Pair& p) { return cat("(", p[0], ", ", p[1], ")"); }

void check_rank4(const char* op, const char* what, const char* layout, const Shape& shape) {
  if (shape.rank() != 4) fail<ShapeError>(op, ": ", what, " must be 4-d ", layout, ", got ", shape);
}

void check_options(const char* op, const Conv2dOptions& o, bool transposed) {
  for (int axis = 0; axis < 2; ++axis) {
    if (o.stride[axis] < 1) fail<ValueError>(op, ": stride must be positive, got ", str(o.stride));
    if (o.dilation[axis] < 1) fail<ValueError>(op, ": dilation must be positive, got ", str(o.dilation));
    if (o.padding[axis] < 0) fail<ValueError>(op, ": padding must be non-negative, got ", str(o.padding));
    if (!transposed && o.output_padding[axis] != 0)
      fail<ValueError>(op, ": output_padding must be (0, 0), got ", str(o.output_padding),
                       "; hint: output_padding is an option of conv_transpose2d");
    if (o.output_padding[axis] < 0)
      fail<ValueError>(op, ": output_padding must be non-negative, got ", str(o.output_padding));
    // PyTorch's rule: output_padding only picks among the input sizes that the strided (or dilated)
    // window maps to the same output, so it must stay below the stride or the dilation.
    if (o.output_padding[axis] >= o.stride[axis] && o.output_padding[axis] >= o.dilation[axis])
      fail<ValueError>(op, ": output_padding must be smaller than either stride or dilation, got output_padding ",
                       str(o.output_padding), ", stride ", str(o.stride), ", dilation ", str(o.dilation));
  }
}

void check_positive_dims(const char* op, const char* what, const Shape& shape, int first_axis) {
  for (int axis = first_axis; axis < 4; ++axis)
    if (shape[axis] < 1) fail<ShapeError>(op, ": ", what, " dimensions must be positive, got ", shape);
}

void check_output(const char* op, const Shape& x, const Shape& w, const Conv2dOptions& o, int64_t h, int64_t v) {
  if (h < 1 || v < 1)
    fail<ValueError>(op, ": output size must be positive, got (", h, ", ", v, ") from input ", x, ", weight ", w,
                     ", stride ", str(o.stride), ", padding ", str(o.padding), ", dilation ", str(o.dilation),
                     "; hint: the dilated kernel is larger than the padded input");
}

void check_tensor(const char* op, const char* name, const Tensor& t, const Shape& expected, DType dtype) {
  if (t.shape() != expected) fail<ShapeError>(op, ": ", name, " must have shape ", expected, ", got ", t.shape());
  if (t.dtype() != dtype)
    fail<ValueError>(op, ": ", name, " must have dtype ", dtype_name(dtype), ", got ", dtype_name(t.dtype()));
}

template <class T>
const T* data_or_null(const Tensor* t) {
  return t != nullptr ? t->data<T>() : nullptr;
}

}  // namespace

Conv2dGeometry conv2d_geometry(const Shape& x, const Shape& w, const Conv2dOptions& o) {
  const char* op = "conv2d";
  check_rank4(op, "input", "(B, C, H, W)", x);
  check_rank4(op, "weight", "(F, C, KH, KW)", w);
  if (x[1] != w[1]) fail<ShapeError>(op, ": input channels must match weight, got ", x, " and ", w);
  check_positive_dims(op, "input", x, 1);
  check_positive_dims(op, "weight", w, 0);
  check_options(op, o, /*transposed=*/false);
  Conv2dGeometry g{.B = x[0], .C = x[1], .H = x[2], .W = x[3], .F = w[0], .KH = w[2], .KW = w[3],
                   .stride = o.stride, .padding = o.padding, .dilation = o.dilation};
  g.OH = conv2d_output_size(g.H, g.KH, o.stride[0], o.padding[0], o.dilation[0]);
  g.OW = conv2d_output_size(g.W, g.KW, o.stride[1], o.padding[1], o.dilation[1]);
  check_output(op, x, w, o, g.OH, g.OW);
  return g;
}

Conv2dGeometry conv_transpose2d_geometry(const Shape& x, const Shape& w, const Conv2dOptions& o) {
  const char* op = "conv_transpose2d";
  check_rank4(op, "input", "(B, C_in, H, W)", x);
  check_rank4(op, "weight", "(C_in, C_out, KH, KW)", w);
  if (x[1] != w[0]) fail<ShapeError>(op, ": input channels must match weight, got ", x, " and ", w);
  check_positive_dims(op, "input", x, 1);
  check_positive_dims(op, "weight", w, 0);
  check_options(op, o, /*transposed=*/true);
  // In conv2d terms (Note [transposed convolution is the adjoint]): the transpose's input is conv2d's output.
  Conv2dGeometry g{.B = x[0], .C = w[1], .H = 0, .W = 0, .F = w[0], .KH = w[2], .KW = w[3], .OH = x[2], .OW = x[3],
                   .stride = o.stride, .padding = o.padding, .dilation = o.dilation};
  g.H = conv_transpose2d_output_size(g.OH, g.KH, o.stride[0], o.padding[0], o.dilation[0], o.output_padding[0]);
  g.W = conv_transpose2d_output_size(g.OW, g.KW, o.stride[1], o.padding[1], o.dilation[1], o.output_padding[1]);
  check_output(op, x, w, o, g.H, g.W);
  return g;
}

Tensor conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dOptions& options) {
  const Conv2dGeometry g = conv2d_geometry(x.shape(), w.shape(), options);
  check_tensor("conv2d", "weight", w, g.weight_shape(), x.dtype());
  if (bias != nullptr) check_tensor("conv2d", "bias", *bias, Shape{g.F}, x.dtype());
  Tensor y = Tensor::empty(g.output_shape(), x.dtype());
  dispatch(x.dtype(), [&]<class T>() {
    conv2d_forward<T>(g, x.data<T>(), w.data<T>(), data_or_null<T>(bias), y.data<T>());
  });
  return y;
}

void conv2d_backward_input(const Tensor& dy, const Tensor& w, Tensor& dx, const Conv2dOptions& options) {
  const Conv2dGeometry g = conv2d_geometry(dx.shape(), w.shape(), options);
  check_tensor("conv2d_backward_input", "dy", dy, g.output_shape(), dx.dtype());
  check_tensor("conv2d_backward_input", "weight", w, g.weight_shape(), dx.dtype());
  dispatch(dx.dtype(), [&]<class T>() { conv2d_backward_input<T>(g, dy.data<T>(), w.data<T>(), dx.data<T>()); });
}

void conv2d_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, const Conv2dOptions& options) {
  const Conv2dGeometry g = conv2d_geometry(x.shape(), dw.shape(), options);
  check_tensor("conv2d_backward_weight", "dy", dy, g.output_shape(), x.dtype());
  check_tensor("conv2d_backward_weight", "dw", dw, g.weight_shape(), x.dtype());
  dispatch(x.dtype(), [&]<class T>() { conv2d_backward_weight<T>(g, dy.data<T>(), x.data<T>(), dw.data<T>()); });
}

void conv2d_backward_bias(const Tensor& dy, Tensor& dbias) {
  check_rank4("conv2d_backward_bias", "dy", "(B, F, OH, OW)", dy.shape());
  check_tensor("conv2d_backward_bias", "dbias", dbias, Shape{dy.dim(1)}, dy.dtype());
  const Conv2dGeometry g{.B = dy.dim(0), .F = dy.dim(1), .OH = dy.dim(2), .OW = dy.dim(3)};
  dispatch(dy.dtype(), [&]<class T>() { conv2d_backward_bias<T>(g, dy.data<T>(), dbias.data<T>()); });
}

Tensor conv_transpose2d_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dOptions& options) {
  const Conv2dGeometry g = conv_transpose2d_geometry(x.shape(), w.shape(), options);
  check_tensor("conv_transpose2d", "weight", w, g.weight_shape(), x.dtype());
  if (bias != nullptr) check_tensor("conv_transpose2d", "bias", *bias, Shape{g.C}, x.dtype());
  Tensor y = Tensor::empty(g.input_shape(), x.dtype());
  dispatch(x.dtype(), [&]<class T>() {
    conv_transpose2d_forward<T>(g, x.data<T>(), w.data<T>(), data_or_null<T>(bias), y.data<T>());
  });
  return y;
}

void conv_transpose2d_backward_input(const Tensor& dy, const Tensor& w, Tensor& dx, const Conv2dOptions& options) {
  const Conv2dGeometry g = conv_transpose2d_geometry(dx.shape(), w.shape(), options);
  check_tensor("conv_transpose2d_backward_input", "dy", dy, g.input_shape(), dx.dtype());
  check_tensor("conv_transpose2d_backward_input", "weight", w, g.weight_shape(), dx.dtype());
  dispatch(dx.dtype(), [&]<class T>() {
    conv_transpose2d_backward_input<T>(g, dy.data<T>(), w.data<T>(), dx.data<T>());
  });
}

void conv_transpose2d_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, const Conv2dOptions& options) {
  const Conv2dGeometry g = conv_transpose2d_geometry(x.shape(), dw.shape(), options);
  check_tensor("conv_transpose2d_backward_weight", "dy", dy, g.input_shape(), x.dtype());
  check_tensor("conv_transpose2d_backward_weight", "dw", dw, g.weight_shape(), x.dtype());
  dispatch(x.dtype(), [&]<class T>() {
    conv_transpose2d_backward_weight<T>(g, dy.data<T>(), x.data<T>(), dw.data<T>());
  });
}

void conv_transpose2d_backward_bias(const Tensor& dy, Tensor& dbias) {
  check_rank4("conv_transpose2d_backward_bias", "dy", "(B, C_out, H, W)", dy.shape());
  check_tensor("conv_transpose2d_backward_bias", "dbias", dbias, Shape{dy.dim(1)}, dy.dtype());
  const Conv2dGeometry g{.B = dy.dim(0), .C = dy.dim(1), .H = dy.dim(2), .W = dy.dim(3)};
  dispatch(dy.dtype(), [&]<class T>() { conv_transpose2d_backward_bias<T>(g, dy.data<T>(), dbias.data<T>()); });
}

}  // namespace tapegrad::ops
