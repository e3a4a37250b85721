// Memory-bound kernels against the machine's limit: elementwise ops and reductions in GB/s beside memcpy's GB/s,
// measured in the same run on the same buffers, on 1 and 2 threads. And the tape's per-op overhead.
//
// Bytes counted: what the kernel must move at least (binary: read 2, write 1; unary: read 1, write 1;
// reduction: read 1). memcpy moves read 1 + write 1.
//
// Run: ./build/benchmarks/bench_elementwise [elementwise|adam|tape]   (one JSON object per line; a name: that part)
#include <cstring>
#include <string>

#include "autograd/activation.h"
#include "autograd/arithmetic.h"
#include "autograd/reduction.h"
#include "bench_util.h"
#include "models/optim.h"
#include "ops/elementwise.h"
#include "ops/parallel.h"
#include "ops/random.h"
#include "ops/reduce.h"

using namespace tapegrad;
using bench::median_seconds;

namespace {

void print_line(const char* op, int64_t n, int threads, double gbps, double memcpy_gbps) {
  std::printf("{\"bench\":\"elementwise\",\"op\":\"%s\",\"n\":%lld,\"threads\":%d,\"gbps\":%.2f,\"memcpy_gbps\":%.2f,"
              "\"ratio_vs_memcpy\":%.3f}\n",
              op, static_cast<long long>(n), threads, gbps, memcpy_gbps, gbps / memcpy_gbps);
  std::fflush(stdout);
}

// GB/s (bytes read + written) of copying float tensor a into y, split across the current threads through the same
// parallel_for as the kernels: the machine's limit they are compared with.
double memcpy_gbps_of(const Tensor& a, Tensor& y, int repeats) {
  const int64_t n = a.numel();
  const double t = median_seconds(repeats, [&] {
    parallel_for(n, ops::kElementwiseGrain, [&](int64_t i, int64_t end) {
      std::memcpy(y.data<float>() + i, a.data<float>() + i, 4 * (end - i));
    });
  });
  return 8.0 * n / t / 1e9;
}

void bench_size(int64_t n, int threads) {
  set_num_threads(threads);
  Tensor a = Tensor::empty({n}), b = Tensor::empty({n}), y = Tensor::empty({n}), s = Tensor::empty({1});
  fill_uniform(a, 1, 0, -1, 1);
  fill_uniform(b, 2, 0, -1, 1);
  const double bytes = 4.0 * n;
  const int repeats = 15;
  const double memcpy_gbps = memcpy_gbps_of(a, y, repeats);
  auto run_binary = [&](const char* name, auto f) {
    const double t = median_seconds(repeats, [&] { ops::binary(a, b, y, f); });
    print_line(name, n, threads, 3 * bytes / t / 1e9, memcpy_gbps);
  };
  auto run_unary = [&](const char* name, auto f) {
    const double t = median_seconds(repeats, [&] { ops::unary(a, y, f); });
    print_line(name, n, threads, 2 * bytes / t / 1e9, memcpy_gbps);
  };
  run_binary("add", [](auto x, auto z) { return x + z; });
  run_binary("mul", [](auto x, auto z) { return x * z; });
  run_unary("exp", [](auto x) { return xsimd::exp(x); });
  run_unary("sigmoid", [](auto x) { return 1.0f / (1.0f + xsimd::exp(-x)); });
  ops::AxisMask all{};
  all[0] = true;
  const double t_sum = median_seconds(repeats, [&] { ops::sum_axes(a, all, s); });
  print_line("sum", n, threads, bytes / t_sum / 1e9, memcpy_gbps);
  const double t_max = median_seconds(repeats, [&] { ops::max_axes(a, all, s); });
  print_line("max", n, threads, bytes / t_max / 1e9, memcpy_gbps);
  // logsumexp reads x twice (max, then sum of exp(x - max)): bytes counted once, as the minimum it must move.
  Tape tape;
  const double t_lse = median_seconds(repeats, [&] {
    NoGradGuard no_grad(tape);
    logsumexp(tape.constant(a), {0});
    tape.reset();
  });
  print_line("logsumexp", n, threads, bytes / t_lse / 1e9, memcpy_gbps);
}

// Adam's step on the GMVAE's 1,470,608 parameters (a few weight-sized tensors, like the model's): it must read w,
// g, m and v and write w, m and v, 28 bytes a float32 parameter, against memcpy's GB/s on as many bytes.
void bench_adam(int threads) {
  set_num_threads(threads);
  std::vector<Parameter> parameters;
  for (int64_t size : {401920, 262656, 32832, 32832, 33280, 262656, 402192, 42240}) {
    Tensor value = Tensor::empty({size});
    fill_uniform(value, static_cast<uint64_t>(size), 0, -0.1, 0.1);
    std::string name = "p";  // p0 .. p7 (appending: GCC 12 warns falsely on "p" + std::string)
    name += std::to_string(parameters.size());
    parameters.emplace_back(name, value);
    parameters.back().grad = Tensor::empty({size});
    fill_uniform(parameters.back().grad, static_cast<uint64_t>(size) + 1, 0, -1, 1);
  }
  std::vector<std::pair<std::string, Parameter*>> named;
  int64_t n = 0;
  for (Parameter& p : parameters) {
    named.emplace_back(p.name, &p);
    n += p.value.numel();
  }
  Adam adam(named, {.lr = 1e-3});
  Tensor a = Tensor::empty({n}), y = Tensor::empty({n});
  fill_uniform(a, 1, 0, -1, 1);
  const double bytes = 28.0 * n;
  const double memcpy_gbps = memcpy_gbps_of(a, y, 15);
  const double t = median_seconds(41, [&] { adam.step(); });
  std::printf("{\"bench\":\"adam_step\",\"params\":%lld,\"threads\":%d,\"ms\":%.3f,\"gbps\":%.2f,"
              "\"memcpy_gbps\":%.2f,\"ratio_vs_memcpy\":%.3f}\n",
              static_cast<long long>(n), threads, t * 1e3, bytes / t / 1e9, memcpy_gbps, bytes / t / 1e9 / memcpy_gbps);
  std::fflush(stdout);
}

// Tape overhead: a chain of 10,000 ops on 4-element tensors, recorded and differentiated, per op.
void bench_tape(int threads) {
  set_num_threads(threads);
  Tape tape;
  Parameter p("p", Tensor::full({4}, 0.5f));
  const int ops_per_chain = 10000;
  const double t = median_seconds(21, [&] {
    Var h = tape.param(p);
    for (int k = 0; k < ops_per_chain / 2; ++k) h = tanh(h * 1.0001);  // two ops per iteration
    tape.backward(h, Tensor::view_of(tape.scratch({4}, DType::f32).raw(), {4}, DType::f32));
    tape.reset();
  });
  std::printf("{\"bench\":\"tape_overhead\",\"ops\":%d,\"threads\":%d,\"us_per_op\":%.3f,"
              "\"note\":\"forward + backward of a chain of 4-element ops, median of 21\"}\n",
              ops_per_chain, threads, t / ops_per_chain * 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";  // elementwise, adam or tape: that part alone
  if (only.empty() || only == "elementwise")
    for (int threads : {1, 2})
      for (int64_t n : {int64_t{1} << 20, int64_t{1} << 22, int64_t{1} << 24}) bench_size(n, threads);
  if (only.empty() || only == "adam")
    for (int threads : {1, 2}) bench_adam(threads);
  if (only.empty() || only == "tape")
    for (int threads : {1, 2}) bench_tape(threads);
}
