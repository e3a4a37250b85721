// Threads: one range kernel, called by a serial or a oneTBB-parallel driver.
//
// Note [determinism]: results must not depend on the thread count. Elementwise kernels are safe under any split.
// Reductions never let TBB choose where partial sums meet: they cut the range into fixed-size chunks
// (independent of the thread count), reduce each chunk in a fixed order, and combine the chunk results
// serially in chunk order. `parallel_for` below is only ever given independent outputs.
#pragma once

#include <algorithm>
#include <cstdint>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

namespace tapegrad {

// Below this many elements of work a kernel runs on the calling thread: measured with
// benchmarks/bench_elementwise (TBB's fork/join costs a few microseconds, the cost of ~16K fused adds).
inline constexpr int64_t kParallelThreshold = 1 << 15;

// Limits every later kernel to `threads` worker threads (0 = all cores); returns the previous limit.
int set_num_threads(int threads);
int num_threads();

// Calls body(begin, end) over [0, n) in pieces of at least `grain`; serial when n * cost_per_item is small.
template <class Body>
void parallel_for(int64_t n, int64_t grain, Body&& body, int64_t cost_per_item = 1) {
  if (n <= 0) return;
  if (n * cost_per_item < kParallelThreshold || num_threads() == 1 || n <= grain) {
    body(int64_t{0}, n);
    return;
  }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, std::max<int64_t>(grain, 1)),
                    [&](const tbb::blocked_range<int64_t>& r) { body(r.begin(), r.end()); });
}

}  // namespace tapegrad
