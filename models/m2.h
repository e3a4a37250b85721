// Semi-supervised VAE, model M2 of Kingma, Rezende, Mohamed & Welling 2014, "Semi-Supervised Learning with Deep
// Generative Models".
//
// Generative model: y ~ p(y) = Cat(1/K) (uniform), z ~ p(z) = N(0, I), x ~ p(x|y, z) = Bernoulli(sigmoid(
// decoder(y, z))) per pixel. Inference: a classifier q(y|x) = Cat(softmax(classifier(x))) and an encoder
// q(z|x, y) = N(mu(x, y), diag(exp(log_var(x, y)))).
//
// Labelled bound (paper eq. 6). With y observed, only z is latent; the VAE argument (models/vae.h) gives
//   log p(x, y) >= E_q(z|x,y)[log p(x|y, z)] + log p(y) - KL(q(z|x, y) || p(z))  =: -L(x, y).
// Unlabelled bound (eq. 7). With y latent too and q(y, z|x) = q(y|x) q(z|x, y):
//   log p(x) >= E_q(y,z|x)[log p(x|y,z) + log p(y) + log p(z) - log q(y|x) - log q(z|x,y)]
//            = sum_y q(y|x) (-L(x, y)) + H(q(y|x))  =: -U(x),
// since the z-part of the expectation for a fixed y is exactly -L(x, y). The sum over y is computed exactly by
// enumerating all K classes in one batched pass (K * B rows), so no discrete sampling or score-function
// gradient is needed.
//
// Why the alpha term (eq. 9). In the objective J = sum_labelled L(x, y) + sum_unlabelled U(x) the classifier
// q(y|x) appears only in U: labelled examples never train it, and on unlabelled ones it is trained only
// through the generative model's opinion, which starts out uninformative (and the entropy term pulls q
// towards uniform). The paper therefore adds a classification loss on the labelled data:
//   J^alpha = J + alpha * E_labelled[-log q(y|x)],  alpha = 0.1 * N.
// Note [M2 loss normalisation]: we minimise J^alpha / N with N = N_l + N_u, the number of training examples
// (labelled + unlabelled, after the validation split). With a batch of B_l labelled and B_u unlabelled images
// (a fixed proportion, whatever the data proportion), an unbiased estimate is
//   loss = (N_l / N) mean_l[-L(x, y)] + (N_u / N) mean_u[-U(x)] + (alpha / N) mean_l[-log q(y|x)],
// so alpha keeps the paper's units and the paper's default alpha = 0.1 N weighs the mean classification loss
// by 0.1. `LossWeights::classification` below is alpha / N (set it directly to compare with code that sums).
// In this unbiased form the labelled bound weighs only N_l / N (1.4% with 100 labels of 7,000): the decoder
// hardly ever sees an image with its true class, learns to read the class from z instead of y (the style/
// content picture shows every column alike), and -U then carries no class information. The alternative
// weights every image of a batch alike (B_l / B and B_u / B, with labelled images over-sampled to a fixed
// share of every batch, as most ports do); examples/m2.cpp --elbo-weights chooses, docs/m2.md measures.
// Note [M2 latent size]: even then, with the paper's Z = 50 the encoder writes the class into z and the
// decoder ignores y. A small Z (2 to 4 on 28x28 digits) leaves no room for it, so y carries the content and
// -U(x) informs the classifier; docs/m2.md has the ablation. M2Config keeps the paper's sizes as defaults.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "models/data.h"
#include "models/layers.h"
#include "models/optim.h"
#include "models/safetensors.h"

namespace tapegrad {

struct M2Config {
  int64_t height = 28, width = 28;
  int64_t classes = 10;           // K
  int64_t hidden = 500;           // width of every hidden layer
  int64_t hidden_layers = 1;      // per network (classifier, encoder, decoder)
  int64_t latent = 50;            // Z
  std::string activation = "softplus";
  // q(y|x)'s network: "mlp" (hidden_layers dense layers) or "conv" (the conv VAE's two strided convolutions,
  // add_conv_encoder in models/conv_layers.h, before those dense layers). The encoder stays dense.
  std::string classifier = "mlp";
  // p(x|y, z)'s network: "mlp" (hidden_layers dense layers) or "conv" (the conv VAE's decoder on [z, y]: a dense
  // layer to 64 x H/4 x W/4 features, then two stride-2 transposed convolutions, add_conv_decoder).
  std::string decoder = "mlp";
  DType dtype = DType::f32;       // f64 for gradient checks
  int64_t pixels() const { return height * width; }
  Metadata to_metadata() const;
  static M2Config from_metadata(const Metadata& metadata, const std::string& path);
};

class M2 : public Module {
 public:
  M2(const M2Config& config, Generator& generator);
  std::string type_name() const override { return "M2"; }
  std::string describe() const override;
  const M2Config& config() const { return config_; }

