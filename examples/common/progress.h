// Progress reporting for long runs: a live line on a terminal (epoch, step, loss, examples/s, ETA), and plain
// one-line-per-epoch output when stderr is a file or a pipe (CI logs stay readable).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace tapegrad::progress {

class Progress {
 public:
  Progress(int64_t epochs, int64_t steps_per_epoch, int64_t batch_size);
  void start_epoch(int64_t epoch);
  // Called after each step with the step's loss.
  void step(int64_t step_in_epoch, double loss);
  // Ends the epoch's line; `summary` is appended (e.g. "test -ELBO 98.1").
  void end_epoch(const std::string& summary);
  double epoch_seconds() const;

 private:
  using Clock = std::chrono::steady_clock;
  int64_t epochs_, steps_, batch_;
  int64_t epoch_ = 0;
  double loss_sum_ = 0;
  int64_t loss_count_ = 0;
  Clock::time_point run_start_, epoch_start_, last_print_;
  double finished_epoch_seconds_ = 0;
  bool terminal_;
};

}  // namespace tapegrad::progress
