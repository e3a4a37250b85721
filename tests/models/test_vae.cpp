// The VAE on tiny slices of the bundled digits: training lowers the loss, evaluation is exactly reproducible
// through a checkpoint, resuming is bit-identical, and the IWAE bound behaves as the theory says.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>

#include "models/checkpoint.h"
#include "models/vae.h"

using namespace tapegrad;

namespace {
// The first n images of a split, as its own dataset (keeps the tests fast).
Dataset head(const Dataset& data, int64_t n) {
  Dataset out = data;
  out.images.resize(static_cast<size_t>(n * data.pixels()));
  out.labels.resize(static_cast<size_t>(n));
  return out;
}
const MnistSplits& digits() {
  static const MnistSplits data = load_data("digits");
  return data;
}
VaeConfig small_config() {
  VaeConfig c;
  c.hidden = 64;
  c.latent = 8;
  return c;
}
std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("tapegrad-test-" + name)).string();
}
}  // namespace

TEST_CASE("vae: a few epochs on 1,000 digits lower the training loss and the test negative ELBO clearly") {
  const Dataset train = head(digits().train, 1000), test = head(digits().test, 200);
  Generator init(1);
  Vae model(small_config(), init);
  Adam adam(model.named_parameters(), {.lr = 3e-3});
  DataLoader loader(train, {.batch_size = 50, .seed = 1});
  const double before = -evaluate_vae(model, test, 100, 1, 0, false).elbo;
  double first = 0, last = 0;
  for (int64_t epoch = 1; epoch <= 4; ++epoch) {
    const double loss = train_vae_epoch(model, adam, loader, {.seed = 1}, epoch);
    (epoch == 1 ? first : last) = loss;
  }
  const double after = -evaluate_vae(model, test, 100, 1, 0, false).elbo;
  CHECK(last < first - 40);   // ~545 nats at initialisation, ~200 after four short epochs
  CHECK(after < before - 150);
}

TEST_CASE("vae: evaluation through a saved checkpoint reproduces the test ELBO exactly") {
  const Dataset train = head(digits().train, 300), test = head(digits().test, 100);
  Generator init(2);
  Vae model(small_config(), init);
  Adam adam(model.named_parameters(), {.lr = 1e-3});
  DataLoader loader(train, {.batch_size = 50, .seed = 2});
  train_vae_epoch(model, adam, loader, {.seed = 2}, 1);
  const VaeEvaluation logged = evaluate_vae(model, test, 50, 2, 0, false);
  const std::string path = temp_path("vae-eval.safetensors");
  save_checkpoint(path, model, &adam, small_config().to_metadata());
  Generator other(99);  // different initial weights: everything must come from the file
  Vae restored(small_config(), other);
  load_checkpoint(path, restored, nullptr, small_config().to_metadata());
  const VaeEvaluation again = evaluate_vae(restored, test, 50, 2, 0, false);
  CHECK(again.elbo == logged.elbo);  // bit for bit, not approximately
  CHECK(again.kl == logged.kl);
  // A checkpoint of another configuration is refused with a clear message.
  VaeConfig wider = small_config();
  wider.hidden = 32;
  Vae other_model(wider, other);
  CHECK_THROWS_WITH_AS(load_checkpoint(path, other_model, nullptr, wider.to_metadata()), doctest::Contains("hidden"),
                       FileError);
  std::filesystem::remove(path);
}

