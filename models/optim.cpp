#include "models/optim.h"

#include <cmath>
#include <numbers>

#include <xsimd/xsimd.hpp>

#include "ops/elementwise.h"
#include "ops/parallel.h"

namespace tapegrad {

Optimizer::Optimizer(std::vector<std::pair<std::string, Parameter*>> parameters, double learning_rate)
    : params_(std::move(parameters)), lr_(learning_rate) {
  if (!(learning_rate > 0)) fail<ValueError>("optimizer: learning rate must be > 0, got ", learning_rate);
}

// Marks the gradients stale rather than writing zeros: the next backward writes them (Note [first contribution
// writes], autograd/tape.cpp); step() reads a parameter no rule reached as zeros (current_grad).
void Optimizer::zero_grad() {
  for (auto& [name, p] : params_) p->grad_stale = true;
}

std::vector<Tensor> Optimizer::zeros_like_params() const {
  std::vector<Tensor> out;
  for (auto& [name, p] : params_) out.push_back(Tensor::zeros(p->value.shape(), p->value.dtype()));
  return out;
}

std::vector<std::pair<std::string, Tensor>> Optimizer::name_state(const char* prefix,
                                                                  const std::vector<Tensor>& buffers) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) out.emplace_back(std::string(prefix) + "." + params_[i].first, buffers[i]);
  return out;
}

void Optimizer::load_state(const std::vector<std::pair<std::string, Tensor>>& saved, int64_t steps) {
  auto mine = state();  // tensors alias the live buffers: copying into them restores the state
  for (auto& [name, buffer] : mine) {
    const Tensor* found = nullptr;
    for (auto& [saved_name, tensor] : saved)
      if (saved_name == name) found = &tensor;
    if (!found) fail<ValueError>(type_name(), ": optimizer state must contain '", name, "', got none");
    if (!(found->shape() == buffer.shape()))
      fail<ShapeError>(type_name(), ": optimizer state '", name, "' must have shape ", buffer.shape(), ", got ",
                       found->shape());
    buffer.copy_from(found->to(buffer.dtype()));
  }
  steps_ = steps;
}

// ---- SGD ----

SGD::SGD(std::vector<std::pair<std::string, Parameter*>> parameters, SGDOptions options)
    : Optimizer(std::move(parameters), options.lr), options_(options), velocity_(zeros_like_params()) {
  if (options.nesterov && options.momentum <= 0)
    fail<ValueError>("SGD: nesterov momentum must be > 0, got ", options.momentum);
}

void SGD::step() {
  const double mu = options_.momentum, wd = options_.weight_decay, lr = lr_;
  const bool nesterov = options_.nesterov, first = steps_ == 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = *params_[i].second;
    dispatch(p.value.dtype(), [&]<class T>() {
      T* w = p.value.data<T>();
      const T* g = p.current_grad().data<T>();
      T* v = velocity_[i].data<T>();
      parallel_for(p.value.numel(), 1 << 14, [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
          T d = g[k] + static_cast<T>(wd) * w[k];
          if (mu != 0) {
            v[k] = first ? d : static_cast<T>(mu) * v[k] + d;  // PyTorch starts the buffer at the first gradient
            d = nesterov ? d + static_cast<T>(mu) * v[k] : v[k];
          }
          w[k] -= static_cast<T>(lr) * d;
        }
      });
    });
  }
  ++steps_;
}

std::vector<std::pair<std::string, Tensor>> SGD::state() const { return name_state("momentum_buffer", velocity_); }

// ---- Adam / AdamW ----

Adam::Adam(std::vector<std::pair<std::string, Parameter*>> parameters, AdamOptions options)
    : Optimizer(std::move(parameters), options.lr),
      options_(options),
      exp_avg_(zeros_like_params()),
      exp_avg_sq_(zeros_like_params()) {
  if (!(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1))
    fail<ValueError>("Adam: betas must be in [0, 1), got ", options.beta1, " and ", options.beta2);
}

Adam make_adamw(std::vector<std::pair<std::string, Parameter*>> parameters, AdamOptions options) {
  options.decoupled_weight_decay = true;
  return Adam(std::move(parameters), options);
}

