// m2: the semi-supervised VAE M2 (models/m2.h) with few labels on MNIST-style images, beside its baseline.
//
//   m2 train [--labels 100 --alpha A --epochs 50 ...]   trains, logs, checkpoints, writes pictures
//   m2 train --supervised-only                         the same classifier on the labelled images alone
//   m2 eval                                            test accuracy of q(y|x) of a checkpoint
//   m2 sample                                          style/content analogies and class-conditional samples
//
// Data: a class-balanced validation split (--validation images, the same for every seed) is held out of the
// training set for model selection; --labels images of the rest, class-balanced and drawn with --seed, keep
// their labels; all the others are unlabelled. Everything lands in --out (default runs/m2): log.csv,
// checkpoint.safetensors (last epoch, for --resume), best.safetensors (best validation accuracy), *.png.
#include <cstdio>

#include "autograd/activation.h"
#include "autograd/shape.h"
#include "examples/common/cli.h"
#include "examples/common/image.h"
#include "examples/common/progress.h"
#include "examples/common/run.h"
#include "models/checkpoint.h"
#include "models/m2.h"

using namespace tapegrad;

namespace {

constexpr uint64_t kValidationSeed = 0x7a11da7e;  // fixed: every run is selected on the same images

cli::CommandLine make_cli() {
  cli::CommandLine cli("m2", "Semi-supervised VAE M2 (Kingma et al. 2014) on MNIST-style 28x28 images.");
  cli.add_subcommand("train", "train (or --resume), logging validation and test accuracy each epoch");
  cli.add_subcommand("eval", "test accuracy of the classifier q(y|x) of a checkpoint (default <out>/best.safetensors)");
  cli.add_subcommand("sample", "pictures: test-image styles decoded as every class; class-conditional samples");
  run::add_common_flags(cli, "runs/m2", 50, 100, 3e-4);
  cli.add_int("labels", 100, "labelled training images, class-balanced (a multiple of the number of classes)", 1,
              1 << 30);
  cli.add_int("labelled-batch", 50, "labelled images per step, beside --batch unlabelled ones", 1, 1 << 20);
  cli.add_double("alpha", 0, "classification weight in the paper's units (J + alpha E[-log q]); 0: 0.1 N with N "
                 "the number of training images, labelled + unlabelled", 0, 1e12);
  cli.add_string("elbo-weights", "batch", "weights of the labelled and unlabelled bounds: batch (every image of a "
                 "batch alike, labelled ones over-sampled: B_l / B, B_u / B) or data (the paper's unbiased N_l / N, "
                 "N_u / N); Note [M2 loss normalisation]", {"batch", "data"});
  cli.add_int("unlabelled", 0, "use only this many unlabelled images, evenly spaced through the pool (0: all); "
              "for runs that must fit a compute budget", 0, 1 << 30);
  cli.add_int("validation", 1000, "images held out of the training set for model selection", 10, 1 << 30);
  cli.add_flag("supervised-only", "baseline: train only the classifier, on the labelled images");
  cli.add_int("latent", 50, "latent dimensions Z", 1, 4096);
  cli.add_int("hidden", 500, "hidden units per layer", 1, 1 << 16);
  cli.add_int("hidden-layers", 1, "hidden layers per network", 1, 16);
  cli.add_string("activation", "softplus", "hidden activation", {"softplus", "relu", "elu", "tanh", "leaky_relu"});
  cli.add_string("classifier", "mlp", "q(y|x)'s network: mlp (dense layers) or conv (two strided convolutions, "
                 "32 and 64 channels, before the dense layers); the baseline uses the same", {"mlp", "conv"});
  cli.add_string("decoder", "mlp", "p(x|y, z)'s network: mlp (dense layers) or conv (a dense layer, then two "
                 "stride-2 transposed convolutions, 32 channels and 1)", {"mlp", "conv"});
  cli.add_string("checkpoint", "", "checkpoint to read (default: <out>/best.safetensors)");
  return cli;
}

struct Splits {
  Dataset validation, labelled_pool;  // labelled_pool: the training images left after validation
  std::vector<int64_t> labelled, unlabelled;  // indices into labelled_pool
};

Splits split(const Dataset& train, int64_t validation, int64_t labels, int64_t unlabelled, uint64_t seed) {
  const int64_t K = train.num_classes;
  if (validation % K || labels % K)
    throw cli::UsageError(cat("--validation and --labels must be multiples of the ", K, " classes, got ", validation,
                              " and ", labels));
  auto [val, rest] = labelled_split(train, validation / K, kValidationSeed);
  Splits s{subset(train, val), subset(train, rest), {}, {}};
  std::tie(s.labelled, s.unlabelled) = labelled_split(s.labelled_pool, labels / K, seed);
  const int64_t pool = static_cast<int64_t>(s.unlabelled.size());
  if (unlabelled > 0 && unlabelled < pool) {
    std::vector<int64_t> kept;
    for (int64_t i = 0; i < unlabelled; ++i) kept.push_back(s.unlabelled[i * pool / unlabelled]);
    s.unlabelled = std::move(kept);
  }
  return s;
}

Tensor decode_means(M2& model, const Tensor& z, const std::vector<int64_t>& classes) {
  Tape tape;
  NoGradGuard no_grad(tape);
  Var y = one_hot(tape, classes, model.config().classes);
  return sigmoid(model.decode(tape.constant(z), y)).value().clone();
}

// The paper's figure 1/5: row r is test image r (first column) and its style z = E[q(z|x, y)], y = argmax q(y|x),
// decoded with every class; then 10 rows of class-conditional samples z ~ N(0, I), one class per column.
void write_pictures(M2& model, const Dataset& test, const std::string& out, uint64_t seed) {
  const int64_t rows = 10, K = model.config().classes, D = test.pixels(), Z = model.config().latent;
  std::vector<int64_t> index(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) index[r] = r;
  const Tensor x = subset(test, index).to_tensor().reshaped({rows, D});
  Tensor styles;
  {
    Tape tape;
    NoGradGuard no_grad(tape);
    Var xv = tape.constant(x);
    const Tensor logits = model.classify(xv).value();
    std::vector<int64_t> guess(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 1; k < K; ++k)
        if (logits.item(r * K + k) > logits.item(r * K + guess[r])) guess[r] = k;
    styles = model.encode(xv, one_hot(tape, guess, K)).mu.value().clone();
  }
  Tensor z = Tensor::empty({rows * K, Z});
  std::vector<int64_t> classes(static_cast<size_t>(rows * K));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < K; ++k) {
      classes[r * K + k] = k;
      for (int64_t j = 0; j < Z; ++j) z.data<float>()[(r * K + k) * Z + j] = static_cast<float>(styles.item(r * Z + j));
    }
  const Tensor decoded = decode_means(model, z, classes);
  Tensor grid = Tensor::empty({rows * (K + 1), D});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < D; ++d) {
      grid.data<float>()[(r * (K + 1)) * D + d] = x.data<float>()[r * D + d];
      for (int64_t k = 0; k < K; ++k)
        grid.data<float>()[(r * (K + 1) + 1 + k) * D + d] = decoded.data<float>()[(r * K + k) * D + d];
    }
  image::write_grid(out + "/analogies.png", grid, test.rows, test.cols, K + 1);
  Generator gen(seed);
  gen.normal(z);
  image::write_grid(out + "/samples.png", decode_means(model, z, classes), test.rows, test.cols, K);
  std::fprintf(stderr, "pictures: %s/{analogies,samples}.png\n", out.c_str());
}