TEST_CASE("vae: 2 epochs, or 1 epoch then resume from a checkpoint for 1 more, give bit-identical parameters") {
  const Dataset train = head(digits().train, 400);
  auto run = [&](bool interrupt) {
    Generator init(3);
    auto model = std::make_unique<Vae>(small_config(), init);
    auto adam = std::make_unique<Adam>(model->named_parameters(), AdamOptions{.lr = 1e-3});
    DataLoader loader(train, {.batch_size = 64, .seed = 3, .binarize = true});
    train_vae_epoch(*model, *adam, loader, {.kl_warmup_epochs = 2, .seed = 3}, 1);
    if (interrupt) {  // a new process would start here: fresh model and optimizer, state from the file only
      const std::string path = temp_path("vae-resume.safetensors");
      save_checkpoint(path, *model, adam.get(), small_config().to_metadata());
      Generator other(77);
      model = std::make_unique<Vae>(small_config(), other);
      adam = std::make_unique<Adam>(model->named_parameters(), AdamOptions{.lr = 1e-3});
      load_checkpoint(path, *model, adam.get(), small_config().to_metadata());
      std::filesystem::remove(path);
    }
    train_vae_epoch(*model, *adam, loader, {.kl_warmup_epochs = 2, .seed = 3}, 2);
    std::vector<Tensor> params;
    for (Parameter* p : model->parameters()) params.push_back(p->value.clone());
    return params;
  };
  const auto straight = run(false), resumed = run(true);
  REQUIRE(straight.size() == resumed.size());
  for (size_t i = 0; i < straight.size(); ++i) CHECK(bitwise_equal(straight[i], resumed[i]));
}

TEST_CASE("vae: the IWAE bound with k = 1 is the Monte-Carlo ELBO, and it grows with k") {
  const Dataset train = head(digits().train, 300), test = head(digits().test, 500);
  Generator init(4);
  Vae model(small_config(), init);
  Adam adam(model.named_parameters(), {.lr = 3e-3});
  DataLoader loader(train, {.batch_size = 50, .seed = 4});
  for (int64_t epoch = 1; epoch <= 2; ++epoch) train_vae_epoch(model, adam, loader, {.seed = 4}, epoch);
  // log w = log p(x|z) + log p(z) - log q(z|x) for z ~ q: its mean is the ELBO (the KL estimated by sampling).
  Tape tape;
  Var x = tape.constant(test.to_tensor().reshaped({test.size(), test.pixels()}));
  Generator a(11), b(11);
  CHECK(model.log_weights(x, a, 1) == model.log_weights(x, b, 1));  // same generator state, same samples
  Generator c(12);
  const auto many = model.log_weights(x, c, 100);
  double mc_elbo = 0;
  for (const auto& row : many)
    for (double w : row) mc_elbo += w / (100.0 * test.size());
  // The evaluation's ELBO uses one z per image and the analytic KL; averaged over seeds it is the same quantity.
  double analytic = 0;
  for (uint64_t seed = 1; seed <= 10; ++seed) analytic += evaluate_vae(model, test, 100, seed, 0, false).elbo / 10;
  CHECK(mc_elbo == doctest::Approx(analytic).epsilon(0.005));
  const double iwae1 = evaluate_vae(model, test, 100, 6, 1, false).iwae;
  const double iwae10 = evaluate_vae(model, test, 100, 6, 10, false).iwae;
  const double iwae50 = evaluate_vae(model, test, 100, 6, 50, false).iwae;
  CHECK(iwae1 == doctest::Approx(mc_elbo).epsilon(0.01));
  CHECK(iwae10 > iwae1 + 1.0);  // Burda et al. 2016, theorem 1: the bound tightens with k
  CHECK(iwae50 > iwae10);
}

TEST_CASE("vae: the conv architecture trains too, and bad configurations are refused") {
  const Dataset train = head(digits().train, 200);
  VaeConfig conv = small_config();
  conv.arch = "conv";
  Generator init(5);
  Vae model(conv, init);
  Adam adam(model.named_parameters(), {.lr = 1e-3});
  DataLoader loader(train, {.batch_size = 50, .seed = 5});
  const double first = train_vae_epoch(model, adam, loader, {.seed = 5}, 1);
  const double second = train_vae_epoch(model, adam, loader, {.seed = 5}, 2);
  CHECK(second < first);
  VaeConfig odd = conv;
  odd.height = 30;
  CHECK_THROWS_AS(Vae(odd, init), ValueError);
  VaeConfig unknown = small_config();
  unknown.arch = "rnn";
  CHECK_THROWS_WITH_AS(Vae(unknown, init), "Vae: arch must be mlp or conv, got 'rnn'", ValueError);
}