  Var classify(const Var& x);  // x: (B, D) -> logits of q(y|x): (B, K)
  struct Posterior {
    Var mu, log_var;  // (B, Z)
  };
  // q(z|x, y); y: (B, K) one-hot. `x_features` is the input layer's x-part W_x x + b, (B, H): it does not
  // depend on y, so enumeration computes it once per image (Note [shared x features]).
  Var x_features(const Var& x);
  Posterior encode_features(const Var& x_features, const Var& y);
  Posterior encode(const Var& x, const Var& y) { return encode_features(x_features(x), y); }
  Var decode(const Var& z, const Var& y);  // (rows, Z), (rows, K) -> pixel logits (rows, D)

  // -L(x, y) per example, (B,), with z = mu + sigma * eps for the given noise eps: (B, Z).
  Var neg_elbo(const Var& x, const Var& x_features, const Var& y, const Tensor& eps);
  // -U(x) per example, (B,), enumerating every class; eps: (K * B, Z), row k * B + b is class k of image b.
  Var neg_unlabelled_bound(const Var& x, const Tensor& eps);
  // -L(x, y) for every class y in one batched pass, (B, K); eps as for neg_unlabelled_bound.
  Var neg_elbo_every_class(const Var& x, const Var& x_features, const Tensor& eps);

  struct Terms {
    Var loss;                // () Note [M2 loss normalisation]
    Var labelled;            // (B_l,) -L(x, y)
    Var unlabelled;          // (B_u,) -U(x)
    Var classification;      // (B_l,) -log q(y|x)
  };
  struct LossWeights {
    double labelled = 1, unlabelled = 1;  // N_l / N, N_u / N
    double classification = 0.1;          // alpha / N
  };
  // Either batch may be empty (0 rows): with no unlabelled images the loss is the labelled one alone.
  Terms loss(const Var& x_labelled, std::span<const int32_t> labels, const Var& x_unlabelled, Generator& generator,
             const LossWeights& weights);

 private:
  M2Config config_;
  Sequential classifier_, encoder_body_, decoder_;
  Linear encoder_x_, encoder_y_, mu_head_, log_var_head_;

  Posterior encode_hidden(const Var& pre_activation);  // the encoder after its first layer's matrix products
  // q(z|x, y) for every (class, image) pair of a batch, row k * B + b: class label[r] of image image[r].
  struct EveryClass {
    Posterior q;
    std::vector<int64_t> label, image;
  };
  EveryClass every_class(const Var& x_features);
  Var neg_elbo_rows(const Var& x, std::span<const int64_t> x_rows, const Posterior& q, const Var& y,
                    const Tensor& eps);
  Var unlabelled_bound_from(const Var& neg_elbo_every_class, const Var& logits);
  Activation activation_;
};

// Noise for the reparameterisation: (rows, Z) standard normals of the model's dtype.
Tensor m2_noise(const M2& model, int64_t rows, Generator& generator);

struct M2TrainOptions {
  M2::LossWeights weights;
  bool supervised_only = false;  // the baseline: the classifier on the labelled data alone
  uint64_t seed = 1;
};

// One epoch = one pass over the unlabelled loader (drop_last batches); the labelled loader is cycled, its
// passes numbered from epoch * 1000 so a resumed run sees the same batches. Returns the mean loss.
double train_m2_epoch(M2& model, Optimizer& optimizer, DataLoader& labelled, DataLoader& unlabelled,
                      const M2TrainOptions& options, int64_t epoch,
                      const std::function<void(int64_t, double)>& on_step = {});

// Classifier predictions argmax q(y|x) for a dataset (visited in order); `binarize` as in training, fixed seed.
std::vector<int32_t> predict_m2(M2& model, const Dataset& data, bool binarize, uint64_t seed);
// The generative model's own classification, argmax_y L(x, y) with z at the posterior mean (eps = 0): the class
// whose decoder explains x best, which is what the unlabelled bound rewards q(y|x) for (docs/m2.md).
std::vector<int32_t> predict_m2_generative(M2& model, const Dataset& data, bool binarize, uint64_t seed);
double accuracy(const std::vector<int32_t>& predicted, const std::vector<int32_t>& labels);

// A new Dataset holding data's examples at `indices`, in that order.
Dataset subset(const Dataset& data, std::span<const int64_t> indices);

}  // namespace tapegrad