M2Config config_from(const cli::CommandLine& cli, const Dataset& train) {
  M2Config c;
  c.height = train.rows;
  c.width = train.cols;
  c.classes = train.num_classes;
  c.hidden = cli.get_int("hidden");
  c.hidden_layers = cli.get_int("hidden-layers");
  c.latent = cli.get_int("latent");
  c.activation = cli.get_string("activation");
  c.classifier = cli.get_string("classifier");
  c.decoder = cli.get_string("decoder");
  return c;
}

int train(const cli::CommandLine& cli) {
  const std::string out = cli.get_string("out"), ckpt = out + "/checkpoint.safetensors";
  Metadata run_meta = {{"seed", std::to_string(cli.get_int("seed"))}, {"batch", std::to_string(cli.get_int("batch"))},
                       {"labelled_batch", std::to_string(cli.get_int("labelled-batch"))},
                       {"labels", std::to_string(cli.get_int("labels"))},
                       {"validation", std::to_string(cli.get_int("validation"))},
                       {"unlabelled", std::to_string(cli.get_int("unlabelled"))},
                       {"lr", run::exact(cli.get_double("lr"))}, {"lr_schedule", cli.get_string("lr-schedule")},
                       {"alpha", run::exact(cli.get_double("alpha"))},
                       {"elbo_weights", cli.get_string("elbo-weights")},
                       {"supervised_only", cli.get_flag("supervised-only") ? "1" : "0"},
                       {"binarize", cli.get_flag("binarize") ? "1" : "0"}, {"data", cli.get_string("data")},
                       {"best_epoch", "0"}, {"best_validation", "-1"}, {"test_at_best", "0"}};
  const run::RunStart start = run::start_run(cli, ckpt, run_meta);
  const MnistSplits data = run::load(run_meta["data"]);
  M2Config config = config_from(cli, data.train);
  run::note_ignored_flags(cli, start, config.to_metadata());
  if (start.resuming) config = M2Config::from_metadata(start.checkpoint_metadata, ckpt);
  const int64_t first_epoch = start.first_epoch;
  const uint64_t seed = std::stoull(run_meta["seed"]);
  const bool binarize = run_meta["binarize"] == "1", supervised = run_meta["supervised_only"] == "1";
  const Splits s = split(data.train, std::stoll(run_meta["validation"]), std::stoll(run_meta["labels"]),
                          std::stoll(run_meta["unlabelled"]), seed);
  const double n_l = static_cast<double>(s.labelled.size()), n_u = static_cast<double>(s.unlabelled.size());
  const double n = n_l + n_u;
  double alpha = std::stod(run_meta["alpha"]);
  if (alpha == 0) alpha = 0.1 * n;
  std::fprintf(stderr, "split: %lld validation, %lld labelled, %lld unlabelled; alpha %g (0.1 N = %g)%s\n",
               static_cast<long long>(s.validation.size()), static_cast<long long>(n_l),
               static_cast<long long>(n_u), alpha, 0.1 * n, supervised ? "; supervised only" : "");
  Generator init(seed);
  M2 model(config, init);
  Adam optimizer(model.named_parameters(), {.lr = std::stod(run_meta["lr"])});
  run::restore_or_start(start, ckpt, model, optimizer, config.to_metadata());
  const int64_t labelled_batch = std::min<int64_t>(std::stoll(run_meta["labelled_batch"]), s.labelled.size());
  DataLoader labelled(s.labelled_pool, {.batch_size = labelled_batch, .shuffle = true, .seed = hash64(seed, 1),
                                        .drop_last = true, .binarize = binarize, .indices = s.labelled});
  DataLoader unlabelled(s.labelled_pool, {.batch_size = std::stoll(run_meta["batch"]), .shuffle = true,
                                          .seed = hash64(seed, 2), .drop_last = true, .binarize = binarize,
                                          .indices = s.unlabelled});
  const double b_l = static_cast<double>(labelled_batch), b = b_l + static_cast<double>(std::stoll(run_meta["batch"]));
  const bool by_data = run_meta["elbo_weights"] == "data";
  const M2TrainOptions options{.weights = {.labelled = by_data ? n_l / n : b_l / b,
                                           .unlabelled = by_data ? n_u / n : 1 - b_l / b,
                                           .classification = alpha / n},
                               .supervised_only = supervised, .seed = seed};
  const int64_t epochs = cli.get_int("epochs");
  progress::Progress progress(epochs, unlabelled.batches_per_epoch(),
                              labelled_batch + (supervised ? 0 : std::stoll(run_meta["batch"])));
  for (int64_t epoch = first_epoch; epoch <= epochs; ++epoch) {
    optimizer.set_learning_rate(
        run::epoch_learning_rate(run_meta["lr_schedule"], std::stod(run_meta["lr"]), epoch, epochs));
    progress.start_epoch(epoch);
    const double train_loss = train_m2_epoch(model, optimizer, labelled, unlabelled, options, epoch,
                                             [&](int64_t step, double loss) { progress.step(step, loss); });
    const double val = accuracy(predict_m2(model, s.validation, binarize, seed), s.validation.labels);
    const double test = accuracy(predict_m2(model, data.test, binarize, seed), data.test.labels);
    const bool improved = val > std::stod(run_meta["best_validation"]);
    if (improved) {
      run_meta["best_epoch"] = std::to_string(epoch);
      run_meta["best_validation"] = run::exact(val);
      run_meta["test_at_best"] = run::exact(test);
    }
    // An epoch's seconds count its training and evaluation, not the checkpoint writes (as in gmvae and vae).
    progress.end_epoch(cat("val acc ", val, "  test acc ", test, "  (best epoch ", run_meta["best_epoch"], ": test ",
                           std::stod(run_meta["test_at_best"]), ")"));
    Metadata meta = config.to_metadata();
    meta.insert(run_meta.begin(), run_meta.end());
    meta["epoch"] = std::to_string(epoch);
    if (improved) save_checkpoint(out + "/best.safetensors", model, nullptr, meta);
    run::append_csv(out + "/log.csv",
                    {"epoch", "train_loss", "validation_accuracy", "test_accuracy", "best_epoch", "test_at_best", "seconds"},
                    {std::to_string(epoch), run::exact(train_loss), run::exact(val), run::exact(test),
                     run_meta["best_epoch"], run_meta["test_at_best"], run::exact(progress.epoch_seconds())});
    save_checkpoint(ckpt, model, &optimizer, meta);
  }
  std::printf("result labels=%s supervised_only=%d best_epoch=%s validation=%.4f test=%.4f\n", run_meta["labels"].c_str(),
              supervised ? 1 : 0, run_meta["best_epoch"].c_str(), std::stod(run_meta["best_validation"]),
              std::stod(run_meta["test_at_best"]));
  if (!supervised) {
    Generator unused(0);
    M2 best(config, unused);
    load_checkpoint(out + "/best.safetensors", best, nullptr, config.to_metadata());
    write_pictures(best, data.test, out, seed);
  }
  std::fprintf(stderr, "log: %s/log.csv  checkpoints: %s, %s/best.safetensors\n", out.c_str(), ckpt.c_str(), out.c_str());
  return 0;
}

