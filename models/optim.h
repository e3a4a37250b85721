// Optimizers and learning-rate schedules, with PyTorch's update rules (torch.optim) so that results transfer.
//
//   SGD:   v = mu v + (g + wd p);  p -= lr (nesterov ? g' + mu v : v)              (Sutskever et al. 2013)
//   Adam:  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//          p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)            (Kingma & Ba 2015, Alg. 1)
//   AdamW: Adam with decoupled weight decay p -= lr wd p before the step          (Loshchilov & Hutter 2019)
//
// The state (step count, moment tensors) is exposed by name so checkpoints can save and restore it exactly.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tape.h"

namespace tapegrad {

class Optimizer {
 public:
  explicit Optimizer(std::vector<std::pair<std::string, Parameter*>> parameters, double learning_rate);
  virtual ~Optimizer() = default;

  virtual void step() = 0;
  void zero_grad();  // marks every gradient stale (zeros to readers of current_grad; the next backward writes)
  double learning_rate() const { return lr_; }
  void set_learning_rate(double lr) { lr_ = lr; }
  int64_t steps() const { return steps_; }

  // Named state tensors ("exp_avg.encoder.fc1.weight", ...) and the step count, for checkpoints.
  virtual std::vector<std::pair<std::string, Tensor>> state() const = 0;
  // Restores state(); every tensor must be present with the same shape.
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps);
  virtual std::string type_name() const = 0;

 protected:
  std::vector<std::pair<std::string, Parameter*>> params_;
  double lr_;
  int64_t steps_ = 0;
  // Zero tensors shaped like each parameter (a moment buffer).
  std::vector<Tensor> zeros_like_params() const;
  std::vector<std::pair<std::string, Tensor>> name_state(const char* prefix, const std::vector<Tensor>& buffers) const;
};

struct SGDOptions {
  double lr = 0.01, momentum = 0.0, weight_decay = 0.0;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<std::pair<std::string, Parameter*>> parameters, SGDOptions options);
  void step() override;
  std::vector<std::pair<std::string, Tensor>> state() const override;
  std::string type_name() const override { return "SGD"; }

 private:
  SGDOptions options_;
  std::vector<Tensor> velocity_;
};

struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool decoupled_weight_decay = false;  // true: AdamW
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<std::pair<std::string, Parameter*>> parameters, AdamOptions options);
  void step() override;
  std::vector<std::pair<std::string, Tensor>> state() const override;
  std::string type_name() const override { return options_.decoupled_weight_decay ? "AdamW" : "Adam"; }

 private:
  AdamOptions options_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
};

// AdamW (decoupled weight decay) is Adam with options.decoupled_weight_decay = true; this spells it.
Adam make_adamw(std::vector<std::pair<std::string, Parameter*>> parameters, AdamOptions options);

// Scales all gradients so that their global L2 norm is at most max_norm; returns the norm before clipping.
// The norm is summed in a fixed order (parameter order, then element order) so it is thread-count independent.
double clip_grad_norm(const std::vector<Parameter*>& parameters, double max_norm);

// The end of one training step, shared by the models' train_*_epoch loops: `loss` was recorded on `tape` after
// the gradients were zeroed. Backpropagates, clips the global gradient norm to `clip_norm` (if > 0), updates the
// parameters and rewinds the tape. A loss that is not finite is a ValueError naming the epoch and the step.
// Returns the loss value.
double optimization_step(Tape& tape, const Var& loss, Optimizer& optimizer, const std::vector<Parameter*>& parameters,
                         double clip_norm, int64_t epoch, int64_t step);

// Learning rate at a step: optional linear warm-up, then constant, step decay or cosine annealing.
struct LrSchedule {
  enum class Kind { constant, step, cosine } kind = Kind::constant;
  double base_lr = 1e-3;
  int64_t warmup_steps = 0;     // linear from base_lr / warmup_steps up to base_lr
  int64_t step_size = 1;        // step: multiply by gamma every step_size steps
  double gamma = 0.1;
  int64_t total_steps = 1;      // cosine: decays to min_lr at total_steps
  double min_lr = 0.0;
  double at(int64_t step) const;
};

}  // namespace tapegrad
