// gmvae: unsupervised clustering with a Gaussian-mixture VAE (models/gmvae.h) on MNIST-style images.
//
//   gmvae train [--components 10 --epochs 30 ...]   trains, logs test ELBO and clustering scores, checkpoints
//   gmvae eval                                      test ELBO, Hungarian / majority accuracy, NMI, cluster sizes
//   gmvae sample                                    pictures: samples per component, test images by cluster
//
// Everything lands in --out (default runs/gmvae): log.csv, checkpoint.safetensors, *.png.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "examples/common/cli.h"
#include "examples/common/decode.h"
#include "examples/common/image.h"
#include "examples/common/progress.h"
#include "examples/common/run.h"
#include "models/checkpoint.h"
#include "models/clustering.h"
#include "models/gmvae.h"

using namespace tapegrad;

namespace {

constexpr int64_t kEvalBatch = 500;  // fixed, so that `eval` reproduces the logged scores to the bit

cli::CommandLine make_cli() {
  cli::CommandLine cli("gmvae", "A Gaussian-mixture VAE (Dilokthanakul et al. 2016) clustering 28x28 images.");
  cli.add_subcommand("train", "train (or --resume), logging clustering scores each epoch, pictures at the end");
  cli.add_subcommand("eval", "evaluate a checkpoint: test ELBO, clustering accuracy (Hungarian, majority), NMI");
  cli.add_subcommand("sample", "pictures: one row of samples per component; test images grouped by cluster");
  run::add_common_flags(cli, "runs/gmvae", 30, 100, 1e-3);
  cli.add_int("components", 10, "mixture components K (clusters)", 2, 1000);
  cli.add_int("latent", 64, "latent dimensions Z", 1, 4096);
  cli.add_int("hidden", 512, "hidden units per layer", 1, 1 << 16);
  cli.add_int("layers", 2, "hidden layers in each network", 1, 16);
  cli.add_string("arch", "mlp", "encoder of z and decoder: mlp (dense layers only) or conv (the conv VAE's strided "
                 "convolutions and transposed convolutions around the dense layers; needs --z-given x)", {"mlp", "conv"});
  cli.add_string("z-given", "xy", "encoder of z: xy = q(z|x, y), one z per component (Rui Shu's form); x = q(z|x), "
                 "one z per image (the paper's; see models/gmvae.h Note [q(z|x)])", {"xy", "x"});
  cli.add_string("q-y", "network", "q(y|x): network = a classifier network; closed-form = the ELBO's optimum given "
                 "q(z|x) and the components (needs --z-given x; models/gmvae.h Note [closed-form q(y|x)])",
                 {"network", "closed-form"});
  cli.add_string("covariance", "diag", "covariance of each component p(z|y): diag or full (needs --z-given x; "
                 "models/gmvae.h Note [full-covariance components])", {"diag", "full"});
  cli.add_int("pretrain", 0, "first train this many epochs as a plain VAE (p(z) = N(0, I)), then start the components "
              "at k-means clusters of the codes (needs --z-given x; Note [pretraining])", 0, 100000);
  cli.add_int("kmeans-restarts", 10, "--pretrain: k-means++ starts of the k-means on the codes (or on the spectral "
              "embedding); the lowest within-cluster sum of squares is kept", 1, 100000);
  cli.add_string("component-start", "kmeans", "--pretrain: how the components start: kmeans = k-means on the codes; "
                 "spectral = spectral clustering of the codes' nearest-neighbour graph (models/gmvae.h Note "
                 "[spectral start])", {"kmeans", "spectral"});
  cli.add_int("neighbours", 10, "--component-start spectral: neighbours per code in the kNN graph", 1, 1000);
  cli.add_int("eigenvectors", 0, "--component-start spectral: eigenvectors of the graph that k-means sees; 0: as many "
              "as components (models/spectral.h Note [more eigenvectors than clusters])", 0, 1000);
  cli.add_double("prior-init", 0.29, "component means start U(-a, a); 0: N(0, 1)", 0, 100);
  cli.add_double("y-weight", 1.0, "weight of KL(q(y|x) || p(y))", 0, 1000);
  cli.add_int("y-warmup", 0, "epochs over which the weight of KL(q(y|x) || p(y)) ramps up from 0", 0, 100000);
  cli.add_double("free-bits", 0.0, "information constraint: KL(q(y|x) || p(y)) enters as max(this, batch mean)", 0, 100);
  cli.add_double("mi-weight", 1.0, "weight of I(x; y) inside the categorical KL (1: the ELBO; 0: only "
                 "KL(q(y) || p(y)) of the batch marginal is kept)", 0, 1);
  cli.add_int("num", 10, "sample: images per component / per cluster", 1, 1000);
  cli.add_string("checkpoint", "", "checkpoint to read (default: <out>/checkpoint.safetensors)");
  return cli;
}

// Settings of the run that are not part of the architecture, stored in the checkpoint for --resume.
Metadata run_metadata(const cli::CommandLine& cli) {
  return {{"seed", std::to_string(cli.get_int("seed"))}, {"batch", std::to_string(cli.get_int("batch"))},
          {"lr", run::exact(cli.get_double("lr"))}, {"lr_schedule", cli.get_string("lr-schedule")},
          {"prior_init", run::exact(cli.get_double("prior-init"))},
          {"y_weight", run::exact(cli.get_double("y-weight"))}, {"y_warmup", std::to_string(cli.get_int("y-warmup"))},
          {"free_bits", run::exact(cli.get_double("free-bits"))},
          {"mi_weight", run::exact(cli.get_double("mi-weight"))}, {"pretrain", std::to_string(cli.get_int("pretrain"))},
          {"kmeans_restarts", std::to_string(cli.get_int("kmeans-restarts"))},
          {"component_start", cli.get_string("component-start")},
          {"neighbours", std::to_string(cli.get_int("neighbours"))},
          {"eigenvectors", std::to_string(cli.get_int("eigenvectors"))},
          {"binarize", cli.get_flag("binarize") ? "1" : "0"}, {"data", cli.get_string("data")}};
}

struct Scored {
  GmvaeEvaluation eval;
  ClusteringScores scores;
};
Scored score(Gmvae& model, const Dataset& test, uint64_t seed, bool binarize) {
  Scored s{evaluate_gmvae(model, test, kEvalBatch, seed, binarize), {}};
  s.scores = score_clustering(s.eval.clusters, test.labels, model.config().components, test.num_classes);
  return s;
}

// One row per component: decoder means of z ~ p(z|y=k).
void write_component_samples(Gmvae& model, const std::string& path, int64_t per_row, uint64_t seed) {
  Generator gen(seed);
  const Tensor codes = model.sample_components(per_row, gen);
  image::write_grid(path, decode::decode_means(model, codes), model.config().height, model.config().width, per_row);
}

// One row per cluster: its first `per_row` test images (blank cells when the cluster is smaller).
void write_clusters(const Dataset& test, const std::vector<int32_t>& clusters, int64_t K, const std::string& path,
                    int64_t per_row) {
  const int64_t D = test.pixels();
  Tensor grid = Tensor::zeros({K * per_row, D});
  std::vector<int64_t> filled(K, 0);
  for (int64_t i = 0; i < test.size(); ++i) {
    const int64_t k = clusters[i];
    if (filled[k] >= per_row) continue;
    float* cell = grid.data<float>() + (k * per_row + filled[k]++) * D;
    for (int64_t d = 0; d < D; ++d) cell[d] = static_cast<float>(test.image(i)[d] / 255.0);
  }
  image::write_grid(path, grid, test.rows, test.cols, per_row);
}

void write_pictures(Gmvae& model, const Dataset& test, const std::vector<int32_t>& clusters, const std::string& out,
                    int64_t per_row, uint64_t seed) {
  write_component_samples(model, out + "/samples.png", per_row, seed);
  write_clusters(test, clusters, model.config().components, out + "/clusters.png", per_row);
  std::fprintf(stderr, "pictures: %s/{samples,clusters}.png (one row per component)\n", out.c_str());
}

void print_scores(const Scored& s) {
  std::printf("test_elbo %s\ntest_reconstruction %s\ntest_kl_z %s\ntest_kl_y %s\n", run::exact(s.eval.elbo).c_str(),
              run::exact(s.eval.reconstruction).c_str(), run::exact(s.eval.kl_z).c_str(), run::exact(s.eval.kl_y).c_str());
  std::printf("hungarian_accuracy %.4f\nmajority_accuracy %.4f\nnmi %.4f\nmean_max_qy %.4f\n", s.scores.hungarian_accuracy,
              s.scores.majority_accuracy, s.scores.nmi, s.eval.mean_max_qy);
  std::printf("cluster sizes (majority class):");
  for (size_t k = 0; k < s.scores.cluster_sizes.size(); ++k)
    std::printf(" %lld(%lld)", static_cast<long long>(s.scores.cluster_sizes[k]),
                static_cast<long long>(s.scores.majority_class[k]));
  std::printf("\n");
}

GmvaeConfig config_from_cli(const cli::CommandLine& cli) {
  GmvaeConfig c;
  c.components = cli.get_int("components");
  c.latent = cli.get_int("latent");
  c.hidden = cli.get_int("hidden");
  c.layers = cli.get_int("layers");
  c.z_given_y = cli.get_string("z-given") == "xy";
  c.y_closed_form = cli.get_string("q-y") == "closed-form";
  c.arch = cli.get_string("arch");
  c.covariance = cli.get_string("covariance");
  return c;
}

int train(const cli::CommandLine& cli) {
  const std::string out = cli.get_string("out"), ckpt = out + "/checkpoint.safetensors";
  GmvaeConfig config = config_from_cli(cli);
  Metadata run_meta = run_metadata(cli);
  const run::RunStart start = run::start_run(cli, ckpt, run_meta);
  run::note_ignored_flags(cli, start, config.to_metadata());
  if (start.resuming) config = GmvaeConfig::from_metadata(start.checkpoint_metadata, ckpt);
  const int64_t pretrain = std::stoll(run_meta["pretrain"]);
  if (pretrain > 0 && config.z_given_y) throw cli::UsageError("--pretrain needs --z-given x");
  if (config.y_closed_form && config.z_given_y) throw cli::UsageError("--q-y closed-form needs --z-given x");
  if (config.covariance == "full" && config.z_given_y) throw cli::UsageError("--covariance full needs --z-given x");
  const int64_t first_epoch = start.first_epoch;
  const MnistSplits data = run::load(run_meta["data"]);
  config.height = data.train.rows;
  config.width = data.train.cols;
  config.prior_init = std::stod(run_meta["prior_init"]);
  const uint64_t seed = std::stoull(run_meta["seed"]);
  const bool binarize = run_meta["binarize"] == "1";
  Generator init(seed);
  Gmvae model(config, init);
  Adam optimizer(model.named_parameters(), {.lr = std::stod(run_meta["lr"])});
  run::restore_or_start(start, ckpt, model, optimizer, config.to_metadata());
  DataLoader loader(data.train, {.batch_size = std::stoll(run_meta["batch"]), .shuffle = true, .seed = seed,
                                 .binarize = binarize});
  GmvaeTrainOptions options{
      .loss = {.y_weight = std::stod(run_meta["y_weight"]), .free_bits = std::stod(run_meta["free_bits"]),
               .mi_weight = std::stod(run_meta["mi_weight"])},
      .y_warmup_epochs = std::stoll(run_meta["y_warmup"]), .seed = seed};
  const int64_t epochs = cli.get_int("epochs");
  progress::Progress progress(epochs, loader.batches_per_epoch(), std::stoll(run_meta["batch"]));
  std::vector<int32_t> clusters;
  for (int64_t epoch = first_epoch; epoch <= epochs; ++epoch) {
    optimizer.set_learning_rate(
        run::epoch_learning_rate(run_meta["lr_schedule"], std::stod(run_meta["lr"]), epoch, epochs));
    // Note [pretraining]: the k-means start is a function of the epoch-`pretrain` checkpoint, so a run resumed
    // there repeats it exactly.
    if (pretrain > 0 && epoch == pretrain + 1) {
      const ComponentStart component_start{.method = run_meta["component_start"],
                                           .restarts = std::stoll(run_meta["kmeans_restarts"]),
                                           .neighbours = std::stoll(run_meta["neighbours"]),
                                           .eigenvectors = std::stoll(run_meta["eigenvectors"])};
      const std::vector<int32_t> assignment = initialize_components(model, data.train, seed, component_start);
      const ClusteringScores k =
          score_clustering(assignment, data.train.labels, config.components, data.train.num_classes);
      std::fprintf(stderr, "%s on the codes of the training images: acc %.4f majority %.4f NMI %.4f\n",
                   component_start.method == "kmeans" ? "k-means" : "spectral clustering", k.hungarian_accuracy,
                   k.majority_accuracy, k.nmi);
    }
    options.loss.standard_normal_prior = epoch <= pretrain;
    progress.start_epoch(epoch);
    const double train_loss = train_gmvae_epoch(model, optimizer, loader, options, epoch,
                                                [&](int64_t step, double loss) { progress.step(step, loss); });
    const Scored s = score(model, data.test, seed, binarize);
    clusters = s.eval.clusters;
    progress.end_epoch(cat("test ELBO ", s.eval.elbo, " (KL_y ", s.eval.kl_y, ")  acc ", s.scores.hungarian_accuracy,
                           " majority ", s.scores.majority_accuracy, " NMI ", s.scores.nmi));
    run::append_csv(out + "/log.csv",
                    {"epoch", "train_loss", "test_elbo", "test_reconstruction", "test_kl_z", "test_kl_y",
                     "hungarian_accuracy", "majority_accuracy", "nmi", "mean_max_qy", "seconds"},
                    {std::to_string(epoch), run::exact(train_loss), run::exact(s.eval.elbo),
                     run::exact(s.eval.reconstruction), run::exact(s.eval.kl_z), run::exact(s.eval.kl_y),
                     run::exact(s.scores.hungarian_accuracy), run::exact(s.scores.majority_accuracy),
                     run::exact(s.scores.nmi), run::exact(s.eval.mean_max_qy), run::exact(progress.epoch_seconds())});
    Metadata meta = config.to_metadata();
    meta.insert(run_meta.begin(), run_meta.end());
    meta["epoch"] = std::to_string(epoch);
    meta["test_elbo"] = run::exact(s.eval.elbo);
    save_checkpoint(ckpt, model, &optimizer, meta);
  }
  if (clusters.empty()) clusters = score(model, data.test, seed, binarize).eval.clusters;
  write_pictures(model, data.test, clusters, out, cli.get_int("num"), seed);
  std::fprintf(stderr, "log: %s/log.csv  checkpoint: %s\n", out.c_str(), ckpt.c_str());
  return 0;
}

struct Loaded {
  std::unique_ptr<Gmvae> model;
  Metadata metadata;
};
Loaded load_model(const cli::CommandLine& cli) {
  const std::string path = run::checkpoint_path(cli);
  const Checkpoint saved = load_safetensors(path);
  GmvaeConfig config = GmvaeConfig::from_metadata(saved.metadata, path);
  Generator unused(0);
  Loaded loaded{std::make_unique<Gmvae>(config, unused), {}};
  // load_checkpoint refuses tensors it was not given, so the Adam state is read into a throwaway optimizer
  // when the checkpoint has one (every `train` checkpoint does).
  Adam optimizer(loaded.model->named_parameters(), {});
  loaded.metadata = load_checkpoint(path, *loaded.model, saved.metadata.count("optimizer") ? &optimizer : nullptr,
                                    config.to_metadata());
  return loaded;
}

int evaluate_or_sample(const cli::CommandLine& cli) {
  Loaded loaded = load_model(cli);
  const MnistSplits data = run::load(run::data_of_run(cli, loaded.metadata));  // Note [data of a run]
  const GmvaeConfig& config = loaded.model->config();
  run::check_model_fits_data(run::checkpoint_path(cli), config.height, config.width, data.test);
  const uint64_t seed = std::stoull(loaded.metadata.count("seed") ? loaded.metadata.at("seed") : "1");
  const bool binarize = loaded.metadata.count("binarize") && loaded.metadata.at("binarize") == "1";
  const Scored s = score(*loaded.model, data.test, seed, binarize);
  if (cli.subcommand() == "eval") {
    print_scores(s);
    return 0;
  }
  write_pictures(*loaded.model, data.test, s.eval.clusters, cli.get_string("out"), cli.get_int("num"),
                 cli.get_int("seed"));
  return 0;
}

int gmvae_main(int argc, char** argv) {
  cli::CommandLine cli = make_cli();
  if (!cli.parse(argc, argv)) return 0;
  run::prepare(cli);
  if (cli.subcommand() == "train") return train(cli);
  return evaluate_or_sample(cli);
}

}  // namespace

int main(int argc, char** argv) { return cli::run_main("gmvae", gmvae_main, argc, argv); }