struct Loaded {
  std::unique_ptr<M2> model;
  Metadata metadata;
};
// eval and sample read the best-validation checkpoint unless --checkpoint names another.
std::string model_path(const cli::CommandLine& cli) {
  return cli.get_string("checkpoint").empty() ? cli.get_string("out") + "/best.safetensors" : run::checkpoint_path(cli);
}

Loaded load_model(const cli::CommandLine& cli) {
  const std::string path = model_path(cli);
  const Checkpoint saved = load_safetensors(path);
  const M2Config config = M2Config::from_metadata(saved.metadata, path);
  Generator unused(0);
  Loaded loaded{std::make_unique<M2>(config, unused), {}};
  loaded.metadata = load_checkpoint(path, *loaded.model, nullptr, config.to_metadata());
  return loaded;
}

int m2_main(int argc, char** argv) {
  cli::CommandLine cli = make_cli();
  if (!cli.parse(argc, argv)) return 0;
  run::prepare(cli);
  if (cli.subcommand() == "train") return train(cli);
  Loaded loaded = load_model(cli);
  const MnistSplits data = run::load(run::data_of_run(cli, loaded.metadata));  // Note [data of a run]
  const M2Config& config = loaded.model->config();
  run::check_model_fits_data(model_path(cli), config.height, config.width, data.test, config.classes);
  const uint64_t seed = std::stoull(loaded.metadata.count("seed") ? loaded.metadata.at("seed") : "1");
  if (cli.subcommand() == "eval") {
    const bool binarize = loaded.metadata.count("binarize") && loaded.metadata.at("binarize") == "1";
    const std::vector<int32_t> classifier = predict_m2(*loaded.model, data.test, binarize, seed);
    const std::vector<int32_t> generative = predict_m2_generative(*loaded.model, data.test, binarize, seed);
    std::printf("test_accuracy %s\nepoch %s\n", run::exact(accuracy(classifier, data.test.labels)).c_str(),
                loaded.metadata.count("epoch") ? loaded.metadata.at("epoch").c_str() : "?");
    // argmax_y L(x, y), and how often it agrees with q(y|x): how much the unlabelled bound can teach the classifier
    std::printf("generative_accuracy %s\nagreement %s\n", run::exact(accuracy(generative, data.test.labels)).c_str(),
                run::exact(accuracy(generative, classifier)).c_str());
    return 0;
  }
  write_pictures(*loaded.model, data.test, cli.get_string("out"), cli.get_int("seed"));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return cli::run_main("m2", m2_main, argc, argv); }
