#include "examples/common/progress.h"

#include <algorithm>
#include <cstdio>
#include <unistd.h>

namespace tapegrad::progress {

Progress::Progress(int64_t epochs, int64_t steps_per_epoch, int64_t batch_size)
    : epochs_(epochs), steps_(steps_per_epoch), batch_(batch_size), run_start_(Clock::now()),
      terminal_(::isatty(STDERR_FILENO)) {}

void Progress::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  loss_sum_ = 0;
  loss_count_ = 0;
  epoch_start_ = last_print_ = Clock::now();
}

void Progress::step(int64_t step_in_epoch, double loss) {
  loss_sum_ += loss;
  ++loss_count_;
  if (!terminal_) return;
  const auto now = Clock::now();
  if (now - last_print_ < std::chrono::milliseconds(200) && step_in_epoch + 1 < steps_) return;
  last_print_ = now;
  const double elapsed = std::chrono::duration<double>(now - epoch_start_).count();
  const double rate = (step_in_epoch + 1) * batch_ / std::max(elapsed, 1e-9);
  const double steps_left = (steps_ - step_in_epoch - 1) + (epochs_ - epoch_) * steps_;
  const double eta = steps_left * elapsed / (step_in_epoch + 1);
  std::fprintf(stderr, "\repoch %lld/%lld  step %lld/%lld  loss %.4f  %.0f examples/s  ETA %.0fs   ",
               static_cast<long long>(epoch_), static_cast<long long>(epochs_), static_cast<long long>(step_in_epoch + 1),
               static_cast<long long>(steps_), loss_sum_ / loss_count_, rate, eta);
  std::fflush(stderr);
}

double Progress::epoch_seconds() const { return finished_epoch_seconds_; }

void Progress::end_epoch(const std::string& summary) {
  finished_epoch_seconds_ = std::chrono::duration<double>(Clock::now() - epoch_start_).count();
  const double total = std::chrono::duration<double>(Clock::now() - run_start_).count();
  const double eta = total / epoch_ * (epochs_ - epoch_);
  std::fprintf(stderr, "%sepoch %lld/%lld  train loss %.4f  %.0f examples/s  %.1fs  ETA %.0fs  %s\n", terminal_ ? "\r" : "",
               static_cast<long long>(epoch_), static_cast<long long>(epochs_), loss_sum_ / std::max<int64_t>(loss_count_, 1),
               steps_ * batch_ / std::max(finished_epoch_seconds_, 1e-9), finished_epoch_seconds_, eta, summary.c_str());
  std::fflush(stderr);
}

}  // namespace tapegrad::progress
