// Gaussian-mixture VAE for unsupervised clustering (Dilokthanakul et al. 2016, "Deep Unsupervised Clustering
// with Gaussian Mixture Variational Autoencoders"), in the y -> z -> x form popularised by Rui Shu's
// "Gaussian mixture VAE: lessons about variational inference, generative modeling, and deep nets" (2016).
// Shape letters: B batch, K components, Z latent, H hidden, D = height * width pixels.
//
// Generative model:  y ~ p(y) = Cat(1/K),  z | y ~ p(z|y) = N(mu_y, diag exp(lv_y)) (mu, lv learned, (K, Z)),
//                    x | z ~ p(x|z) = Bernoulli(sigmoid(decoder(z))), independently per pixel.
// Inference model:   q(y, z | x) = q(y|x) q(z|x, y),  q(y|x) = Cat(softmax(f(x))),
//                    q(z|x, y) = N(m(x, y), diag exp(s(x, y))).
//
// ELBO. log p(x) >= E_q(y,z|x)[log p(x|z) + log p(z|y) + log p(y) - log q(z|x,y) - log q(y|x)], and since y is
// discrete with K values the expectation over y is a finite sum, taken exactly:
//
//   ELBO(x) = sum_k q(k|x) [ E_q(z|x,k) log p(x|z) - KL(q(z|x,k) || p(z|k)) ] - KL(q(y|x) || p(y))
//   KL(q(y|x) || p(y)) = sum_k q(k|x) (log q(k|x) + log K)
//
// The Gaussian KL is analytic; E_q(z|x,k) log p(x|z) uses one reparameterised z per (x, k). All K components go
// through the networks in one batched pass of B*K rows, and the gradient reaches q(y|x) through the weights
// q(k|x) (no REINFORCE, no Gumbel relaxation needed). q(z|x, y)'s first layer acts on concat(x, onehot(y)),
// which is W_x x + W_y onehot(y) + b: it is computed as (B, H) + (K, H) -> (B, K, H), so x is multiplied once,
// not K times.
//
// Relation to the paper. Dilokthanakul et al. use three latent variables: w ~ N(0, I), y ~ Cat, and
// z | w, y ~ N(mu_y(w), sigma_y(w)) with the component means produced by networks of w, plus an approximate
// posterior q(w|x) q(z|x) p(y|w, z) where p(y|w, z) is computed in closed form. Dropping w (fixing the
// component parameters to learned constants) gives the model above; q(y|x) is then a network, or, with a
// single q(z|x), the closed form of Note [closed-form q(y|x)] (the paper's responsibilities p(y|w, z) with
// log p(z|y) replaced by its expectation under q(z|x)), and the exact sum over y replaces the paper's
// z-sample-based responsibilities in the ELBO. The paper's terms map onto ours: its "z-prior term"
// E_q(w)q(z) sum_k p(k|w,z) KL(q(z)||p(z|w,k)) is our sum_k q(k|x) KL(q(z|x,k) || p(z|k)), its "conditional
// prior" KL(p(y|w,z) || p(y)) is our KL(q(y|x) || p(y)), and its w-prior term vanishes.
//
// Note [cluster collapse]. Two optional guards (GmvaeLossOptions):
//  * information constraint (Dilokthanakul et al. sec. 3.2, after the free bits of Kingma et al. 2016): the
//    categorical KL enters as max(lambda, mean_batch KL(q(y|x) || p(y))), so it exerts no pull towards uniform
//    q(y|x) until q(y|x) is at least lambda nats confident on average (lambda <= log K);
//  * warm-up of the categorical KL: its weight grows linearly from 0 over the first epochs.
//  Both let q(y|x) become confident early, but on their own they let every x choose the SAME component (the
//  marginal collapse measured in docs/gmvae.md). A third guard splits the term instead, by the "ELBO surgery"
//  identity (Hoffman & Johnson 2016), averaged over the data (batch) with q(y) = mean_x q(y|x):
//     mean_x KL(q(y|x) || p(y)) = I_q(x; y) + KL(q(y) || p(y)).
//  The mutual-information part pulls every q(y|x) towards uniform (it penalises using y at all: the
//  over-regularisation of Dilokthanakul et al. sec. 3.2); the marginal part keeps the components in use.
//  With mi_weight < 1 the first is down-weighted and the second kept, the information-maximisation view of
//  clustering (Krause, Perona & Gomes 2010; Hu et al. 2017, IMSAT). mi_weight = 1 is the exact ELBO.
//
// Note [q(z|x)]. With q(z|x, y) the encoder can place z next to mu_k for EVERY k and the decoder reconstructs x
// equally well from each: y is then only weakly identified (the components differ only through KL_z). The
// paper's inference network has a single q(z|x) (its y posterior is computed from z), and so does the option
// z_given_y = false: z ~ q(z|x) once per x, and the same ELBO with the sum over y exact,
//   ELBO(x) = E_q(z|x) log p(x|z) - sum_k q(k|x) KL(q(z|x) || p(z|k)) - KL(q(y|x) || p(y)),
// so a component is chosen by where z lies, and the decoder runs on B rows instead of B*K. In code the
// posterior is (B, 1, Z) and broadcasts against the (K, Z) prior; q(k|x) times a (B, 1) reconstruction sums to
// the reconstruction itself.
//
// Note [closed-form q(y|x)]. With a single q(z|x), the q(y|x) that maximises the ELBO for fixed q(z|x) and
// prior is available in closed form (set the derivative of the ELBO w.r.t. q(k|x) under sum_k q(k|x) = 1 to 0):
//   log q(k|x) = log p(k) + E_q(z|x)[log p(z|k)] + const
//              = -1/2 sum_j [lv_kj + ((mu_j(x) - m_kj)^2 + exp(log_var_j(x))) / exp(lv_kj)] + const
//              = -KL(q(z|x) || p(z|k)) + const
// (the KL adds the entropy of q(z|x), the same for every k), so the logits are the negated KLs of the ELBO's
// z term, computed once for both (kl_normal_pairwise, Note [pairwise Gaussian KL] in models/distributions.cpp):
// the responsibilities of the mixture for the whole posterior cloud rather than for one sample z (VaDE, Jiang et
// al. 2017, uses p(k|z) at a sample z). The option y_posterior = closed_form uses it instead of a q(y|x)
// network: no classifier to train, and a component owns exactly the x whose codes lie in its Gaussian. The
// gradient flows through it into the encoder and the prior like any other op.
//
// Note [pretraining]. VaDE's initialisation (Jiang et al. 2017, sec. 3.3): train encoder and decoder first as a
// plain VAE (p(z) = N(0, I), GmvaeLossOptions::standard_normal_prior), then fit k-means to the codes mu(x) of the
// training images and start the components there (initialize_components): m_k the centroids, lv_k the
// log of the per-dimension variance of each cluster's aggregate posterior. The mixture then starts from the
// partition that the codes already suggest instead of from a random one.
//
// Note [spectral start]. k-means sees the codes as round blobs. Where a class is a curved sheet of codes that
// touches another class's sheet (Fashion-MNIST's tops, the digits 4 and 9), k-means cuts across sheets, and the
// mixture trained from that start keeps the cut. ComponentStart::method = "spectral" clusters the codes by the
// connectivity of their k-nearest-neighbour graph instead (Ng, Jordan & Weiss 2001; models/spectral.h), the
// manifold-then-cluster step that N2D (McConville et al. 2020) takes with UMAP; the components then start at each
// such cluster's mean and covariance as above. On Fashion-MNIST the start needs more of the graph's eigenvectors
// than there are components (ComponentStart::eigenvectors, Note [more eigenvectors than clusters] in
// models/spectral.h) to cut the tops apart. docs/gmvae.md measures the starts.
//
// Note [full-covariance components]. With covariance = "full" (needs a single q(z|x)), p(z|k) = N(m_k, Sigma_k)
// with a full covariance, parametrised by the Cholesky factor of its precision,
//   Sigma_k^-1 = P_k P_k^T,   P_k = strictly_lower(T_k) + diag(exp(-lv_k / 2)),
// T (K, Z, Z) a parameter of which only the strict lower triangle is read, lv the diagonal model's parameter. T = 0
// is exactly the diagonal model, and the KL needs no inverse or solve (kl_normal_full_pairwise in
// models/distributions.h). The KL of the ELBO and with it the closed-form q(y|x) then measure distance in each
// component's own metric, so a component can follow a class that lies along any direction of z, not only along
// the axes; docs/gmvae.md measures what that does to the clusters. The k-means start sets Sigma_k to the full
// covariance of the cluster's aggregate posterior, Cov(mu) + diag(mean sigma^2), and P_k to the Cholesky factor of
// its inverse. Samples: z = m_k + P_k^-T eps, whose covariance is P_k^-T P_k^-1 = Sigma_k.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/data.h"
#include "models/distributions.h"
#include "models/layers.h"
#include "models/optim.h"
#include "models/safetensors.h"

