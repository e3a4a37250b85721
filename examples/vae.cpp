// vae: train, evaluate and look at a variational autoencoder (models/vae.h) on MNIST-style digits.
//
//   vae train [--epochs 10 --arch mlp|conv --latent 20 ...]   trains, logs, checkpoints, writes pictures
//   vae eval                                                 test ELBO, IWAE bound, active units
//   vae sample | reconstruct | interpolate                   pictures from a checkpoint
//
// Everything lands in --out (default runs/vae): log.csv, checkpoint.safetensors, *.png.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <sys/resource.h>

#include "autograd/activation.h"
#include "examples/common/cli.h"
#include "examples/common/decode.h"
#include "examples/common/image.h"
#include "examples/common/progress.h"
#include "examples/common/run.h"
#include "models/checkpoint.h"
#include "models/vae.h"

using namespace tapegrad;

namespace {

constexpr int64_t kEvalBatch = 500;  // fixed, so that `eval` reproduces the logged test ELBO to the bit

cli::CommandLine make_cli() {
  cli::CommandLine cli("vae", "A variational autoencoder (Kingma & Welling 2013) on MNIST-style 28x28 images.");
  cli.add_subcommand("train", "train (or --resume), logging each epoch and writing pictures at the end");
  cli.add_subcommand("eval", "evaluate a checkpoint: test ELBO, importance-weighted bound, active units");
  cli.add_subcommand("sample", "decode random latent codes into a grid of images");
  cli.add_subcommand("reconstruct", "test images beside their reconstructions");
  cli.add_subcommand("interpolate", "decode a straight line between the codes of two test images");
  run::add_common_flags(cli, "runs/vae", 10, 128, 1e-3);
  cli.add_string("arch", "mlp", "encoder/decoder: mlp (784-400-Z) or conv (strided convolutions)", {"mlp", "conv"});
  cli.add_int("latent", 20, "latent dimensions Z", 1, 4096);
  cli.add_int("hidden", 400, "hidden units", 1, 1 << 16);
  cli.add_double("beta", 1.0, "weight of the KL term (beta-VAE)", 0, 1000);
  cli.add_int("kl-warmup", 0, "epochs over which the KL weight ramps up linearly from 0", 0, 100000);
  cli.add_int("iwae", 100, "importance samples k for the IWAE bound in eval (0: skip)", 0, 100000);
  cli.add_int("num", 64, "images to sample", 1, 10000);
  cli.add_int("from", 0, "interpolate: index of the first test image", 0, 1LL << 40);
  cli.add_int("to", 1, "interpolate: index of the second test image", 0, 1LL << 40);
  cli.add_string("checkpoint", "", "checkpoint to read (default: <out>/checkpoint.safetensors)");
  cli.add_flag("check-finite", "train: stop at the first op whose value or gradient is NaN or Inf, naming it (slower)");
  return cli;
}

// User + system CPU seconds of this process, all threads.
double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

using decode::decode_means;

// Posterior means E_q[z|x] of a set of images (B, D).
Tensor encode_means(Vae& model, const Tensor& images) {
  Tape tape;
  NoGradGuard no_grad(tape);
  return model.encode(tape.constant(images)).mu.value().clone();
}

Tensor first_test_images(const Dataset& test, int64_t count) {
  const Tensor all = test.to_tensor();
  const int64_t D = test.pixels();
  count = std::min(count, test.size());
  Tensor out = Tensor::empty({count, D});
  for (int64_t i = 0; i < count * D; ++i) out.data<float>()[i] = all.data<float>()[i];
  return out;
}

// Standard normal quantile by bisection on erfc: for the manifold grid of a 2-D latent space.
double normal_quantile(double p) {
  double lo = -8, hi = 8;
  for (int i = 0; i < 100; ++i) {
    const double mid = 0.5 * (lo + hi);
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

void write_samples(Vae& model, const std::string& path, int64_t count, uint64_t seed) {
  Generator gen(seed);
  Tensor z = Tensor::empty({count, model.config().latent});
  gen.normal(z);
  image::write_grid(path, decode_means(model, z), model.config().height, model.config().width, 8);
}

void write_reconstructions(Vae& model, const Dataset& test, const std::string& path) {
  const Tensor x = first_test_images(test, 32);
  const Tensor recon = decode_means(model, encode_means(model, x));
  const int64_t n = x.dim(0), D = x.dim(1);
  // Rows alternate: 8 inputs, then their 8 reconstructions.
  Tensor grid = Tensor::empty({2 * n, D});
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = i / 8, col = i % 8;
    for (int64_t d = 0; d < D; ++d) {
      grid.data<float>()[((2 * row) * 8 + col) * D + d] = x.data<float>()[i * D + d];
      grid.data<float>()[((2 * row + 1) * 8 + col) * D + d] = recon.data<float>()[i * D + d];
    }
  }
  image::write_grid(path, grid, test.rows, test.cols, 8);
}

void write_interpolation(Vae& model, const Dataset& test, int64_t from, int64_t to, const std::string& path) {
  if (from >= test.size() || to >= test.size())
    throw cli::UsageError(cat("--from and --to must be below the test set size ", test.size()));
  const Tensor all = test.to_tensor().reshaped({test.size(), test.pixels()});
  Tensor pair = Tensor::empty({2, test.pixels()});
  for (int64_t d = 0; d < test.pixels(); ++d) {
    pair.data<float>()[d] = all.data<float>()[from * test.pixels() + d];
    pair.data<float>()[test.pixels() + d] = all.data<float>()[to * test.pixels() + d];
  }
  const Tensor mu = encode_means(model, pair);
  const int64_t steps = 10, Z = mu.dim(1);
  Tensor codes = Tensor::empty({steps, Z});
  for (int64_t s = 0; s < steps; ++s)
    for (int64_t j = 0; j < Z; ++j) {
      const double t = static_cast<double>(s) / (steps - 1);
      codes.data<float>()[s * Z + j] = static_cast<float>((1 - t) * mu.item(j) + t * mu.item(Z + j));
    }
  image::write_grid(path, decode_means(model, codes), test.rows, test.cols, steps);
}

// For a 2-D latent space: test codes coloured by label, and the decoded grid over the prior's quantiles.
void write_latent_pictures(Vae& model, const Dataset& test, const std::string& out) {
  const Tensor mu = encode_means(model, test.to_tensor().reshaped({test.size(), test.pixels()}));
  std::vector<std::array<double, 2>> points;
  for (int64_t i = 0; i < test.size(); ++i) points.push_back({mu.item(2 * i), mu.item(2 * i + 1)});
  image::write_scatter(out + "/latent.png", points, test.labels, "test codes (posterior means) by digit");
  const int64_t n = 20;
  Tensor grid = Tensor::empty({n * n, 2});
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < n; ++c) {
      grid.data<float>()[(r * n + c) * 2] = static_cast<float>(normal_quantile((c + 0.5) / n));
      grid.data<float>()[(r * n + c) * 2 + 1] = static_cast<float>(normal_quantile(1 - (r + 0.5) / n));
    }
  image::write_grid(out + "/manifold.png", decode_means(model, grid), test.rows, test.cols, n);
}

void write_pictures(Vae& model, const MnistSplits& data, const std::string& out, uint64_t seed) {
  write_samples(model, out + "/samples.png", 64, seed);
  write_reconstructions(model, data.test, out + "/reconstructions.png");
  write_interpolation(model, data.test, 0, 1, out + "/interpolation.png");
  if (model.config().latent == 2) write_latent_pictures(model, data.test, out);
  std::fprintf(stderr, "pictures: %s/{samples,reconstructions,interpolation%s}.png\n", out.c_str(),
               model.config().latent == 2 ? ",latent,manifold" : "");
}

int train(const cli::CommandLine& cli) {
  const std::string out = cli.get_string("out"), ckpt = out + "/checkpoint.safetensors";
  VaeConfig config;
  config.arch = cli.get_string("arch");
  config.latent = cli.get_int("latent");
  config.hidden = cli.get_int("hidden");
  Metadata run_meta = {{"seed", std::to_string(cli.get_int("seed"))}, {"batch", std::to_string(cli.get_int("batch"))},
                       {"lr", run::exact(cli.get_double("lr"))}, {"lr_schedule", cli.get_string("lr-schedule")},
                       {"beta", run::exact(cli.get_double("beta"))},
                       {"kl_warmup", std::to_string(cli.get_int("kl-warmup"))},
                       {"binarize", cli.get_flag("binarize") ? "1" : "0"}, {"data", cli.get_string("data")}};
  const run::RunStart start = run::start_run(cli, ckpt, run_meta);
  run::note_ignored_flags(cli, start, config.to_metadata());
  if (start.resuming) config = VaeConfig::from_metadata(start.checkpoint_metadata, ckpt);
  const int64_t first_epoch = start.first_epoch;
  const MnistSplits data = run::load(run_meta["data"]);
  config.height = data.train.rows;
  config.width = data.train.cols;
  const uint64_t seed = std::stoull(run_meta["seed"]);
  const bool binarize = run_meta["binarize"] == "1";
  Generator init(seed);
  Vae model(config, init);
  Adam optimizer(model.named_parameters(), {.lr = std::stod(run_meta["lr"])});
  run::restore_or_start(start, ckpt, model, optimizer, config.to_metadata());
  DataLoader loader(data.train, {.batch_size = std::stoll(run_meta["batch"]), .shuffle = true, .seed = seed,
                                 .binarize = binarize});
  const VaeTrainOptions options{.beta = std::stod(run_meta["beta"]), .kl_warmup_epochs = std::stoll(run_meta["kl_warmup"]),
                                .seed = seed, .check_finite = cli.get_flag("check-finite")};
  const int64_t epochs = cli.get_int("epochs");
  progress::Progress progress(epochs, loader.batches_per_epoch(), std::stoll(run_meta["batch"]));
  for (int64_t epoch = first_epoch; epoch <= epochs; ++epoch) {
    optimizer.set_learning_rate(
        run::epoch_learning_rate(run_meta["lr_schedule"], std::stod(run_meta["lr"]), epoch, epochs));
    progress.start_epoch(epoch);
    // train_seconds times the training steps alone (seconds also includes the test evaluation): it is the
    // figure benchmarks/vae_race.py compares with PyTorch.
    // train_cpu_seconds (all threads, from getrusage) is the steadier figure when other programs share the cores.
    const auto train_start = std::chrono::steady_clock::now();
    const double cpu_start = cpu_seconds();
    const double train_loss = train_vae_epoch(model, optimizer, loader, options, epoch,
                                              [&](int64_t step, double loss) { progress.step(step, loss); });
    const double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - train_start).count();
    const double train_cpu_seconds = cpu_seconds() - cpu_start;
    const VaeEvaluation eval = evaluate_vae(model, data.test, kEvalBatch, seed, 0, binarize);
    progress.end_epoch(cat("test ELBO ", eval.elbo, " (rec ", eval.reconstruction, ", KL ", eval.kl, ")"));
    run::append_csv(out + "/log.csv",
                    {"epoch", "train_loss", "test_elbo", "test_reconstruction", "test_kl", "active_units", "seconds",
                     "train_seconds", "train_cpu_seconds"},
                    {std::to_string(epoch), run::exact(train_loss), run::exact(eval.elbo), run::exact(eval.reconstruction),
                     run::exact(eval.kl), std::to_string(eval.active_units), run::exact(progress.epoch_seconds()),
                     run::exact(train_seconds), run::exact(train_cpu_seconds)});
    Metadata meta = config.to_metadata();
    meta.insert(run_meta.begin(), run_meta.end());
    meta["epoch"] = std::to_string(epoch);
    meta["test_elbo"] = run::exact(eval.elbo);
    save_checkpoint(ckpt, model, &optimizer, meta);
  }
  write_pictures(model, data, out, seed);
  std::fprintf(stderr, "log: %s/log.csv  checkpoint: %s\n", out.c_str(), ckpt.c_str());
  return 0;
}

