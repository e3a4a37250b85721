// M2 (models/m2.h): both bounds against brute force on a tiny float64 model, the loss without unlabelled
// images, parameter gradients against central differences, and the class-balanced label selection.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <set>

#include "autograd/shape.h"
#include "models/m2.h"
#include "ops/parallel.h"

using namespace tapegrad;

namespace {

M2Config tiny_config() {
  M2Config c;
  c.height = 2;
  c.width = 3;  // D = 6
  c.classes = 3;
  c.hidden = 5;
  c.hidden_layers = 1;
  c.latent = 2;
  c.dtype = DType::f64;
  return c;
}

Tensor pixels(int64_t B, int64_t D, uint64_t seed) {
  Tensor x = Tensor::empty({B, D}, DType::f64);
  Generator gen(seed);
  gen.normal(x);
  for (int64_t i = 0; i < x.numel(); ++i) x.set_item(i, 1.0 / (1.0 + std::exp(-x.item(i))));  // grey levels in (0, 1)
  return x;
}

Tensor row(const Tensor& t, int64_t r) {
  const int64_t C = t.dim(1);
  Tensor out = Tensor::empty({1, C}, t.dtype());
  for (int64_t j = 0; j < C; ++j) out.set_item(j, t.item(r * C + j));
  return out;
}

// -L(x, y) for one image and one class, each term written out in double from the networks' outputs.
double brute_neg_elbo(M2& model, const Tensor& x, int64_t k, const Tensor& eps) {
  Tape tape;
  const int64_t K = model.config().classes, Z = model.config().latent, D = x.dim(1);
  Tensor y = Tensor::zeros({1, K}, DType::f64);
  y.set_item(k, 1.0);
  const M2::Posterior q = model.encode(tape.constant(x), tape.constant(y));
  Tensor z = Tensor::empty({1, Z}, DType::f64);
  double kl = 0;
  for (int64_t j = 0; j < Z; ++j) {
    const double mu = q.mu.value().item(j), lv = q.log_var.value().item(j);
    z.set_item(j, mu + std::exp(lv / 2) * eps.item(j));
    kl += 0.5 * (mu * mu + std::exp(lv) - 1 - lv);
  }
  const Tensor logits = model.decode(tape.constant(z), tape.constant(y)).value();
  double log_px = 0;
  for (int64_t d = 0; d < D; ++d) {
    const double l = logits.item(d), p = 1 / (1 + std::exp(-l));
    log_px += x.item(d) * std::log(p) + (1 - x.item(d)) * std::log(1 - p);
  }
  return -log_px + kl - std::log(1.0 / static_cast<double>(K));
}

std::vector<double> softmax_row(M2& model, const Tensor& x) {
  Tape tape;
  const Tensor logits = model.classify(tape.constant(x)).value();
  std::vector<double> p(static_cast<size_t>(logits.numel()));
  double total = 0;
  for (size_t k = 0; k < p.size(); ++k) total += p[k] = std::exp(logits.item(static_cast<int64_t>(k)));
  for (double& v : p) v /= total;
  return p;
}

// Every parameter's gradient of the whole loss (both bounds and the classification term) against central
// differences, three random entries per parameter.
void check_loss_gradients(const M2Config& config) {
  Generator init(7);
  M2 model(config, init);
  const int64_t D = config.pixels();
  const Tensor x_l = pixels(2, D, 1), x_u = pixels(3, D, 2);
  const std::vector<int32_t> labels{1, 2};
  const M2::LossWeights w{.labelled = 0.4, .unlabelled = 0.6, .classification = 1.3};
  auto loss = [&](bool backward) {
    Tape tape;
    Generator gen(99);  // the same noise at every evaluation
    const M2::Terms t = model.loss(tape.constant(x_l), labels, tape.constant(x_u), gen, w);
    if (backward) tape.backward(t.loss);
    return t.loss.item();
  };
  for (Parameter* p : model.parameters()) p->grad = Tensor::zeros(p->value.shape(), DType::f64);
  loss(true);
  Generator pick(5);
  int checked = 0;
  for (auto& [name, p] : model.named_parameters()) {
    for (int trial = 0; trial < 3; ++trial) {
      const int64_t i = static_cast<int64_t>(pick.next_u64() % static_cast<uint64_t>(p->value.numel()));
      const double v = p->value.item(i), h = 1e-6;
      p->value.set_item(i, v + h);
      const double up = loss(false);
      p->value.set_item(i, v - h);
      const double down = loss(false);
      p->value.set_item(i, v);
      const double numeric = (up - down) / (2 * h), analytic = p->grad.item(i);
      INFO(name, "[", i, "]: analytic ", analytic, ", numeric ", numeric);
      CHECK(std::abs(analytic - numeric) <= 1e-6 * std::abs(numeric) + 1e-7);
      ++checked;
    }
  }
  CHECK(checked >= 30);
}

}  // namespace

