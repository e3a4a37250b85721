// Convolution kernels: each fast kernel against its naive:: twin, the adjoint identities that make
// conv_transpose2d correct by construction, thread-count determinism, and the error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <tbb/parallel_for.h>

#include "ops/conv.h"
#include "ops/parallel.h"
#include "ops/tensor.h"

using namespace tapegrad;
using namespace tapegrad::ops;

namespace {

struct Case {
  int64_t B, C, H, W, F, KH, KW;
  Conv2dOptions options;
  std::string name() const {
    return cat("x (", B, ", ", C, ", ", H, ", ", W, ") w (", F, ", ", C, ", ", KH, ", ", KW, ") stride (",
               options.stride[0], ", ", options.stride[1], ") pad (", options.padding[0], ", ", options.padding[1],
               ") dil (", options.dilation[0], ", ", options.dilation[1], ") out_pad (", options.output_padding[0],
               ", ", options.output_padding[1], ")");
  }
};

Conv2dOptions opts(Pair stride, Pair padding, Pair dilation = {1, 1}, Pair output_padding = {0, 0}) {
  return {stride, padding, dilation, output_padding};
}

// conv2d geometries: 1x1 everything, stride 1/2, padding 0/1/2, dilation 1/2, odd sizes, batch 1/3,
// channels 1/3, 1x1 kernels (stride 1 and 2), a kernel as large as the input, and the conv VAE's
// 28x28 -> 14x14 (k4 s2 p1).
std::vector<Case> conv_cases() {
  return {
      {1, 1, 1, 1, 1, 1, 1, opts({1, 1}, {0, 0})},
      {3, 3, 5, 7, 2, 3, 3, opts({1, 1}, {1, 1})},
      {1, 3, 5, 7, 4, 3, 2, opts({2, 2}, {0, 0})},
      {3, 1, 28, 28, 4, 4, 4, opts({2, 2}, {1, 1})},
      {3, 3, 9, 8, 2, 3, 3, opts({1, 1}, {2, 2}, {2, 2})},
      {1, 3, 6, 5, 3, 2, 3, opts({2, 1}, {1, 2}, {2, 1})},
      {3, 3, 5, 7, 5, 1, 1, opts({1, 1}, {0, 0})},
      {2, 3, 7, 7, 2, 1, 1, opts({2, 2}, {0, 0})},
      {1, 1, 5, 7, 3, 5, 7, opts({1, 1}, {0, 0})},
      // Long patches (C*KH*KW >= 64) take the implicit-im2col forward: filters past one 16-wide panel (17),
      // 6-pixel micro-tiles that straddle two 5x5 output images, and several image groups (B = 19).
      {19, 8, 9, 9, 17, 3, 3, opts({2, 2}, {1, 1})},
      {2, 16, 7, 6, 33, 2, 3, opts({1, 1}, {1, 0}, {2, 1})},
      // Input gradients by phases (C >= 8, F*KH*KW >= 64 * stride^2): stride 2 on odd sizes, stride 3 with a
      // 2x2 kernel (phases that no tap reaches), stride 2 with dilation 2.
      {3, 8, 10, 9, 40, 4, 3, opts({2, 2}, {1, 1})},
      {2, 8, 7, 8, 150, 2, 2, opts({3, 3}, {0, 1})},
      {2, 9, 9, 9, 30, 3, 3, opts({2, 2}, {2, 1}, {2, 2})},
      // ... and with C < 8, the pixels as vector lanes (Note [input gradient for few channels]): 3 and 7
      // channels, dilation 2, unequal padding.
      {2, 3, 9, 9, 40, 3, 3, opts({2, 2}, {1, 1}, {2, 2})},
      {2, 7, 8, 7, 20, 4, 4, opts({2, 2}, {1, 2})},
  };
}

// conv_transpose2d cases, as (B, C_in, H, W) inputs and (C_in, C_out, KH, KW) weights: stored in Case as
// C = C_in, F = C_out. Includes output_padding below the stride and (stride 1) below the dilation.
std::vector<Case> transpose_cases() {
  return {
      {1, 1, 1, 1, 1, 1, 1, opts({1, 1}, {0, 0})},
      {3, 3, 5, 7, 2, 3, 3, opts({1, 1}, {1, 1})},
      {3, 3, 4, 3, 2, 3, 2, opts({2, 2}, {0, 1}, {1, 1}, {1, 0})},
      {3, 4, 14, 14, 1, 4, 4, opts({2, 2}, {1, 1})},  // the conv VAE's 14x14 -> 28x28
      {3, 5, 4, 5, 8, 3, 3, opts({2, 2}, {1, 1}, {1, 1}, {1, 1})},  // C_out*KH*KW = 72: implicit backward input
      {2, 30, 4, 5, 8, 3, 3, opts({2, 2}, {1, 1}, {1, 1}, {1, 1})},  // C_in*KH*KW = 270: forward by phases
      {1, 3, 5, 4, 2, 3, 3, opts({1, 2}, {2, 0}, {2, 1}, {1, 1})},
      {2, 3, 5, 7, 4, 1, 1, opts({1, 1}, {0, 0})},
      // Forward by phases with few output channels (Note [input gradient for few channels]): the conv VAE's
      // 32 -> 1 layer, and 50 -> 3 with strides 2 and 3, dilation 2 and output padding.
      {3, 32, 14, 14, 1, 4, 4, opts({2, 2}, {1, 1})},
      {2, 50, 5, 4, 3, 3, 3, opts({2, 3}, {1, 0}, {1, 2}, {1, 2})},
  };
}

Tensor random_tensor(const Shape& shape, DType dtype, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(-1, 1);
  Tensor t = Tensor::empty(shape, dtype);
  for (int64_t i = 0; i < t.numel(); ++i) t.set_item(i, uniform(rng));
  return t;
}

double dot(const Tensor& a, const Tensor& b) {
  double sum = 0;
  for (int64_t i = 0; i < a.numel(); ++i) sum += a.item(i) * b.item(i);
  return sum;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(t.item(i)));
  return m;
}