// Loads a checkpoint into a model built from its own metadata.
struct Loaded {
  std::unique_ptr<Vae> model;
  Metadata metadata;
};
Loaded load_model(const cli::CommandLine& cli) {
  const std::string path = run::checkpoint_path(cli);
  const Checkpoint saved = load_safetensors(path);
  VaeConfig config = VaeConfig::from_metadata(saved.metadata, path);
  Generator unused(0);
  Loaded loaded{std::make_unique<Vae>(config, unused), {}};
  loaded.metadata = load_checkpoint(path, *loaded.model, nullptr, config.to_metadata());
  return loaded;
}

void check_image_size(const Loaded& loaded, const cli::CommandLine& cli, const Dataset& data) {
  const VaeConfig& config = loaded.model->config();
  run::check_model_fits_data(run::checkpoint_path(cli), config.height, config.width, data);
}

int evaluate(const cli::CommandLine& cli) {
  Loaded loaded = load_model(cli);
  const MnistSplits data = run::load(run::data_of_run(cli, loaded.metadata));  // Note [data of a run]
  check_image_size(loaded, cli, data.test);
  const uint64_t seed = std::stoull(loaded.metadata.count("seed") ? loaded.metadata.at("seed") : "1");
  const bool binarize = loaded.metadata.count("binarize") && loaded.metadata.at("binarize") == "1";
  const VaeEvaluation eval = evaluate_vae(*loaded.model, data.test, kEvalBatch, seed, 0, binarize);
  std::printf("test_elbo %s\ntest_reconstruction %s\ntest_kl %s\nactive_units %lld of %lld\n", run::exact(eval.elbo).c_str(),
              run::exact(eval.reconstruction).c_str(), run::exact(eval.kl).c_str(),
              static_cast<long long>(eval.active_units), static_cast<long long>(loaded.model->config().latent));
  const int64_t k = cli.get_int("iwae");
  if (k > 0) {
    const VaeEvaluation iw = evaluate_vae(*loaded.model, data.test, kEvalBatch, seed, k, binarize);
    std::printf("test_iwae_k%lld %s  (log p(x) >= this, nats)\n", static_cast<long long>(k), run::exact(iw.iwae).c_str());
  }
  return 0;
}