namespace tapegrad {

struct GmvaeConfig {
  int64_t height = 28, width = 28;
  int64_t components = 10;  // K
  int64_t hidden = 512;     // H, width of every hidden layer
  int64_t layers = 2;       // hidden layers in each network (Rui Shu's recipe: 2)
  int64_t latent = 64;      // Z
  double prior_init = 0.29; // component means start U(-a, a) (a = prior_init); 0: N(0, 1)
  bool z_given_y = true;    // q(z|x, y) (Rui Shu's form); false: q(z|x), one z per x (Note [q(z|x)])
  bool y_closed_form = false; // q(y|x) from q(z|x) and the prior (Note [closed-form q(y|x)]); needs !z_given_y
  // "mlp": dense encoder of z and decoder; "conv": the conv VAE's image halves (add_conv_encoder and
  // add_conv_decoder in models/conv_layers.h) before q(z|x)'s first dense layer and after the decoder's last
  // hidden layer; needs !z_given_y. A q(y|x) network stays dense.
  std::string arch = "mlp";
  // "diag": p(z|y) with diagonal covariances; "full": full covariances (Note [full-covariance components]);
  // needs !z_given_y.
  std::string covariance = "diag";
  DType dtype = DType::f32; // f64 for gradient checks
  std::string model_name() const { return "gmvae"; }
  Metadata to_metadata() const;
  static GmvaeConfig from_metadata(const Metadata& metadata, const std::string& path);
};

struct GmvaeLossOptions {
  double y_weight = 1.0;     // weight of KL(q(y|x) || p(y)) (warm-up multiplies it)
  double free_bits = 0.0;    // lambda of the information constraint, nats (0: off)
  double mi_weight = 1.0;    // weight of I_q(x; y) inside the categorical KL (Note [cluster collapse]); 1: ELBO
  bool standard_normal_prior = false;  // pretraining (Note [pretraining]): the plain VAE's -ELBO, p(z) = N(0, I)
};

class Gmvae : public Module {
 public:
  Gmvae(const GmvaeConfig& config, Generator& generator);
  std::string type_name() const override { return "Gmvae"; }
  std::string describe() const override;
  const GmvaeConfig& config() const { return config_; }