TEST_CASE("M2: labelled and unlabelled bounds equal brute-force sums over classes (float64 tiny model)") {
  Generator init(11);
  M2 model(tiny_config(), init);
  const int64_t B = 3, K = 3, D = 6;
  const Tensor x = pixels(B, D, 5);
  Generator noise(21);
  const Tensor eps = m2_noise(model, K * B, noise);  // row k * B + b: class k of image b
  Tape tape;
  const Tensor neg_u = model.neg_unlabelled_bound(tape.constant(x), eps).value();
  Var xs = tape.constant(x);
  const Tensor every_class = model.neg_elbo_every_class(xs, model.x_features(xs), eps).value();  // (B, K)
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<double> q = softmax_row(model, row(x, b));
    double expected = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double neg_l = brute_neg_elbo(model, row(x, b), k, row(eps, k * B + b));
      CHECK(every_class.item(b * K + k) == doctest::Approx(neg_l).epsilon(1e-12));
      expected += q[k] * neg_l + q[k] * std::log(q[k]);  // sum_y q (-L) - H(q)
      // The labelled bound of the same pair, through the batched path.
      Tape t;
      Tensor y = Tensor::zeros({1, K}, DType::f64);
      y.set_item(k, 1.0);
      Var xv = t.constant(row(x, b));
      CHECK(model.neg_elbo(xv, model.x_features(xv), t.constant(y), row(eps, k * B + b)).item() ==
            doctest::Approx(neg_l).epsilon(1e-12));
    }
    CHECK(neg_u.item(b) == doctest::Approx(expected).epsilon(1e-12));
  }
}

TEST_CASE("M2: with no unlabelled images the loss is the labelled bound plus the weighted classification loss") {
  Generator init(3);
  M2 model(tiny_config(), init);
  const Tensor x = pixels(4, 6, 8);
  const std::vector<int32_t> labels{0, 2, 1, 2};
  const M2::LossWeights w{.labelled = 1, .unlabelled = 1, .classification = 0.7};
  Tape tape;
  Generator g1(4), g2(4);
  const M2::Terms terms =
      model.loss(tape.constant(x), labels, tape.constant(Tensor::zeros({0, 6}, DType::f64)), g1, w);
  std::vector<int64_t> y64(labels.begin(), labels.end());
  Var xv = tape.constant(x);
  const Tensor neg_l = model.neg_elbo(xv, model.x_features(xv), one_hot(tape, y64, 3, DType::f64),
                                      m2_noise(model, 4, g2)).value();
  double expected = 0;
  for (int64_t b = 0; b < 4; ++b) {
    const std::vector<double> q = softmax_row(model, row(x, b));
    expected += (neg_l.item(b) - 0.7 * std::log(q[labels[b]])) / 4;
  }
  CHECK(terms.loss.item() == doctest::Approx(expected).epsilon(1e-12));
  // With no labelled images either side can still be evaluated alone: the unlabelled one.
  Generator g3(4);
  const M2::Terms only_u = model.loss(tape.constant(Tensor::zeros({0, 6}, DType::f64)), {}, xv, g3, w);
  Generator g4(4);
  const Tensor neg_u = model.neg_unlabelled_bound(xv, m2_noise(model, 3 * 4, g4)).value();
  double expected_u = 0;
  for (int64_t b = 0; b < 4; ++b) expected_u += neg_u.item(b) / 4;
  CHECK(only_u.loss.item() == doctest::Approx(expected_u).epsilon(1e-12));
}

