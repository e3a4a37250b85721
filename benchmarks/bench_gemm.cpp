// GEMM throughput: tapegrad's blocked sgemm (ops/gemm.cpp) beside OpenBLAS's, and beside the machine's measured
// FMA peak, for the VAE's and the M2 decoder's dense-layer shapes and 1024^3, in the three forms a dense layer uses
// (forward x W^T-like A*B, dW = x^T dy as A^T*B, dx = dy W^T as A*B^T), on 1 and 2 threads.
//
// Output: one JSON object per line on stdout; notes on stderr.
// Usage: bench_gemm [--time SECONDS] [--quick] [--m2] [--case MxKxN:FORM ...] [--ours-only] [--threads N]
//   --time: time budget per implementation per case (default 0.25 s); --quick: only the first shape;
//   --m2: only the three products of a step of M2's 500 -> 784 decoder layer, in the forms the layer runs them
//   (y = h W^T: 1050 x 500 x 784 A*B^T; dh = dy W: 1050 x 784 x 500 A*B; dW = dy^T h: 784 x 1050 x 500 A^T*B);
//   --case MxKxN:FORM (repeatable; FORM ab, atb or abt): only the given products, e.g. --case 100x784x512:abt;
//   --ours-only: skip OpenBLAS; --threads N: only N threads (default: 1, then 2).
// Method: the machine is shared and noisy, so ours and OpenBLAS alternate in short blocks of repetitions (see
// run_case), and we report the median of each. Peak = 2 * (SIMD width) flops per FMA, from a loop of 12 independent
// FMA chains per thread (enough to cover Zen 3's 4-cycle FMA latency on its 2 FMA pipes), run on the same
// thread count with TBB right after each block of ours (not after OpenBLAS's, whose spinning threads would lower
// it); peak_gflops is the median of those samples.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <tbb/parallel_for.h>
#include <xsimd/xsimd.hpp>

#include "ops/gemm.h"
#include "ops/parallel.h"
#include "ops/simd.h"

#ifdef TAPEGRAD_HAVE_OPENBLAS
#include <cblas.h>
extern "C" void openblas_set_num_threads(int num_threads);  // declared by OpenBLAS's cblas.h; repeated in case
#endif

using namespace tapegrad;
using Clock = std::chrono::steady_clock;

