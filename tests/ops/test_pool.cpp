// Pooling and nearest upsampling: fast kernels against naive twins, adjoint identities for the backward
// kernels, thread-count determinism, and the error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "ops/parallel.h"
#include "ops/pool.h"

using namespace tapegrad;
using namespace tapegrad::ops;

namespace {

template <class T>
std::vector<T> random_values(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(-1, 1);
  std::vector<T> v(static_cast<size_t>(n));
  for (T& value : v) value = static_cast<T>(uniform(rng));
  return v;
}

template <class T>
double dot(const std::vector<T>& a, const std::vector<T>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += double(a[i]) * double(b[i]);
  return sum;
}

struct PoolCase {
  Shape x;
  Pool2dOptions options;
};

std::vector<PoolCase> pool_cases() {
  return {
      {{1, 1, 1, 1}, {.kernel = {1, 1}}},
      {{2, 3, 28, 28}, {.kernel = {2, 2}}},
      {{3, 1, 5, 7}, {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}}},
      {{1, 2, 6, 5}, {.kernel = {3, 2}, .stride = {1, 1}, .padding = {1, 1}}},
      {{2, 2, 9, 4}, {.kernel = {4, 2}, .stride = {3, 1}, .padding = {2, 0}}},
  };
}

template <class T>
void check_pool_case(const PoolCase& k) {
  INFO(k.x, " kernel (", k.options.kernel[0], ", ", k.options.kernel[1], ")");
  const Pool2dGeometry g = pool2d_geometry("max_pool2d", k.x, k.options);
  const int64_t n_in = g.input_shape().numel(), n_out = g.output_shape().numel();
  const std::vector<T> x = random_values<T>(n_in, 1), dy = random_values<T>(n_out, 2);
  std::vector<T> y(n_out), y_ref(n_out);
  std::vector<int64_t> arg(n_out), arg_ref(n_out);
  max_pool2d_forward(g, x.data(), y.data(), arg.data());
  naive::max_pool2d_forward(g, x.data(), y_ref.data(), arg_ref.data());
  CHECK(y == y_ref);
  CHECK(arg == arg_ref);
  // max_pool2d_backward is the adjoint of "pick x at argmax": <dy, y> = <backward(dy), x>.
  std::vector<T> dx(n_in);
  max_pool2d_backward(g, dy.data(), arg.data(), dx.data());
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-12;
  CHECK(std::abs(dot(dy, y) - dot(dx, x)) <= tol * std::max(1.0, std::abs(dot(dy, y))));

  avg_pool2d_forward(g, x.data(), y.data());
  naive::avg_pool2d_forward(g, x.data(), y_ref.data());
  for (int64_t i = 0; i < n_out; ++i) CHECK(std::abs(double(y[i]) - double(y_ref[i])) <= tol);
  std::vector<T> dx_ref = random_values<T>(n_in, 3);
  dx = dx_ref;  // start non-zero: += semantics
  avg_pool2d_backward(g, dy.data(), dx.data());
  naive::avg_pool2d_backward(g, dy.data(), dx_ref.data());
  for (int64_t i = 0; i < n_in; ++i) CHECK(std::abs(double(dx[i]) - double(dx_ref[i])) <= tol);
}

}  // namespace

TEST_CASE("max_pool2d and avg_pool2d: forward and backward equal the naive loops (float, double)") {
  for (const PoolCase& k : pool_cases()) {
    check_pool_case<float>(k);
    check_pool_case<double>(k);
  }
}

TEST_CASE("max_pool2d: padding never wins, NaN propagates, the first of equal maxima wins") {
  const Pool2dGeometry g =
      pool2d_geometry("max_pool2d", {1, 1, 2, 2}, {.kernel = {2, 2}, .stride = {1, 1}, .padding = {1, 1}});
  CHECK(g.output_shape() == Shape{1, 1, 3, 3});
  const std::vector<double> x = {-3, -1, -1, -2};
  std::vector<double> y(9);
  std::vector<int64_t> arg(9);
  max_pool2d_forward(g, x.data(), y.data(), arg.data());
  CHECK(y == std::vector<double>{-3, -1, -1, -1, -1, -1, -1, -1, -2});
  CHECK(arg == std::vector<int64_t>{0, 1, 1, 2, 1, 1, 2, 2, 3});
  const std::vector<double> with_nan = {1, std::nan(""), 5, 2};
  max_pool2d_forward(g, with_nan.data(), y.data(), arg.data());
  CHECK(std::isnan(y[4]));
  CHECK(arg[4] == 1);
}

TEST_CASE("upsample_nearest2d: copies each pixel into a scale block; backward sums the block (adjoint)") {
  const std::vector<double> x = {1, 2, 3, 4, 5, 6};  // (1, 1, 2, 3)
  std::vector<double> y(2 * 3 * 2 * 1);
  upsample_nearest2d_forward<double>(1, 1, 2, 3, {2, 1}, x.data(), y.data());
  CHECK(y == std::vector<double>{1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6});
  const std::vector<double> xr = random_values<double>(2 * 3 * 5 * 7, 4);
  const std::vector<double> dy = random_values<double>(2 * 3 * 15 * 14, 5);
  std::vector<double> up(dy.size()), dx(xr.size());
  upsample_nearest2d_forward<double>(2, 3, 5, 7, {3, 2}, xr.data(), up.data());
  upsample_nearest2d_backward<double>(2, 3, 5, 7, {3, 2}, dy.data(), dx.data());
  CHECK(std::abs(dot(up, dy) - dot(xr, dx)) <= 1e-12 * std::abs(dot(up, dy)));
}

TEST_CASE("pooling: results are bit-identical on 1 and 2 threads") {
  const Pool2dGeometry g =
      pool2d_geometry("avg_pool2d", {16, 8, 14, 14}, {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}});
  const int64_t n_in = g.input_shape().numel(), n_out = g.output_shape().numel();
  const std::vector<float> x = random_values<float>(n_in, 6), dy = random_values<float>(n_out, 7);
  auto run = [&](int threads) {
    set_num_threads(threads);
    std::vector<float> y(n_out), dx(n_in);
    std::vector<int64_t> arg(n_out);
    avg_pool2d_forward(g, x.data(), y.data());
    avg_pool2d_backward(g, dy.data(), dx.data());
    max_pool2d_forward(g, x.data(), y.data(), arg.data());
    max_pool2d_backward(g, dy.data(), arg.data(), dx.data());
    set_num_threads(0);
    return std::pair{y, dx};
  };
  CHECK(run(1) == run(2));
}

TEST_CASE("pool2d_geometry: bad options throw, naming the op") {
  CHECK_THROWS_WITH_AS(pool2d_geometry("max_pool2d", {1, 1, 4, 4}, {.kernel = {2, 2}, .padding = {2, 0}}),
                       "max_pool2d: padding must be between 0 and half the kernel size, got padding (2, 0) and "
                       "kernel (2, 2)",
                       ValueError);
  CHECK_THROWS_WITH_AS(pool2d_geometry("avg_pool2d", {1, 4, 4}, {}),
                       "avg_pool2d: input must be 4-d (B, C, H, W), got (1, 4, 4)", ShapeError);
  CHECK_THROWS_WITH_AS(pool2d_geometry("avg_pool2d", {1, 1, 1, 4}, {}),
                       "avg_pool2d: output size must be positive, got (0, 2) from input (1, 1, 1, 4), kernel (2, 2), "
                       "stride (2, 2), padding (0, 0)",
                       ValueError);
}