// |fast - reference| <= tol * max(1, max |reference|)
void check_close(const Tensor& fast, const Tensor& reference, double tol, const char* what) {
  REQUIRE(fast.shape() == reference.shape());
  INFO(what);
  CHECK(max_abs_diff(fast, reference) <= tol * std::max(1.0, max_abs(reference)));
}

double tolerance(DType dtype) { return dtype == DType::f32 ? 1e-5 : 1e-12; }

void check_conv2d_against_naive(const Case& k, DType dtype) {
  INFO(k.name(), " ", dtype_name(dtype));
  const Tensor x = random_tensor({k.B, k.C, k.H, k.W}, dtype, 1);
  const Tensor w = random_tensor({k.F, k.C, k.KH, k.KW}, dtype, 2);
  const Tensor bias = random_tensor({k.F}, dtype, 3);
  const Conv2dGeometry g = conv2d_geometry(x.shape(), w.shape(), k.options);
  const Tensor dy = random_tensor(g.output_shape(), dtype, 4);
  // Backward outputs start non-zero to check the += contract.
  Tensor dx = random_tensor(x.shape(), dtype, 5), dw = random_tensor(w.shape(), dtype, 6);
  Tensor dbias = random_tensor(bias.shape(), dtype, 7);
  Tensor y_ref = Tensor::empty(g.output_shape(), dtype);
  Tensor dx_ref = dx.clone(), dw_ref = dw.clone(), dbias_ref = dbias.clone();

  const Tensor y = conv2d_forward(x, w, &bias, k.options);
  conv2d_backward_input(dy, w, dx, k.options);
  conv2d_backward_weight(dy, x, dw, k.options);
  conv2d_backward_bias(dy, dbias);
  dispatch(dtype, [&]<class T>() {
    naive::conv2d_forward<T>(g, x.data<T>(), w.data<T>(), bias.data<T>(), y_ref.data<T>());
    naive::conv2d_backward_input<T>(g, dy.data<T>(), w.data<T>(), dx_ref.data<T>());
    naive::conv2d_backward_weight<T>(g, dy.data<T>(), x.data<T>(), dw_ref.data<T>());
    naive::conv2d_backward_bias<T>(g, dy.data<T>(), dbias_ref.data<T>());
  });
  const double tol = tolerance(dtype);
  check_close(y, y_ref, tol, "forward");
  check_close(dx, dx_ref, tol, "backward_input");
  check_close(dw, dw_ref, tol, "backward_weight");
  check_close(dbias, dbias_ref, tol, "backward_bias");
}

void check_transpose_against_naive(const Case& k, DType dtype) {
  INFO(k.name(), " ", dtype_name(dtype));
  const Tensor x = random_tensor({k.B, k.C, k.H, k.W}, dtype, 11);
  const Tensor w = random_tensor({k.C, k.F, k.KH, k.KW}, dtype, 12);
  const Tensor bias = random_tensor({k.F}, dtype, 13);
  const Conv2dGeometry g = conv_transpose2d_geometry(x.shape(), w.shape(), k.options);
  Tensor y_ref = Tensor::empty(g.input_shape(), dtype);
  dispatch(dtype, [&]<class T>() {
    naive::conv_transpose2d_forward<T>(g, x.data<T>(), w.data<T>(), bias.data<T>(), y_ref.data<T>());
  });
  const Tensor y = conv_transpose2d_forward(x, w, &bias, k.options);
  CHECK(y.shape() == Shape{k.B, k.F, g.H, g.W});
  check_close(y, y_ref, tolerance(dtype), "transpose forward");
}

}  // namespace