namespace {

bool g_ours_only = false;  // --ours-only: skip OpenBLAS (to see whether its spinning threads disturb ours)

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// FMA throughput of one thread for `iters` iterations of 12 independent chains; returns flops done.
double fma_loop(int64_t iters, float seed) {
  using Batch = xsimd::batch<float>;
  constexpr int kChains = 12;
  Batch acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = Batch(seed + float(i));
  const Batch x(0.999999f), y(1e-7f);
  for (int64_t it = 0; it < iters; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = simd::fma(acc[i], x, y);
  Batch sum(0.f);
  for (int i = 0; i < kChains; ++i) sum += acc[i];
  volatile float sink = xsimd::hadd(sum);  // keeps the loop alive
  (void)sink;
  return 2.0 * Batch::size * kChains * static_cast<double>(iters);
}

// Peak GFLOP/s on the current thread limit (`threads` threads): `chunks_per_thread` chunks per thread through
// TBB, best of `reps` timings. The caller sets the thread limit (set_num_threads), once.
double measure_peak(int threads, int reps, int64_t iters = 1'000'000, int chunks_per_thread = 8) {
  const int64_t chunks = chunks_per_thread * threads;
  std::vector<double> flops(static_cast<size_t>(chunks));
  std::vector<double> rates;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = Clock::now();
    tbb::parallel_for(int64_t{0}, chunks, [&](int64_t c) { flops[size_t(c)] = fma_loop(iters, float(c)); });
    const double elapsed = seconds_since(t0);
    double total = 0;
    for (double f : flops) total += f;
    rates.push_back(total / elapsed * 1e-9);
  }
  return *std::max_element(rates.begin(), rates.end());
}

enum class Form { ab, atb, abt };
const char* form_name(Form f) { return f == Form::ab ? "A*B" : f == Form::atb ? "A^T*B" : "A*B^T"; }

struct Case {
  int64_t M, K, N;
  Form form;
  int threads;
};

struct Result {
  double ours, theirs, peak;  // GFLOP/s; theirs < 0 without OpenBLAS
  int reps;
};

Result run_case(const Case& c, double time_budget) {
  const bool ta = c.form == Form::atb, tb = c.form == Form::abt;
  // Stored shapes: A is (K, M) when transposed, B is (N, K) when transposed.
  const int64_t lda = ta ? c.M : c.K, ldb = tb ? c.K : c.N, ldc = c.N;
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> A(static_cast<size_t>(c.M * c.K)), B(static_cast<size_t>(c.K * c.N)),
      C(static_cast<size_t>(c.M * c.N));
  for (float& x : A) x = dist(rng);
  for (float& x : B) x = dist(rng);
  const double flops = 2.0 * static_cast<double>(c.M) * static_cast<double>(c.N) * static_cast<double>(c.K);

  set_num_threads(c.threads);
  auto ours = [&] {
    const auto t0 = Clock::now();
    ops::gemm<float>(ta ? ops::Trans::yes : ops::Trans::no, tb ? ops::Trans::yes : ops::Trans::no, c.M, c.N, c.K,
                     1.f, A.data(), lda, B.data(), ldb, 0.f, C.data(), ldc);
    return seconds_since(t0);
  };
#ifdef TAPEGRAD_HAVE_OPENBLAS
  openblas_set_num_threads(c.threads);
  auto theirs = [&] {
    const auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(c.M), int(c.N),
                int(c.K), 1.f, A.data(), int(lda), B.data(), int(ldb), 0.f, C.data(), int(ldc));
    return seconds_since(t0);
  };
  const bool have_openblas = !g_ours_only;
#else
  auto theirs = [] { return 0.0; };
  const bool have_openblas = false;
#endif
  // Warm-up (page faults, packing buffers, thread pools), then enough repetitions to fill the budget.
  const double first = ours() + ours();
  if (have_openblas) theirs(), theirs();
  const int reps = static_cast<int>(std::clamp(time_budget / std::max(first / 2, 1e-7), 8.0, 400.0));
  // Alternating blocks of repetitions per library (ours first, then theirs first), peak samples between blocks.
  // After a call, OpenBLAS's idle threads keep spinning for a while (2^28 cycles by default in 0.3.21, ~0.1 s),
  // TBB's for less, and take the core the next call needs: timed one by one after the other library, a random
  // third of our 2-thread cases ran at one core's speed (0.5-0.6x OpenBLAS, different cases each run on Zen 1).
  // So a block first runs its own library untimed for a while (one repetition on 1 thread, 150 ms on 2) and
  // only then times. Sleeping instead does not work on this VM: an idle vCPU wakes slowly, both libraries then
  // ran at one core's speed; nor does OPENBLAS_THREAD_TIMEOUT=4, which slowed OpenBLAS itself by up to 25%.
  // On 2 threads there are about 4 blocks per library, so the warm-up costs ~1 s a case. The peak samples, taken
  // right after our blocks, make ours / peak compare figures taken under the same load from other processes.
  const int block = c.threads > 1 ? std::max(4, reps / 4) : 4;
  std::vector<double> t_ours, t_theirs, peaks;
  auto run_block = [&](auto& f, std::vector<double>& times) {
    f();  // settling repetition, not kept
    if (c.threads > 1)
      for (double settled = 0; settled < 0.15;) settled += f();
    for (int i = 0; i < block; ++i) times.push_back(f());
  };
  auto run_ours = [&] {
    run_block(ours, t_ours);
    peaks.push_back(measure_peak(c.threads, 1, 200'000, 2));
  };
  for (int r = 0; r < reps; r += block) {
    const bool ours_first = (r / block) % 2 == 0;
    if (ours_first) run_ours();
    if (have_openblas) run_block(theirs, t_theirs);
    if (!ours_first) run_ours();
  }
  return {flops / median(t_ours) * 1e-9, have_openblas ? flops / median(t_theirs) * 1e-9 : -1.0, median(peaks),
          reps};
}

void print_result(const Case& c, const Result& r) {
  char theirs_str[32] = "null", ratio_str[32] = "null";
  if (r.theirs > 0) {
    std::snprintf(theirs_str, sizeof theirs_str, "%.2f", r.theirs);
    std::snprintf(ratio_str, sizeof ratio_str, "%.3f", r.ours / r.theirs);
  }
  std::printf("{\"bench\":\"gemm\",\"M\":%lld,\"K\":%lld,\"N\":%lld,\"form\":\"%s\",\"threads\":%d,"
              "\"ours_gflops\":%.2f,\"openblas_gflops\":%s,\"peak_gflops\":%.2f,\"ratio_vs_openblas\":%s,"
              "\"ratio_vs_peak\":%.3f,\"reps\":%d}\n",
              static_cast<long long>(c.M), static_cast<long long>(c.K), static_cast<long long>(c.N),
              form_name(c.form), c.threads, r.ours, theirs_str, r.peak, ratio_str, r.ours / r.peak, r.reps);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  double time_budget = 0.25;
  bool quick = false;
  std::vector<Case> only;  // --m2 / --case: just these products (threads filled in below)
  std::vector<int> thread_counts = {1, 2};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--time") == 0 && i + 1 < argc) time_budget = std::atof(argv[++i]);
    else if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--m2") == 0) {
      for (const Case& c : {Case{1050, 500, 784, Form::abt, 0}, Case{1050, 784, 500, Form::ab, 0},
                            Case{784, 1050, 500, Form::atb, 0}})
        only.push_back(c);
    } else if (std::strcmp(argv[i], "--case") == 0 && i + 1 < argc) {
      long long m = 0, k = 0, n = 0;
      char form[8] = {};
      const std::string spec = argv[++i];
      const std::string f = std::sscanf(spec.c_str(), "%lldx%lldx%lld:%7s", &m, &k, &n, form) == 4 ? form : "";
      if (m < 1 || k < 1 || n < 1 || (f != "ab" && f != "atb" && f != "abt")) {
        std::fprintf(stderr, "bench_gemm: --case expects MxKxN:FORM with FORM ab, atb or abt, got %s\n", spec.c_str());
        return 2;
      }
      only.push_back({m, k, n, f == "ab" ? Form::ab : f == "atb" ? Form::atb : Form::abt, 0});
    }
    else if (std::strcmp(argv[i], "--ours-only") == 0) g_ours_only = true;
    else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) thread_counts = {std::atoi(argv[++i])};
    else {
      std::fprintf(stderr, "bench_gemm: unknown argument %s\n", argv[i]);
      std::fprintf(stderr, "usage: bench_gemm [--time SECONDS] [--quick] [--m2] [--case MxKxN:FORM ...] [--ours-only] "
                           "[--threads N]\n");
      return 2;
    }
  }
  for (const char* var : {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS"}) {
    const char* value = std::getenv(var);
    std::fprintf(stderr, "bench_gemm: %s=%s\n", var, value ? value : "(unset)");
  }
#ifndef TAPEGRAD_HAVE_OPENBLAS
  std::fprintf(stderr, "bench_gemm: built without OpenBLAS (pkg-config openblas not found): "
                       "openblas fields are null\n");
#endif
  std::fprintf(stderr, "bench_gemm: xsimd batch<float> = %zu floats (%s)\n", xsimd::batch<float>::size,
               xsimd::default_arch::name());

  // (M, K, N): the VAE's layers, the M2 decoder's 500 -> 784 layer over 1,050 (image, class) rows, and 1024^3.
  const int64_t shapes[][3] = {{128, 784, 400}, {128, 400, 784},  {784, 128, 400},  {400, 128, 784},
                               {128, 400, 20},  {1050, 500, 784}, {784, 1050, 500}, {1050, 784, 500},
                               {1024, 1024, 1024}};
  for (int threads : thread_counts) {
    set_num_threads(threads);
    std::fprintf(stderr, "bench_gemm: FMA peak on %d thread(s), best of 5 before the cases: %.1f GFLOP/s\n", threads,
                 measure_peak(threads, 5));
    if (!only.empty()) {
      for (Case c : only) {
        c.threads = threads;
        print_result(c, run_case(c, time_budget));
      }
      continue;
    }
    for (const auto& s : shapes) {
      for (Form f : {Form::ab, Form::atb, Form::abt}) {
        const Case c{s[0], s[1], s[2], f, threads};
        print_result(c, run_case(c, time_budget));
      }
      if (quick) break;
    }
  }
  set_num_threads(0);
  return 0;
}
