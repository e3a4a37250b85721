// Convolution throughput on the conv VAE's shapes (batch 128, float32), one JSON line per case and thread count:
//   {"bench": "conv", "case": ..., "threads": ..., "forward_gflops": ..., "backward_gflops": ...}
// FLOPs count 2 per multiply-add of the underlying GEMMs (Conv2dGeometry::macs): forward = 2 macs,
// backward = input + weight gradients = 4 macs; im2col / col2im time is included but not counted.
// Each figure is the best of several repetitions after a warm-up (which also sizes the scratch buffers).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "ops/conv.h"
#include "ops/parallel.h"

using namespace tapegrad;
using namespace tapegrad::ops;

namespace {

Tensor random_tensor(const Shape& shape, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(-1, 1);
  Tensor t = Tensor::empty(shape, DType::f32);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = uniform(rng);
  return t;
}

// Best time in seconds of fn() over repetitions lasting about `budget` seconds (at least 3).
template <class Fn>
double best_seconds(Fn&& fn, double budget = 0.4) {
  using clock = std::chrono::steady_clock;
  fn();  // warm-up
  double best = 1e30, total = 0;
  for (int rep = 0; rep < 3 || total < budget; ++rep) {
    const auto start = clock::now();
    fn();
    const double seconds = std::chrono::duration<double>(clock::now() - start).count();
    best = std::min(best, seconds);
    total += seconds;
  }
  return best;
}

struct Case {
  const char* name;
  bool transposed;
  Shape x, w;  // input and weight in the op's own (PyTorch) layout
  Conv2dOptions options;
};

void run(const Case& c, int threads) {
  set_num_threads(threads);
  const Tensor x = random_tensor(c.x, 1), w = random_tensor(c.w, 2);
  const Conv2dGeometry g =
      c.transposed ? conv_transpose2d_geometry(c.x, c.w, c.options) : conv2d_geometry(c.x, c.w, c.options);
  const Shape y_shape = c.transposed ? g.input_shape() : g.output_shape();
  const Tensor dy = random_tensor(y_shape, 3);
  Tensor dx = Tensor::zeros(c.x), dw = Tensor::zeros(c.w);
  double forward = 0, backward = 0;
  if (!c.transposed) {
    forward = best_seconds([&] { conv2d_forward(x, w, nullptr, c.options); });
    backward = best_seconds([&] {
      conv2d_backward_input(dy, w, dx, c.options);
      conv2d_backward_weight(dy, x, dw, c.options);
    });
  } else {
    forward = best_seconds([&] { conv_transpose2d_forward(x, w, nullptr, c.options); });
    backward = best_seconds([&] {
      conv_transpose2d_backward_input(dy, w, dx, c.options);
      conv_transpose2d_backward_weight(dy, x, dw, c.options);
    });
  }
  const double flops = 2.0 * static_cast<double>(g.macs());
  std::printf(
      "{\"bench\": \"conv\", \"case\": \"%s\", \"dtype\": \"float32\", \"batch\": %lld, \"threads\": %d, "
      "\"forward_ms\": %.3f, \"backward_ms\": %.3f, \"forward_gflops\": %.2f, \"backward_gflops\": %.2f}\n",
      c.name, static_cast<long long>(g.B), threads, forward * 1e3, backward * 1e3, flops / forward * 1e-9,
      2 * flops / backward * 1e-9);
  std::fflush(stdout);
  set_num_threads(0);
}

}  // namespace

int main() {
  const Conv2dOptions k4s2p1{.stride = {2, 2}, .padding = {1, 1}};
  const Case cases[] = {
      {"conv2d 1->32 28x28->14x14 k4 s2 p1", false, {128, 1, 28, 28}, {32, 1, 4, 4}, k4s2p1},
      {"conv2d 32->64 14x14->7x7 k4 s2 p1", false, {128, 32, 14, 14}, {64, 32, 4, 4}, k4s2p1},
      {"conv_transpose2d 64->32 7x7->14x14 k4 s2 p1", true, {128, 64, 7, 7}, {64, 32, 4, 4}, k4s2p1},
      {"conv_transpose2d 32->1 14x14->28x28 k4 s2 p1", true, {128, 32, 14, 14}, {32, 1, 4, 4}, k4s2p1},
  };
  for (const Case& c : cases)
    for (int threads : {1, 2}) run(c, threads);
  return 0;
}