// The loss runs the labelled and the unlabelled rows through the decoder in one pass (Note [one pass over both
// batches]); each image must still meet its own rows: the value equals the two bounds computed apart, with the
// noise drawn in the same order (labelled rows, then unlabelled ones).
TEST_CASE("M2: the loss on both batches equals the labelled and unlabelled bounds computed apart") {
  Generator init(13);
  M2 model(tiny_config(), init);
  const int64_t K = 3, D = 6;
  const Tensor x_l = pixels(2, D, 31), x_u = pixels(5, D, 32);
  const std::vector<int32_t> labels{2, 0};
  const M2::LossWeights w{.labelled = 0.3, .unlabelled = 0.7, .classification = 1.9};
  Tape tape;
  Generator joint(17), apart(17);
  const M2::Terms terms = model.loss(tape.constant(x_l), labels, tape.constant(x_u), joint, w);
  Var xl = tape.constant(x_l), xu = tape.constant(x_u);
  const Var y_l = one_hot(tape, std::vector<int64_t>{2, 0}, K, DType::f64);
  const Tensor neg_l = model.neg_elbo(xl, model.x_features(xl), y_l, m2_noise(model, 2, apart)).value();
  const Tensor neg_u = model.neg_unlabelled_bound(xu, m2_noise(model, K * 5, apart)).value();
  double expected = 0;
  for (int64_t b = 0; b < 2; ++b) {
    CHECK(terms.labelled.value().item(b) == doctest::Approx(neg_l.item(b)).epsilon(1e-12));
    const std::vector<double> q = softmax_row(model, row(x_l, b));
    expected += (w.labelled * neg_l.item(b) - w.classification * std::log(q[labels[b]])) / 2;
  }
  for (int64_t b = 0; b < 5; ++b) {
    CHECK(terms.unlabelled.value().item(b) == doctest::Approx(neg_u.item(b)).epsilon(1e-12));
    expected += w.unlabelled * neg_u.item(b) / 5;
  }
  CHECK(terms.loss.item() == doctest::Approx(expected).epsilon(1e-12));
}

TEST_CASE("M2: the loss refuses a step with no images at all; decode refuses rows that do not pair up") {
  Generator init(3);
  M2 model(tiny_config(), init);
  Tape tape;
  Generator gen(1);
  const Var empty = tape.constant(Tensor::zeros({0, 6}, DType::f64));
  CHECK_THROWS_WITH_AS(model.loss(empty, {}, empty, gen, {}), doctest::Contains("M2::loss: needs at least one image"),
                       ValueError);
  const Var z = tape.constant(Tensor::zeros({2, tiny_config().latent}, DType::f64));
  CHECK_THROWS_WITH_AS(model.decode(z, tape.constant(Tensor::zeros({3, 3}, DType::f64))),
                       doctest::Contains("M2::decode: z and y must be (rows, Z) and (rows, K)"), ShapeError);
  const Var y3 = tape.constant(Tensor::zeros({1, 2, 3}, DType::f64));
  CHECK_THROWS_AS(model.decode(reshape(z, {1, 2, tiny_config().latent}), y3), ShapeError);
}

TEST_CASE("M2: parameter gradients of the full loss match central differences (float64)") {
  check_loss_gradients(tiny_config());
}