TEST_CASE("conv2d: output sizes follow PyTorch's formulas") {
  CHECK(conv2d_output_size(28, 4, 2, 1, 1) == 14);
  CHECK(conv2d_output_size(14, 4, 2, 1, 1) == 7);
  CHECK(conv2d_output_size(5, 3, 2, 0, 1) == 2);
  CHECK(conv2d_output_size(9, 3, 1, 2, 2) == 9);
  CHECK(conv_transpose2d_output_size(7, 4, 2, 1, 1, 0) == 14);
  CHECK(conv_transpose2d_output_size(14, 4, 2, 1, 1, 0) == 28);
  CHECK(conv_transpose2d_output_size(4, 3, 2, 0, 1, 1) == 10);
  const Conv2dGeometry g = conv_transpose2d_geometry({2, 64, 7, 7}, {64, 32, 4, 4}, opts({2, 2}, {1, 1}));
  CHECK(g.input_shape() == Shape{2, 32, 14, 14});  // the transpose's output is its conv2d's input
  CHECK(g.output_shape() == Shape{2, 64, 7, 7});
}

TEST_CASE("conv2d: forward and backward (input, weight, bias) equal the naive loops in float and double") {
  for (const Case& k : conv_cases())
    for (DType dtype : {DType::f32, DType::f64}) check_conv2d_against_naive(k, dtype);
}

TEST_CASE("conv_transpose2d: forward equals PyTorch's scatter definition, with output_padding") {
  for (const Case& k : transpose_cases())
    for (DType dtype : {DType::f32, DType::f64}) check_transpose_against_naive(k, dtype);
}

TEST_CASE("conv2d: backward_input is the adjoint, <conv2d(x, w), y> = <x, backward_input(y, w)>") {
  for (const Case& k : conv_cases()) {
    INFO(k.name());
    const Tensor x = random_tensor({k.B, k.C, k.H, k.W}, DType::f64, 21);
    const Tensor w = random_tensor({k.F, k.C, k.KH, k.KW}, DType::f64, 22);
    const Conv2dGeometry g = conv2d_geometry(x.shape(), w.shape(), k.options);
    const Tensor y = random_tensor(g.output_shape(), DType::f64, 23);
    Tensor xt_y = Tensor::zeros(x.shape(), DType::f64);
    conv2d_backward_input(y, w, xt_y, k.options);
    const double lhs = dot(conv2d_forward(x, w, nullptr, k.options), y), rhs = dot(x, xt_y);
    CHECK(std::abs(lhs - rhs) <= 1e-10 * std::max(1.0, std::abs(lhs)));
    // The weight gradient is the adjoint in w: <conv2d(x, v), y> = <backward_weight(y, x), v>.
    const Tensor v = random_tensor(w.shape(), DType::f64, 24);
    Tensor dw = Tensor::zeros(w.shape(), DType::f64);
    conv2d_backward_weight(y, x, dw, k.options);
    const double lhs_w = dot(conv2d_forward(x, v, nullptr, k.options), y), rhs_w = dot(dw, v);
    CHECK(std::abs(lhs_w - rhs_w) <= 1e-10 * std::max(1.0, std::abs(lhs_w)));
  }
}

TEST_CASE("conv_transpose2d: backward input and weight are the adjoints of its forward") {
  for (const Case& k : transpose_cases()) {
    INFO(k.name());
    const Tensor x = random_tensor({k.B, k.C, k.H, k.W}, DType::f64, 31);
    const Tensor w = random_tensor({k.C, k.F, k.KH, k.KW}, DType::f64, 32);
    const Conv2dGeometry g = conv_transpose2d_geometry(x.shape(), w.shape(), k.options);
    const Tensor dy = random_tensor(g.input_shape(), DType::f64, 33);
    const Tensor y = conv_transpose2d_forward(x, w, nullptr, k.options);
    Tensor dx = Tensor::zeros(x.shape(), DType::f64);
    conv_transpose2d_backward_input(dy, w, dx, k.options);
    const double lhs = dot(y, dy), rhs = dot(x, dx);
    CHECK(std::abs(lhs - rhs) <= 1e-10 * std::max(1.0, std::abs(lhs)));
    Tensor dw = Tensor::zeros(w.shape(), DType::f64);
    conv_transpose2d_backward_weight(dy, x, dw, k.options);
    CHECK(std::abs(lhs - dot(dw, w)) <= 1e-10 * std::max(1.0, std::abs(lhs)));  // linear in w too
    // Bias gradient: the sum of dy over batch and space, per output channel.
    Tensor dbias = Tensor::zeros({k.F}, DType::f64);
    conv_transpose2d_backward_bias(dy, dbias);
    Tensor ones = Tensor::full({k.F}, 1.0, DType::f64);
    const Tensor y1 = conv_transpose2d_forward(x, w, &ones, k.options);
    CHECK(std::abs(dot(y1, dy) - lhs - dot(dbias, ones)) <= 1e-10 * std::max(1.0, std::abs(lhs)));
  }
}