  struct Posterior {
    Var y_logits;      // (B, K)
    Var mu, log_var;   // (B, K, Z): q(z|x, y=k) for every k; (B, 1, Z) when !z_given_y
  };
  Posterior encode(const Var& x);   // x: (B, D) in [0, 1]
  // q(z|x) alone, of the one-z model (!z_given_y, Note [q(z|x)]): mu, log_var (B, 1, Z), without q(y|x).
  std::pair<Var, Var> encode_z(const Var& x);
  Var decode(const Var& z);         // z: (N, Z) -> logits (N, D)
  // p(z|y) for every component, on x's tape: mu, log_var (K, Z). With full covariances log_var is -2 log of
  // the precision factor's diagonal (Note [full-covariance components]).
  std::pair<Var, Var> prior(Tape& tape);
  // The full-covariance components' precision factors P (K, Z, Z), lower triangular.
  Var precision_factor(Tape& tape);
  // KL(q(z|x) || p(z|k)) for every row and component: mu, log_var (B, Z) -> (B, K).
  Var kl_to_components(const Var& mu, const Var& log_var);
  // Overwrites p(z|y)'s parameters (Note [pretraining]); mu and log_var (K, Z); precision_tril (K, Z, Z), only
  // with full covariances, the strict lower triangle of P (the rest is ignored).
  void set_prior(const Tensor& mu, const Tensor& log_var, const Tensor& precision_tril = {});
  // `per_component` codes z ~ p(z|k) for each k in turn: (K * per_component, Z), float32.
  Tensor sample_components(int64_t per_component, Generator& generator);

