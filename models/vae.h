// Variational autoencoder (Kingma & Welling 2013, "Auto-Encoding Variational Bayes").
//
// The model. Latent z ~ p(z) = N(0, I); pixels x ~ p(x|z) = Bernoulli(sigmoid(decoder(z))), independently per
// pixel. The posterior p(z|x) is intractable, so an encoder outputs an approximation
// q(z|x) = N(mu(x), diag(exp(log_var(x)))). For any q,
//
//   log p(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) + KL(q(z|x) || p(z|x))
//           >= E_q[log p(x|z)] - KL(q(z|x) || p(z))  =: ELBO(x)                  (K&W 2013, eq. 3)
//
// since the last KL is >= 0. Training maximises the ELBO in both networks at once. The expectation is
// estimated with one reparameterised sample z = mu + exp(log_var / 2) * eps, eps ~ N(0, I) (eq. 10), so its
// gradient reaches the encoder; the KL between two Gaussians is analytic (appendix B):
//
//   -KL = 1/2 sum_j (1 + log_var_j - mu_j^2 - exp(log_var_j)).
//
// Loss = mean over the batch of [ BCE(logits, x) summed over pixels + beta * KL ] = -ELBO when beta = 1
// (beta-VAE: Higgins et al. 2017). A tighter estimate of log p(x) for evaluation is the importance-weighted
// bound (Burda et al. 2016, eq. 8): log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q, which equals the ELBO
// estimate for k = 1 and increases with k towards log p(x).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/conv_layers.h"
#include "models/data.h"
#include "models/layers.h"
#include "models/optim.h"
#include "models/safetensors.h"

namespace tapegrad {

struct VaeConfig {
  std::string arch = "mlp";  // "mlp": pytorch/examples' 784-400-20; "conv": strided convs + transposed convs
  int64_t height = 28, width = 28;
  int64_t hidden = 400;
  int64_t latent = 20;
  std::string model_name() const { return "vae-" + arch; }
  Metadata to_metadata() const;
  static VaeConfig from_metadata(const Metadata& metadata, const std::string& path);
};

class Vae : public Module {
 public:
  Vae(const VaeConfig& config, Generator& generator);
  std::string type_name() const override { return "Vae"; }
  std::string describe() const override;
  const VaeConfig& config() const { return config_; }

  struct Posterior {
    Var mu, log_var;  // (B, Z) each
  };
  Posterior encode(const Var& x);  // x: (B, H*W) in [0, 1]
  Var decode(const Var& z);        // z: (B, Z) -> logits (B, H*W)

  struct Terms {
    Var loss;            // () mean over the batch of reconstruction + beta * kl
    Var reconstruction;  // (B,) -log p(x|z) summed over pixels
    Var kl;              // (B,) KL(q(z|x) || p(z))
  };
  // The negative ELBO with one reparameterised sample per example.
  Terms loss(const Var& x, Generator& generator, double beta = 1.0);

  // log p(x, z_i) - log q(z_i|x) for k samples per example: the importance log-weights, (k, B) in float64.
  std::vector<std::vector<double>> log_weights(const Var& x, Generator& generator, int64_t k);

 private:
  VaeConfig config_;
  Sequential encoder_, decoder_;
  Linear* mu_head_ = nullptr;       // owned by heads_
  Linear* log_var_head_ = nullptr;
  std::vector<std::unique_ptr<Linear>> heads_;
};

struct VaeTrainOptions {
  double beta = 1.0;
  int64_t kl_warmup_epochs = 0;  // beta ramps linearly from 0 over this many epochs
  double clip_norm = 0.0;        // 0: no clipping
  uint64_t seed = 1;
  bool check_finite = false;     // Tape::set_check_finite: name the first op that makes a NaN or Inf
};

// One epoch of minibatch training; returns the mean training loss. `on_step(step, loss)` reports progress.
// Bit-reproducible: the data order and the noise depend only on (seed, epoch).
double train_vae_epoch(Vae& model, Optimizer& optimizer, DataLoader& loader, const VaeTrainOptions& options,
                       int64_t epoch, const std::function<void(int64_t, double)>& on_step = {});

// Results of evaluating a VAE on a dataset, all in nats per example.
struct VaeEvaluation {
  double elbo = 0;             // mean ELBO with sampled z (the training objective at beta = 1)
  double reconstruction = 0;   // mean -log p(x|z)
  double kl = 0;               // mean KL(q || p)
  double iwae = 0;             // mean importance-weighted bound with k samples (0 if k = 0)
  int64_t active_units = 0;    // dimensions with Cov_x(E_q[z_j]) > 0.01 (Burda et al. 2016)
  std::vector<double> posterior_mean_variance;  // Var_x(E_q[z_j]) for each latent dimension j
};

// Deterministic for a given seed: the noise is drawn from Generator(seed) and the data visited in order.
VaeEvaluation evaluate_vae(Vae& model, const Dataset& data, int64_t batch_size, uint64_t seed, int64_t iwae_k,
                           bool binarize);

}  // namespace tapegrad
