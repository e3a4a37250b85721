#include <doctest/doctest.h>

#include <cmath>

#include "models/optim.h"

using namespace tapegrad;

namespace {
std::vector<std::pair<std::string, Parameter*>> named(Parameter& p) { return {{p.name, &p}}; }
}  // namespace

TEST_CASE("Adam: the first two steps equal the hand-computed update of Kingma & Ba, Algorithm 1") {
  Parameter p("w", Tensor::from({1.0f, -2.0f, 0.5f}, {3}));
  Adam adam(named(p), {.lr = 0.1});
  const double g1[] = {0.5, -1.0, 2.0}, g2[] = {0.1, 0.2, -0.3};
  double w[] = {1.0, -2.0, 0.5}, m[3] = {}, v[3] = {};
  for (int t = 1; t <= 2; ++t) {
    const double* g = t == 1 ? g1 : g2;
    for (int k = 0; k < 3; ++k) {
      p.grad.set_item(k, g[k]);
      m[k] = 0.9 * m[k] + 0.1 * g[k];
      v[k] = 0.999 * v[k] + 0.001 * g[k] * g[k];
      const double m_hat = m[k] / (1 - std::pow(0.9, t)), v_hat = v[k] / (1 - std::pow(0.999, t));
      w[k] -= 0.1 * m_hat / (std::sqrt(v_hat) + 1e-8);
    }
    adam.step();
    for (int k = 0; k < 3; ++k) CHECK(p.value.item(k) == doctest::Approx(w[k]).epsilon(1e-6));
  }
  // The first step of Adam moves every weight by about lr, whatever the gradient's scale.
  CHECK(adam.steps() == 2);
}

TEST_CASE("AdamW decays weights decoupled from the gradient; Adam's weight_decay adds to the gradient") {
  Parameter a("w", Tensor::from({2.0f}, {1})), b("w", Tensor::from({2.0f}, {1}));
  Adam adamw = make_adamw(named(a), {.lr = 0.1, .weight_decay = 0.5});
  Adam adam(named(b), {.lr = 0.1, .weight_decay = 0.5});
  a.grad.set_item(0, 1.0);
  b.grad.set_item(0, 1.0);
  adamw.step();
  adam.step();
  CHECK(a.value.item(0) == doctest::Approx(2.0 * (1 - 0.1 * 0.5) - 0.1).epsilon(1e-6));  // decay, then a unit step
  CHECK(b.value.item(0) == doctest::Approx(2.0 - 0.1).epsilon(1e-6));  // gradient 1 + 0.5 * 2, still a unit step
  CHECK(adamw.type_name() == "AdamW");
}

TEST_CASE("SGD with momentum and Nesterov follows PyTorch's update") {
  Parameter p("w", Tensor::from({1.0f}, {1}));
  SGD sgd(named(p), {.lr = 0.1, .momentum = 0.9, .nesterov = true});
  double w = 1.0, buf = 0.0;
  for (int t = 0; t < 3; ++t) {
    const double g = 2.0 * w;  // gradient of w^2
    p.grad.set_item(0, g);
    buf = t == 0 ? g : 0.9 * buf + g;
    w -= 0.1 * (g + 0.9 * buf);
    sgd.step();
    CHECK(p.value.item(0) == doctest::Approx(w).epsilon(1e-6));
  }
  SGD plain(named(p), {.lr = 0.5, .weight_decay = 0.1});
  const double before = p.value.item(0);
  p.grad.set_item(0, 1.0);
  plain.step();
  CHECK(p.value.item(0) == doctest::Approx(before - 0.5 * (1.0 + 0.1 * before)).epsilon(1e-6));
  CHECK_THROWS_AS(SGD(named(p), {.lr = 0.1, .momentum = 0.0, .nesterov = true}), ValueError);
}