  struct Terms {
    Var loss;            // () mean over the batch of the weighted negative ELBO
    Var reconstruction;  // (B,) sum_k q(k|x) (-log p(x|z_k))
    Var kl_z;            // (B,) sum_k q(k|x) KL(q(z|x,k) || p(z|k))
    Var kl_y;            // (B,) KL(q(y|x) || p(y))
    Var y_logits;        // (B, K); zeros (uniform) in pretraining, which does not compute q(y|x)
  };
  // -ELBO with z_k = m(x, k) + exp(s(x, k) / 2) * eps[:, k]; eps: (B, K, Z) standard normal noise
  // ((B, 1, Z) when !z_given_y).
  Terms loss(const Var& x, const Tensor& eps, const GmvaeLossOptions& options = {});
  Terms loss(const Var& x, Generator& generator, const GmvaeLossOptions& options = {});

 private:
  GmvaeConfig config_;
  void check_input(const Var& x) const;  // ShapeError unless (B, D)

  Sequential qy_, qz_image_, qz_trunk_, decoder_;  // qz_image_: the conv encoder (arch conv), else empty
  Linear* qz_x_ = nullptr;  // first dense layer of q(z|x,y), x part (with the bias)
  Linear* qz_y_ = nullptr;  // first layer, one-hot y part (no bias)
  Linear* mu_head_ = nullptr;
  Linear* log_var_head_ = nullptr;
  std::vector<std::unique_ptr<Linear>> owned_;
  Parameter* prior_mu_ = nullptr;       // (K, Z)
  Parameter* prior_log_var_ = nullptr;  // (K, Z)
  Parameter* prior_tril_ = nullptr;     // (K, Z, Z), full covariances only: T of Note [full-covariance components]
  Tensor strictly_lower_mask_, identity_mask_;  // (Z, Z) 0/1 masks of precision_factor, full covariances only
};

struct GmvaeTrainOptions {
  GmvaeLossOptions loss;
  int64_t y_warmup_epochs = 0;  // weight of KL(q(y|x) || p(y)) ramps linearly from 0 over this many epochs
  double clip_norm = 0.0;
  uint64_t seed = 1;
};

// One epoch; returns the mean training loss. Bit-reproducible in (seed, epoch), like train_vae_epoch.
double train_gmvae_epoch(Gmvae& model, Optimizer& optimizer, DataLoader& loader, const GmvaeTrainOptions& options,
                         int64_t epoch, const std::function<void(int64_t, double)>& on_step = {});

struct GmvaeEvaluation {
  double elbo = 0, reconstruction = 0, kl_z = 0, kl_y = 0;  // nats per example
  std::vector<int32_t> clusters;                            // argmax_k q(k|x) per example, in data order
  double mean_max_qy = 0;                                   // mean of max_k q(k|x): confidence
};

// How the components start after pretraining (Note [pretraining], Note [spectral start]).
struct ComponentStart {
  std::string method = "kmeans";  // "kmeans": k-means on the codes; "spectral": spectral clustering of them
  int64_t restarts = 10;          // k-means++ starts (on the codes, or on the spectral embedding's rows)
  int64_t neighbours = 10;        // "spectral": k of the kNN graph
  int64_t eigenvectors = 0;       // "spectral": eigenvectors k-means sees (SpectralOptions::eigenvectors; 0: K)
};

// Note [pretraining]: clusters the posterior means mu(x) of `data` (grey-level pixels), by k-means
// (models/clustering.h, `restarts` k-means++ starts, the lowest within-cluster sum of squares kept) or by spectral
// clustering (models/spectral.h), seeded from `seed`; then m_k = the mean code of cluster k, lv_k = log(Var(mu) +
// mean(sigma^2)) over the cluster's images, per dimension (with full covariances the whole matrix Cov(mu) +
// diag(mean(sigma^2)), Note [full-covariance components]). Needs a model with one q(z|x) (!z_given_y). Returns the
// cluster of each image. Throws ValueError on an unknown method.
std::vector<int32_t> initialize_components(Gmvae& model, const Dataset& data, uint64_t seed,
                                           const ComponentStart& start = {});

GmvaeEvaluation evaluate_gmvae(Gmvae& model, const Dataset& data, int64_t batch_size, uint64_t seed, bool binarize);

}  // namespace tapegrad