int pictures(const cli::CommandLine& cli) {
  Loaded loaded = load_model(cli);
  const MnistSplits data = run::load(run::data_of_run(cli, loaded.metadata));  // Note [data of a run]
  check_image_size(loaded, cli, data.test);
  const std::string out = cli.get_string("out"), what = cli.subcommand();
  if (what == "sample") write_samples(*loaded.model, out + "/samples.png", cli.get_int("num"), cli.get_int("seed"));
  if (what == "reconstruct") write_reconstructions(*loaded.model, data.test, out + "/reconstructions.png");
  if (what == "interpolate")
    write_interpolation(*loaded.model, data.test, cli.get_int("from"), cli.get_int("to"), out + "/interpolation.png");
  std::fprintf(stderr, "wrote %s/%s.png\n", out.c_str(),
               what == "sample" ? "samples" : what == "reconstruct" ? "reconstructions" : "interpolation");
  return 0;
}

int vae_main(int argc, char** argv) {
  cli::CommandLine cli = make_cli();
  if (!cli.parse(argc, argv)) return 0;
  run::prepare(cli);
  if (cli.subcommand() == "train") return train(cli);
  if (cli.subcommand() == "eval") return evaluate(cli);
  return pictures(cli);
}

}  // namespace

int main(int argc, char** argv) { return cli::run_main("vae", vae_main, argc, argv); }