// An architecture option of M2Config set to "conv": gradients by central differences, the option's round trip
// through checkpoint metadata, "mlp" for checkpoints written before the option, bad values refused.
void check_conv_option(std::string M2Config::*option, const std::string& key) {
  M2Config c = tiny_config();
  c.height = c.width = 4;  // two stride-2 (transposed) convolutions need multiples of 4
  c.*option = "conv";
  check_loss_gradients(c);
  Generator init(1);
  const M2 model(c, init);
  CHECK(M2Config::from_metadata(model.config().to_metadata(), "m.safetensors").*option == "conv");
  Metadata old_checkpoint = model.config().to_metadata();
  old_checkpoint.erase(key);
  CHECK(M2Config::from_metadata(old_checkpoint, "m.safetensors").*option == "mlp");
  old_checkpoint[key] = "resnet";
  const std::string refused = "metadata '" + key + "', expected mlp or conv, found 'resnet'";
  CHECK_THROWS_WITH_AS(M2Config::from_metadata(old_checkpoint, "m.safetensors"), doctest::Contains(refused.c_str()),
                       FileError);
  c.width = 6;
  CHECK_THROWS_WITH_AS(M2(c, init), doctest::Contains("multiples of 4"), ValueError);
  c.width = 4;
  c.*option = "rnn";
  CHECK_THROWS_WITH_AS(M2(c, init), doctest::Contains((key + " must be mlp or conv").c_str()), ValueError);
}

TEST_CASE("M2: with the conv classifier, gradients match central differences; bad settings are refused") {
  check_conv_option(&M2Config::classifier, "classifier");
}

TEST_CASE("M2: with the conv decoder, gradients match central differences; bad settings are refused") {
  check_conv_option(&M2Config::decoder, "decoder");
}

TEST_CASE("M2: labelled_split is class-balanced, disjoint and reproducible from the seed; subset keeps labels") {
  Dataset d;
  d.rows = d.cols = 2;
  for (int i = 0; i < 300; ++i) {
    d.labels.push_back((i * 7) % 10);
    for (int p = 0; p < 4; ++p) d.images.push_back(static_cast<uint8_t>(i + p));
  }
  auto [l1, u1] = labelled_split(d, 10, 42);
  auto [l2, u2] = labelled_split(d, 10, 42);
  auto [l3, u3] = labelled_split(d, 10, 43);
  CHECK(l1 == l2);
  CHECK(u1 == u2);
  CHECK(l1 != l3);
  CHECK(l1.size() == 100);
  CHECK(u1.size() == 200);
  std::set<int64_t> all(l1.begin(), l1.end());
  all.insert(u1.begin(), u1.end());
  CHECK(all.size() == 300);
  const Dataset labelled = subset(d, l1);
  for (int64_t c : labelled.class_counts()) CHECK(c == 10);
  CHECK(labelled.image(3)[0] == d.image(l1[3])[0]);
  CHECK_THROWS_AS(labelled_split(d, 31, 1), ValueError);
}

TEST_CASE("M2: the loss and every parameter gradient have the same bits on 1 and 2 threads (float32, 28x28)") {
  // 100 unlabelled images x 500 hidden units: the threads split such activations into pieces whose lengths are not
  // multiples of the SIMD width, so elements fall in the kernels' tails (Note [no fp contraction] in meson.build).
  M2Config c;
  c.hidden = 500;
  c.latent = 2;
  Generator init(3);
  M2 model(c, init);
  Tensor x_l = pixels(50, c.pixels(), 1).to(DType::f32), x_u = pixels(100, c.pixels(), 2).to(DType::f32);
  std::vector<int32_t> labels(50);
  for (int i = 0; i < 50; ++i) labels[static_cast<size_t>(i)] = i % 10;
  auto run = [&](int threads) {
    set_num_threads(threads);
    for (Parameter* p : model.parameters()) p->grad = Tensor::zeros(p->value.shape(), DType::f32);
    Tape tape;
    Generator gen(11);
    const M2::Terms t = model.loss(tape.constant(x_l), labels, tape.constant(x_u), gen, {});
    tape.backward(t.loss);
    std::vector<Tensor> grads{t.loss.value().clone()};
    for (Parameter* p : model.parameters()) grads.push_back(p->grad.clone());
    return grads;
  };
  const std::vector<Tensor> one = run(1), two = run(2);
  set_num_threads(0);
  const auto named = model.named_parameters();
  for (size_t i = 0; i < one.size(); ++i) {
    const std::string what = i == 0 ? std::string("loss") : named[i - 1].first;
    INFO(what);
    CHECK(std::memcmp(one[i].data<float>(), two[i].data<float>(), one[i].numel() * sizeof(float)) == 0);
  }
}