TEST_CASE("optimizer state round-trips through state() and load_state()") {
  Parameter p("w", Tensor::from({1.0f, 2.0f}, {2})), q("w", Tensor::from({1.0f, 2.0f}, {2}));
  Adam first(named(p), {.lr = 0.01}), second(named(q), {.lr = 0.01});
  for (int t = 0; t < 3; ++t) {
    p.grad.fill(0.3 * (t + 1));
    first.step();
  }
  std::vector<std::pair<std::string, Tensor>> saved;
  for (auto& [name, tensor] : first.state()) saved.emplace_back(name, tensor.clone());
  q.value.copy_from(p.value);
  second.load_state(saved, first.steps());
  p.grad.fill(0.7);
  q.grad.fill(0.7);
  first.step();
  second.step();
  CHECK(bitwise_equal(p.value, q.value));
  saved.pop_back();
  CHECK_THROWS_WITH_AS(second.load_state(saved, 1), "Adam: optimizer state must contain 'exp_avg_sq.w', got none",
                       ValueError);
}

TEST_CASE("clip_grad_norm scales gradients to the maximum norm and returns the norm before clipping") {
  Parameter a("a", Tensor::from({3.0f}, {1})), b("b", Tensor::from({0.0f}, {1}));
  a.grad.set_item(0, 3.0);
  b.grad.set_item(0, 4.0);
  CHECK(clip_grad_norm({&a, &b}, 1.0) == doctest::Approx(5.0));
  CHECK(a.grad.item(0) == doctest::Approx(0.6).epsilon(1e-5));
  CHECK(b.grad.item(0) == doctest::Approx(0.8).epsilon(1e-5));
  CHECK(clip_grad_norm({&a, &b}, 10.0) == doctest::Approx(1.0).epsilon(1e-5));  // under the limit: unchanged
}

TEST_CASE("learning-rate schedules: warm-up, step decay and cosine annealing") {
  LrSchedule warm{.kind = LrSchedule::Kind::constant, .base_lr = 1.0, .warmup_steps = 4};
  CHECK(warm.at(0) == doctest::Approx(0.25));
  CHECK(warm.at(3) == doctest::Approx(1.0));
  CHECK(warm.at(100) == doctest::Approx(1.0));
  LrSchedule step{.kind = LrSchedule::Kind::step, .base_lr = 1.0, .step_size = 10, .gamma = 0.5};
  CHECK(step.at(9) == doctest::Approx(1.0));
  CHECK(step.at(10) == doctest::Approx(0.5));
  CHECK(step.at(25) == doctest::Approx(0.25));
  LrSchedule cosine{.kind = LrSchedule::Kind::cosine, .base_lr = 1.0, .total_steps = 100, .min_lr = 0.1};
  CHECK(cosine.at(0) == doctest::Approx(1.0));
  CHECK(cosine.at(50) == doctest::Approx(0.55));
  CHECK(cosine.at(100) == doctest::Approx(0.1));
}

TEST_CASE("Adam: zero_grad marks gradients stale, and a stale gradient steps as zeros") {
  // Two identical parameters: one zeroed by hand, one marked stale by zero_grad over a garbage buffer.
  Parameter zeroed("w", Tensor::from({1.0f, -2.0f}, {2})), stale("w", Tensor::from({1.0f, -2.0f}, {2}));
  Adam by_hand(named(zeroed), {.lr = 0.1}), lazily(named(stale), {.lr = 0.1});
  for (Parameter* p : {&zeroed, &stale}) {
    p->grad.set_item(0, 0.5);
    p->grad.set_item(1, -1.0);
  }
  by_hand.step();
  lazily.step();
  zeroed.grad.fill(0.0);
  stale.grad.fill(123.0);
  lazily.zero_grad();
  CHECK(stale.grad_stale);
  by_hand.step();  // momentum alone moves the weights on a zero gradient
  lazily.step();
  for (int k = 0; k < 2; ++k) CHECK(stale.value.item(k) == zeroed.value.item(k));
  CHECK(stale.value.item(0) != 1.0);
  CHECK(!stale.grad_stale);
  CHECK(stale.grad.item(0) == 0.0);
}