TEST_CASE("conv2d and conv_transpose2d: results are bit-identical on 1 and 2 threads (batch 17)") {
  const Conv2dOptions o = opts({1, 1}, {1, 1});  // 9 channels: C*KH*KW = 81 takes the implicit forward
  const Tensor x = random_tensor({17, 9, 12, 12}, DType::f32, 41);
  const Tensor w = random_tensor({8, 9, 3, 3}, DType::f32, 42);
  const Tensor bias = random_tensor({8}, DType::f32, 43);
  const Tensor dy = random_tensor({17, 8, 12, 12}, DType::f32, 44);
  const Tensor bias3 = random_tensor({9}, DType::f32, 45);
  auto run = [&](int threads) {
    set_num_threads(threads);
    std::vector<Tensor> out;
    out.push_back(conv2d_forward(x, w, &bias, o));
    out.push_back(Tensor::zeros(x.shape()));
    conv2d_backward_input(dy, w, out.back(), o);
    out.push_back(Tensor::zeros(w.shape()));
    conv2d_backward_weight(dy, x, out.back(), o);
    out.push_back(Tensor::zeros({8}));
    conv2d_backward_bias(dy, out.back());
    out.push_back(conv_transpose2d_forward(dy, w, &bias3, o));
    out.push_back(Tensor::zeros(w.shape()));
    conv_transpose2d_backward_weight(x, dy, out.back(), o);
    out.push_back(Tensor::zeros(dy.shape()));
    conv_transpose2d_backward_input(x, w, out.back(), o);
    out.push_back(Tensor::zeros({9}));
    conv_transpose2d_backward_bias(x, out.back());
    set_num_threads(0);
    return out;
  };
  const std::vector<Tensor> one = run(1), two = run(2);
  for (size_t i = 0; i < one.size(); ++i) {
    INFO("output ", i);
    CHECK(bitwise_equal(one[i], two[i]));
  }
}

TEST_CASE("conv2d: concurrent calls from inside a parallel loop give the serial results") {
  // 8 concurrent convs of different sizes run on threads that each keep one set of scratch buffers; each call
  // must still see only its own. (Note [conv scratch and nested parallelism]: the task-stealing hazard that
  // the isolation prevents is timing-dependent; this test did not reproduce it with the isolation removed.)
  const Conv2dOptions o = opts({2, 2}, {1, 1});
  std::vector<Tensor> xs, expected_y, expected_dw;
  const Tensor w = random_tensor({32, 3, 4, 4}, DType::f32, 61);
  for (int i = 0; i < 8; ++i) {
    xs.push_back(random_tensor({20 + i, 3, 16 + 2 * i, 16}, DType::f32, 62 + i));
    expected_y.push_back(conv2d_forward(xs[i], w, nullptr, o));
    expected_dw.push_back(Tensor::zeros(w.shape()));
    conv2d_backward_weight(expected_y[i], xs[i], expected_dw[i], o);
  }
  std::vector<Tensor> ys(8), dws(8);
  tbb::parallel_for(0, 8, [&](int i) {
    ys[i] = conv2d_forward(xs[i], w, nullptr, o);
    dws[i] = Tensor::zeros(w.shape());
    conv2d_backward_weight(ys[i], xs[i], dws[i], o);
  });
  for (int i = 0; i < 8; ++i) {
    CHECK(bitwise_equal(ys[i], expected_y[i]));
    CHECK(bitwise_equal(dws[i], expected_dw[i]));
  }
}

