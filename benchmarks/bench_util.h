// Shared timing helpers for the benchmark programs: medians of repeated runs, printed as JSON lines.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace tapegrad::bench {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median wall time of `fn` over `repeats` runs (after one warm-up run).
template <class Fn>
double median_seconds(int repeats, Fn&& fn) {
  fn();
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const double start = now_seconds();
    fn();
    times.push_back(now_seconds() - start);
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

// Keeps the optimiser from deleting work whose result is unused.
template <class T>
inline void do_not_optimize(const T& value) {
  asm volatile("" : : "r,m"(value) : "memory");
}

}  // namespace tapegrad::bench
