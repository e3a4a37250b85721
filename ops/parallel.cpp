#include "ops/parallel.h"

#include <memory>
#include <thread>

#include <tbb/global_control.h>

#include "ops/error.h"

namespace tapegrad {
namespace {
std::unique_ptr<tbb::global_control> g_thread_limit;
int g_threads = 0;  // 0: not limited
}  // namespace

int set_num_threads(int threads) {
  if (threads < 0) fail<ValueError>("set_num_threads: thread count must be >= 0, got ", threads);
  const int previous = num_threads();
  g_thread_limit.reset();
  g_threads = threads;
  // global_control (not task_arena) is the way to go above or below the core count with oneTBB 2021.
  if (threads > 0)
    g_thread_limit = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, threads);
  return previous;
}

int num_threads() {
  if (g_threads > 0) return g_threads;
  return static_cast<int>(tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism));
}

}  // namespace tapegrad