namespace {

// The per-step constants of Adam's update, already in the parameter's type.
template <class T>
struct AdamConstants {
  T l2, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_sqrt_bias_correction2, eps, decay, step_size;
};

// Elements [begin, end) of one parameter in one fused pass over (w, g, m, v): the update is memory bound, so
// touching each array once matters. Constants and pointers arrive by value, so that they stay in registers
// (captured by reference, the loop reloaded and re-broadcast them for every batch).
template <class T>
void adam_update(const AdamConstants<T> c, T* const w, const T* const g, T* const m, T* const v, int64_t begin,
                 int64_t end) {
  using B = simd::Batch<T>;
  constexpr int64_t W = simd::width<T>;
  const B l2(c.l2), beta1(c.beta1), one_minus_beta1(c.one_minus_beta1), beta2(c.beta2),
      one_minus_beta2(c.one_minus_beta2), inv_sqrt_bc2(c.inv_sqrt_bias_correction2), eps(c.eps), decay(c.decay),
      step_size(c.step_size);
  auto update = [&](B wk, B gk, B mk, B vk, B& w_out, B& m_out, B& v_out) {
    gk = gk + l2 * wk;
    m_out = beta1 * mk + one_minus_beta1 * gk;
    v_out = beta2 * vk + one_minus_beta2 * gk * gk;
    const B denom = xsimd::sqrt(v_out) * inv_sqrt_bc2 + eps;
    w_out = wk * decay - step_size * m_out / denom;
  };
  int64_t k = begin;
  for (; k + W <= end; k += W) {
    B wo, mo, vo;
    update(B::load_unaligned(w + k), B::load_unaligned(g + k), B::load_unaligned(m + k), B::load_unaligned(v + k), wo,
           mo, vo);
    wo.store_unaligned(w + k);
    mo.store_unaligned(m + k);
    vo.store_unaligned(v + k);
  }
  if (k < end) {  // padded tail through the same batch code (Note [simd tail])
    alignas(64) T tw[W] = {}, tg[W] = {}, tm[W] = {}, tv[W] = {};
    std::copy(w + k, w + end, tw);
    std::copy(g + k, g + end, tg);
    std::copy(m + k, m + end, tm);
    std::copy(v + k, v + end, tv);
    B wo, mo, vo;
    update(B::load_aligned(tw), B::load_aligned(tg), B::load_aligned(tm), B::load_aligned(tv), wo, mo, vo);
    wo.store_aligned(tw);
    mo.store_aligned(tm);
    vo.store_aligned(tv);
    std::copy(tw, tw + (end - k), w + k);
    std::copy(tm, tm + (end - k), m + k);
    std::copy(tv, tv + (end - k), v + k);
  }
}

}  // namespace

void Adam::step() {
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bias_correction1 = 1 - std::pow(b1, static_cast<double>(steps_));
  const double bias_correction2 = 1 - std::pow(b2, static_cast<double>(steps_));
  const double step_size = lr_ / bias_correction1;
  const double inv_sqrt_bc2 = 1 / std::sqrt(bias_correction2);
  const double decay = options_.decoupled_weight_decay ? 1 - lr_ * options_.weight_decay : 1.0;
  const double l2 = options_.decoupled_weight_decay ? 0.0 : options_.weight_decay;
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = *params_[i].second;
    dispatch(p.value.dtype(), [&]<class T>() {
      T* const w = p.value.data<T>();
      const T* const g = p.current_grad().data<T>();
      T* const m = exp_avg_[i].data<T>();
      T* const v = exp_avg_sq_[i].data<T>();
      const AdamConstants<T> c{static_cast<T>(l2), static_cast<T>(b1), static_cast<T>(1 - b1), static_cast<T>(b2),
                               static_cast<T>(1 - b2), static_cast<T>(inv_sqrt_bc2), static_cast<T>(options_.eps),
                               static_cast<T>(decay), static_cast<T>(step_size)};
      parallel_for(p.value.numel(), 1 << 14, [&](int64_t b, int64_t e) { adam_update(c, w, g, m, v, b, e); });
    });
  }
}

std::vector<std::pair<std::string, Tensor>> Adam::state() const {
  auto out = name_state("exp_avg", exp_avg_);
  for (auto& entry : name_state("exp_avg_sq", exp_avg_sq_)) out.push_back(entry);
  return out;
}

// ---- clipping and schedules ----

double clip_grad_norm(const std::vector<Parameter*>& parameters, double max_norm) {
  if (!(max_norm > 0)) fail<ValueError>("clip_grad_norm: max_norm must be > 0, got ", max_norm);
  double total = 0;
  for (Parameter* p : parameters) {
    const Tensor& g = p->current_grad();
    for (int64_t k = 0; k < g.numel(); ++k) total += g.item(k) * g.item(k);
  }
  const double norm = std::sqrt(total);
  if (norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);  // PyTorch's clip_grad_norm_ epsilon
    for (Parameter* p : parameters) {
      Tensor& g = p->grad;
      ops::unary(g, g, [scale](auto v) { return v * decltype(v)(scale); });
    }
  }
  return norm;
}

double LrSchedule::at(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) return base_lr * static_cast<double>(step + 1) / warmup_steps;
  const int64_t t = step - warmup_steps;
  switch (kind) {
    case Kind::constant: return base_lr;
    case Kind::step: return base_lr * std::pow(gamma, static_cast<double>(t / std::max<int64_t>(step_size, 1)));
    case Kind::cosine: {
      const int64_t span = std::max<int64_t>(total_steps - warmup_steps, 1);
      const double progress = std::min(1.0, static_cast<double>(t) / span);
      return min_lr + 0.5 * (base_lr - min_lr) * (1 + std::cos(std::numbers::pi * progress));
    }
  }
  return base_lr;
}

double optimization_step(Tape& tape, const Var& loss, Optimizer& optimizer, const std::vector<Parameter*>& parameters,
                         double clip_norm, int64_t epoch, int64_t step) {
  tape.backward(loss);
  if (clip_norm > 0) clip_grad_norm(parameters, clip_norm);
  optimizer.step();
  const double value = loss.item();
  if (!std::isfinite(value))
    fail<ValueError>("train: loss became ", value, " at epoch ", epoch, " step ", step,
                     "\nhint: lower --lr, or check the data (pixels must be in [0, 1])");
  tape.reset();
  return value;
}

}  // namespace tapegrad