TEST_CASE("conv_transpose2d: backward kernels add into their outputs (+=), they do not overwrite") {
  const Conv2dOptions o = opts({2, 2}, {1, 1}, {1, 1}, {1, 1});
  const Tensor x = random_tensor({2, 3, 4, 5}, DType::f64, 51), w = random_tensor({3, 2, 3, 3}, DType::f64, 52);
  const Tensor dy = random_tensor(conv_transpose2d_geometry(x.shape(), w.shape(), o).input_shape(), DType::f64, 53);
  Tensor dx0 = Tensor::zeros(x.shape(), DType::f64), dw0 = Tensor::zeros(w.shape(), DType::f64);
  Tensor db0 = Tensor::zeros({2}, DType::f64);
  Tensor dx1 = random_tensor(x.shape(), DType::f64, 54), dw1 = random_tensor(w.shape(), DType::f64, 55);
  Tensor db1 = random_tensor({2}, DType::f64, 56);
  const Tensor dx_start = dx1.clone(), dw_start = dw1.clone(), db_start = db1.clone();
  for (Tensor* dx : {&dx0, &dx1}) conv_transpose2d_backward_input(dy, w, *dx, o);
  for (Tensor* dw : {&dw0, &dw1}) conv_transpose2d_backward_weight(dy, x, *dw, o);
  for (Tensor* db : {&db0, &db1}) conv_transpose2d_backward_bias(dy, *db);
  auto check_added = [](const Tensor& from_zero, const Tensor& start, const Tensor& from_start) {
    for (int64_t i = 0; i < start.numel(); ++i)
      CHECK(std::abs(start.item(i) + from_zero.item(i) - from_start.item(i)) <= 1e-12);
  };
  check_added(dx0, dx_start, dx1);
  check_added(dw0, dw_start, dw1);
  check_added(db0, db_start, db1);
}

TEST_CASE("conv2d: bad shapes and options throw, naming the op and the shapes") {
  const Tensor x = Tensor::zeros({2, 3, 8, 8}), w = Tensor::zeros({4, 5, 3, 3});
  CHECK_THROWS_WITH_AS(conv2d_forward(x, w, nullptr),
                       "conv2d: input channels must match weight, got (2, 3, 8, 8) and (4, 5, 3, 3)", ShapeError);
  CHECK_THROWS_WITH_AS(conv2d_forward(Tensor::zeros({3, 8, 8}), w, nullptr),
                       "conv2d: input must be 4-d (B, C, H, W), got (3, 8, 8)", ShapeError);
  CHECK_THROWS_WITH_AS(conv2d_geometry({1, 1, 2, 8}, {1, 1, 3, 3}, {}),
                       "conv2d: output size must be positive, got (0, 6) from input (1, 1, 2, 8), weight (1, 1, 3, 3), "
                       "stride (1, 1), padding (0, 0), dilation (1, 1); hint: the dilated kernel is larger than the "
                       "padded input",
                       ValueError);
  CHECK_THROWS_WITH_AS(conv2d_geometry({1, 1, 8, 8}, {1, 1, 3, 3}, opts({0, 1}, {0, 0})),
                       "conv2d: stride must be positive, got (0, 1)", ValueError);
  CHECK_THROWS_AS(conv2d_geometry({1, 1, 8, 8}, {1, 1, 3, 3}, opts({1, 1}, {0, 0}, {1, 1}, {1, 0})), ValueError);
  CHECK_THROWS_WITH_AS(conv_transpose2d_geometry({1, 2, 4, 4}, {2, 3, 3, 3}, opts({2, 2}, {0, 0}, {1, 1}, {2, 1})),
                       "conv_transpose2d: output_padding must be smaller than either stride or dilation, got "
                       "output_padding (2, 1), stride (2, 2), dilation (1, 1)",
                       ValueError);
  CHECK_THROWS_WITH_AS(conv_transpose2d_forward(Tensor::zeros({1, 3, 4, 4}), Tensor::zeros({2, 3, 3, 3}), nullptr),
                       "conv_transpose2d: input channels must match weight, got (1, 3, 4, 4) and (2, 3, 3, 3)",
                       ShapeError);
  Tensor dx = Tensor::zeros({2, 4, 8, 8});
  CHECK_THROWS_WITH_AS(conv2d_backward_input(Tensor::zeros({2, 6, 6, 5}), Tensor::zeros({6, 4, 3, 3}), dx),
                       "conv2d_backward_input: dy must have shape (2, 6, 6, 6), got (2, 6, 6, 5)", ShapeError);
  const Tensor bias = Tensor::zeros({5});
  CHECK_THROWS_WITH_AS(conv2d_forward(Tensor::zeros({2, 4, 8, 8}), Tensor::zeros({6, 4, 3, 3}), &bias),
                       "conv2d: bias must have shape (6,), got (5,)", ShapeError);
}
