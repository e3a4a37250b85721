#include "models/gmvae.h"

#include <algorithm>
#include <cmath>

#include "autograd/activation.h"
#include "autograd/arithmetic.h"
#include "autograd/loss.h"
#include "autograd/reduction.h"
#include "autograd/shape.h"
#include "models/clustering.h"
#include "models/spectral.h"
#include "models/conv_layers.h"

namespace tapegrad {

namespace {

int64_t parse_positive(const Metadata& m, const std::string& key, const std::string& path) {
  auto it = m.find(key);
  if (it == m.end())
    fail<FileError>(path, ": metadata '", key, "' missing, expected a GMVAE checkpoint, found none",
                    "\nhint: is this a checkpoint of another model (metadata 'model' = '",
                    m.count("model") ? m.at("model") : std::string("?"), "')?");
  try {
    const long long v = std::stoll(it->second);
    if (v > 0) return v;
  } catch (const std::exception&) {
  }
  fail<FileError>(path, ": metadata '", key, "', expected a positive integer, found '", it->second, "'");
}

// Hidden layers of width H with ReLU after each: in -> H -> ... -> H (and -> out when out > 0, no activation).
void add_mlp(Sequential& seq, int64_t in, int64_t H, int64_t layers, int64_t out, Generator& gen) {
  for (int64_t i = 0; i < layers; ++i) {
    seq.add<Linear>(i == 0 ? in : H, H, gen);
    seq.add<Activation>(Activation::Kind::relu);
  }
  if (out > 0) seq.add<Linear>(layers > 0 ? H : in, out, gen);
}

// In place: the lower Cholesky factor L of a symmetric positive definite (n, n) row-major matrix, A = L L^T
// (the upper triangle is zeroed).
void cholesky_lower(std::vector<double>& a, int64_t n, const char* who) {
  for (int64_t j = 0; j < n; ++j) {
    double pivot = a[j * n + j];
    for (int64_t p = 0; p < j; ++p) pivot -= a[j * n + p] * a[j * n + p];
    if (!(pivot > 0)) fail<ValueError>(who, ": covariance not positive definite (pivot ", pivot, " at ", j, ")");
    a[j * n + j] = std::sqrt(pivot);
    for (int64_t i = j + 1; i < n; ++i) {
      double t = a[i * n + j];
      for (int64_t p = 0; p < j; ++p) t -= a[i * n + p] * a[j * n + p];
      a[i * n + j] = t / a[j * n + j];
    }
    for (int64_t i = 0; i < j; ++i) a[i * n + j] = 0;
  }
}

// The lower Cholesky factor of the inverse of a symmetric positive definite (n, n) matrix: P with P P^T = A^-1.
std::vector<double> precision_cholesky(std::vector<double> a, int64_t n, const char* who) {
  cholesky_lower(a, n, who);                               // A = L L^T, so A^-1 = L^-T L^-1
  std::vector<double> inverse_l(static_cast<size_t>(n * n), 0.0);  // L^-1, lower, by forward substitution
  for (int64_t col = 0; col < n; ++col)
    for (int64_t i = col; i < n; ++i) {
      double t = i == col ? 1.0 : 0.0;
      for (int64_t p = col; p < i; ++p) t -= a[i * n + p] * inverse_l[p * n + col];
      inverse_l[i * n + col] = t / a[i * n + i];
    }
  std::vector<double> precision(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = std::max(i, j); p < n; ++p) precision[i * n + j] += inverse_l[p * n + i] * inverse_l[p * n + j];
  cholesky_lower(precision, n, who);
  return precision;
}

}  // namespace

Metadata GmvaeConfig::to_metadata() const {
  Metadata m = {{"model", model_name()},
          {"height", std::to_string(height)},
          {"width", std::to_string(width)},
          {"components", std::to_string(components)},
          {"hidden", std::to_string(hidden)},
          {"layers", std::to_string(layers)},
          {"latent", std::to_string(latent)},
          {"z_given", z_given_y ? "xy" : "x"}};
  if (y_closed_form) m["q_y"] = "closed_form";  // absent: the q(y|x) network, as in checkpoints that predate it
  if (arch != "mlp") m["arch"] = arch;          // absent: mlp, as in checkpoints that predate the option
  if (covariance != "diag") m["covariance"] = covariance;  // absent: diag, likewise
  return m;
}

GmvaeConfig GmvaeConfig::from_metadata(const Metadata& m, const std::string& path) {
  GmvaeConfig c;
  c.height = parse_positive(m, "height", path);
  c.width = parse_positive(m, "width", path);
  c.components = parse_positive(m, "components", path);
  c.hidden = parse_positive(m, "hidden", path);
  c.layers = parse_positive(m, "layers", path);
  c.latent = parse_positive(m, "latent", path);
  c.z_given_y = !m.count("z_given") || m.at("z_given") == "xy";
  c.y_closed_form = m.count("q_y") && m.at("q_y") == "closed_form";
  c.arch = m.count("arch") ? m.at("arch") : "mlp";
  if (c.arch != "mlp" && c.arch != "conv")
    fail<FileError>(path, ": metadata 'arch', expected mlp or conv, found '", c.arch, "'");
  c.covariance = m.count("covariance") ? m.at("covariance") : "diag";
  if (c.covariance != "diag" && c.covariance != "full")
    fail<FileError>(path, ": metadata 'covariance', expected diag or full, found '", c.covariance, "'");
  return c;
}

Gmvae::Gmvae(const GmvaeConfig& config, Generator& gen) : config_(config) {
  const int64_t D = config.height * config.width, H = config.hidden, Z = config.latent, K = config.components;
  if (D <= 0 || H <= 0 || Z <= 0 || K <= 1 || config.layers < 1)
    fail<ValueError>("Gmvae: sizes must be > 0 with components >= 2 and layers >= 1, got pixels=", D, " hidden=", H,
                     " latent=", Z, " components=", K, " layers=", config.layers);
  if (config.y_closed_form && config.z_given_y)
    fail<ValueError>("Gmvae: a closed-form q(y|x) needs q(z|x) (z_given x), got q(z|x, y)");
  if (config.arch != "mlp" && config.arch != "conv")
    fail<ValueError>("Gmvae: arch must be mlp or conv, got '", config.arch, "'");
  if (config.covariance != "diag" && config.covariance != "full")
    fail<ValueError>("Gmvae: covariance must be diag or full, got '", config.covariance, "'");
  if (config.covariance == "full" && config.z_given_y)
    fail<ValueError>("Gmvae: full-covariance components need q(z|x) (z_given x), got q(z|x, y)");
  const bool conv = config.arch == "conv";
  if (conv && config.z_given_y) fail<ValueError>("Gmvae: the conv architecture needs q(z|x) (z_given x), got q(z|x, y)");
  if (!config.y_closed_form) {
    register_module("qy", qy_);
    add_mlp(qy_, D, H, config.layers, K, gen);
  }
  // q(z|x, y): Linear(D + K, H) split into its x and y columns (same initial distribution: fan_in = D + K would
  // differ slightly; PyTorch's Linear(D + K, H) bound 1/sqrt(D + K) is used for both parts).
  int64_t qz_in = D;
  if (conv) {
    register_module("qz_image", qz_image_);
    qz_in = add_conv_encoder(qz_image_, config.height, config.width, gen, "Gmvae");
  }
  owned_.push_back(std::make_unique<Linear>(qz_in, H, gen));
  qz_x_ = &register_module("qz_x", *owned_.back());
  if (config.z_given_y) {
    owned_.push_back(std::make_unique<Linear>(K, H, gen, false));
    qz_y_ = &register_module("qz_y", *owned_.back());
    const double bound = 1.0 / std::sqrt(static_cast<double>(D + K));
    for (Parameter* p : {&qz_x_->weight(), qz_x_->bias(), &qz_y_->weight()}) gen.uniform(p->value, -bound, bound);
  }
  register_module("qz_trunk", qz_trunk_);
  qz_trunk_.add<Activation>(Activation::Kind::relu);
  add_mlp(qz_trunk_, H, H, config.layers - 1, 0, gen);
  owned_.push_back(std::make_unique<Linear>(H, Z, gen));
  mu_head_ = &register_module("qz_mu", *owned_.back());
  owned_.push_back(std::make_unique<Linear>(H, Z, gen));
  log_var_head_ = &register_module("qz_log_var", *owned_.back());
  Tensor prior_mu = Tensor::empty({K, Z});
  if (config.prior_init > 0) gen.uniform(prior_mu, -config.prior_init, config.prior_init);
  else gen.normal(prior_mu);
  prior_mu_ = &register_parameter("prior_mu", prior_mu);
  prior_log_var_ = &register_parameter("prior_log_var", Tensor::zeros({K, Z}));
  if (config.covariance == "full") {
    prior_tril_ = &register_parameter("prior_tril", Tensor::zeros({K, Z, Z}));
    strictly_lower_mask_ = Tensor::zeros({Z, Z}, config.dtype);  // built once: precision_factor runs every step
    identity_mask_ = Tensor::zeros({Z, Z}, config.dtype);
    for (int64_t i = 0; i < Z; ++i) {
      identity_mask_.set_item(i * Z + i, 1.0);
      for (int64_t j = 0; j < i; ++j) strictly_lower_mask_.set_item(i * Z + j, 1.0);
    }
  }
  register_module("decoder", decoder_);
  add_mlp(decoder_, Z, H, config.layers, conv ? 0 : D, gen);
  if (conv) add_conv_decoder(decoder_, H, config.height, config.width, gen, "Gmvae");
  if (config.dtype != DType::f32)
    for (Parameter* p : parameters()) {
      p->value = p->value.to(config.dtype);
      p->grad = Tensor::zeros(p->value.shape(), config.dtype);
    }
}

std::string Gmvae::describe() const {
  return cat("arch=", config_.arch, ", components=", config_.components, ", image=", config_.height, "x", config_.width,
             ", hidden=", config_.hidden, "x", config_.layers, ", latent=", config_.latent,
             config_.y_closed_form ? ", q(y|x) closed-form" : "",
             config_.covariance == "full" ? ", full-covariance components" : "");
}

void Gmvae::check_input(const Var& x) const {
  const int64_t D = config_.height * config_.width;
  if (x.rank() != 2 || x.dim(1) != D) fail<ShapeError>("Gmvae: x must be (B, ", D, "), got ", x.shape());
}

std::pair<Var, Var> Gmvae::encode_z(const Var& x) {
  check_input(x);
  if (config_.z_given_y) fail<ValueError>("Gmvae::encode_z: needs q(z|x) (z_given x), got q(z|x, y)");
  const int64_t B = x.dim(0), Z = config_.latent;
  Var h = qz_trunk_((*qz_x_)(config_.arch == "conv" ? qz_image_(x) : x));
  return {reshape((*mu_head_)(h), {B, 1, Z}), reshape((*log_var_head_)(h), {B, 1, Z})};
}

Gmvae::Posterior Gmvae::encode(const Var& x) {
  check_input(x);
  const int64_t B = x.dim(0), K = config_.components, H = config_.hidden, Z = config_.latent;
  if (!config_.z_given_y) {  // Note [q(z|x)]
    auto [mu, log_var] = encode_z(x);
    if (!config_.y_closed_form) return {qy_(x), mu, log_var};
    // Note [closed-form q(y|x)]: log q(k|x) = -KL(q(z|x) || p(z|k)) + const
    return {-kl_to_components(reshape(mu, {B, Z}), reshape(log_var, {B, Z})), mu, log_var};
  }
  Var logits = qy_(x);
  Tape& tape = x.tape();
  // Row k of the identity through qz_y is W_y onehot(k): the y contribution of every component, (K, H).
  Tensor eye = Tensor::zeros({K, K}, config_.dtype);
  for (int64_t k = 0; k < K; ++k) eye.set_item(k * K + k, 1.0);
  Var hy = reshape((*qz_y_)(tape.constant(eye)), {1, K, H});
  Var hx = reshape((*qz_x_)(x), {B, 1, H});
  Var h = qz_trunk_(reshape(hx + hy, {B * K, H}));
  return {logits, reshape((*mu_head_)(h), {B, K, Z}), reshape((*log_var_head_)(h), {B, K, Z})};
}

Var Gmvae::decode(const Var& z) { return decoder_(z); }

std::pair<Var, Var> Gmvae::prior(Tape& tape) { return {tape.param(*prior_mu_), tape.param(*prior_log_var_)}; }

Var Gmvae::precision_factor(Tape& tape) {
  if (!prior_tril_) fail<ValueError>("Gmvae::precision_factor: needs full-covariance components, got diag");
  const int64_t K = config_.components, Z = config_.latent;
  // P_k = strictly_lower(T_k) + diag(exp(-lv_k / 2)) (Note [full-covariance components])
  return tape.param(*prior_tril_) * tape.constant(strictly_lower_mask_) +
         reshape(exp(tape.param(*prior_log_var_) * -0.5), {K, Z, 1}) * tape.constant(identity_mask_);
}

Var Gmvae::kl_to_components(const Var& mu, const Var& log_var) {
  auto [prior_mu, prior_log_var] = prior(mu.tape());
  if (prior_tril_) return kl_normal_full_pairwise(mu, log_var, prior_mu, precision_factor(mu.tape()));
  return kl_normal_pairwise(mu, log_var, prior_mu, prior_log_var);  // Note [pairwise Gaussian KL]
}

void Gmvae::set_prior(const Tensor& mu, const Tensor& log_var, const Tensor& precision_tril) {
  const int64_t K = config_.components, Z = config_.latent;
  const Shape expected{K, Z};
  if (mu.shape() != expected || log_var.shape() != expected)
    fail<ShapeError>("Gmvae::set_prior: expected mu and log_var of shape ", expected, ", got ", mu.shape(), " and ",
                     log_var.shape());
  if (precision_tril.defined() != (prior_tril_ != nullptr) ||
      (prior_tril_ && precision_tril.shape() != Shape{K, Z, Z}))
    fail<ShapeError>("Gmvae::set_prior: expected ", prior_tril_ ? cat("precision_tril of shape ", Shape{K, Z, Z}) :
                     std::string("no precision_tril (diagonal covariances)"), ", got ",
                     precision_tril.defined() ? cat(precision_tril.shape()) : std::string("none"));
  prior_mu_->value = mu.to(config_.dtype);
  prior_log_var_->value = log_var.to(config_.dtype);
  if (prior_tril_) prior_tril_->value = precision_tril.to(config_.dtype);
}

Tensor Gmvae::sample_components(int64_t per_component, Generator& gen) {
  const int64_t K = config_.components, Z = config_.latent;
  Tape tape;
  NoGradGuard no_grad(tape);
  const Tensor mu = prior_mu_->value;
  // z = m_k + P_k^-T eps: back substitution in P_k^T u = eps (upper triangular); P_k = diag(exp(-lv_k / 2)) for
  // diagonal covariances, where this is m_k + exp(lv_k / 2) eps.
  const Tensor P = prior_tril_ ? precision_factor(tape).value() : Tensor{};
  const Tensor log_var = prior_log_var_->value;
  Tensor codes = Tensor::empty({K * per_component, Z});
  gen.normal(codes);
  std::vector<double> u(static_cast<size_t>(Z));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < per_component; ++i) {
      const int64_t row = (k * per_component + i) * Z;
      for (int64_t j = Z - 1; j >= 0; --j) {
        if (!prior_tril_) {
          u[j] = std::exp(0.5 * log_var.item(k * Z + j)) * codes.item(row + j);
          continue;
        }
        double t = codes.item(row + j);
        for (int64_t l = j + 1; l < Z; ++l) t -= P.item((k * Z + l) * Z + j) * u[l];
        u[j] = t / P.item((k * Z + j) * Z + j);
      }
      for (int64_t j = 0; j < Z; ++j) codes.set_item(row + j, mu.item(k * Z + j) + u[j]);
    }
  return codes;
}

Gmvae::Terms Gmvae::loss(const Var& x, Generator& gen, const GmvaeLossOptions& options) {
  Tensor eps = Tensor::empty({x.dim(0), config_.z_given_y ? config_.components : 1, config_.latent}, config_.dtype);
  gen.normal(eps);
  return loss(x, eps, options);
}

Gmvae::Terms Gmvae::loss(const Var& x, const Tensor& eps, const GmvaeLossOptions& options) {
  const int64_t B = x.dim(0), K = config_.components, Z = config_.latent, D = config_.height * config_.width;
  const int64_t Kz = config_.z_given_y ? K : 1;  // z samples per example
  if (eps.shape() != Shape{B, Kz, Z})
    fail<ShapeError>("Gmvae::loss: eps must be (", B, ", ", Kz, ", ", Z, "), got ", eps.shape());
  Tape& tape = x.tape();
  if (options.standard_normal_prior && config_.z_given_y)
    fail<ValueError>("Gmvae::loss: pretraining with p(z) = N(0, I) needs q(z|x) (z_given x)");
  Posterior q;
  if (options.standard_normal_prior) {  // pretraining leaves q(y|x) out: y plays no part in its loss
    auto [mu, log_var] = encode_z(x);
    q = {tape.constant(Tensor::zeros({B, K}, config_.dtype)), mu, log_var};
  } else {
    q = encode(x);
  }
  Var z = q.mu + exp(q.log_var * 0.5) * tape.constant(eps);                     // (B, Kz, Z)
  Var logits = decode(reshape(z, {B * Kz, Z}));                                  // (B*Kz, D)
  // x is read through broadcasting, (B, 1, D) against (B, Kz, D): not copied per component.
  Var nll = binary_cross_entropy_with_logits_row_sum(reshape(logits, {B, Kz, D}), reshape(x, {B, 1, D}));  // (B, Kz)
  if (options.standard_normal_prior) {  // Note [pretraining]: the plain VAE
    Var kl = reshape(sum(kl_standard_normal(q.mu, q.log_var), {-1}), {B});
    Var reconstruction = reshape(nll, {B});
    Var zeros = tape.constant(Tensor::zeros({B}, config_.dtype));
    return {mean(reconstruction + kl), reconstruction, kl, zeros, q.y_logits};
  }
  Var kl_z;                                                                      // (B, K)
  if (config_.y_closed_form) {  // the closed-form logits are -KL already (Note [closed-form q(y|x)])
    kl_z = -q.y_logits;
  } else if (Kz == 1) {         // every component against the one q(z|x)
    kl_z = kl_to_components(reshape(q.mu, {B, Z}), reshape(q.log_var, {B, Z}));
  } else {                      // q(z|x, k) against p(z|k), component by component
    auto [prior_mu, prior_log_var] = prior(tape);
    kl_z = sum(kl_divergence(Normal::from_log_var(q.mu, q.log_var),
                             Normal::from_log_var(reshape(prior_mu, {1, K, Z}), reshape(prior_log_var, {1, K, Z}))),
               {-1});
  }
  Var log_qy = log_softmax(q.y_logits, -1);
  Var qy = exp(log_qy);
  Var kl_y = sum(qy * (log_qy + std::log(static_cast<double>(K))), {-1});       // (B,)
  Var reconstruction = sum(qy * nll, {-1}), kl_z_weighted = sum(qy * kl_z, {-1});
  Var loss = mean(reconstruction + kl_z_weighted);
  Var kl_y_mean = mean(kl_y);
  if (options.mi_weight != 1.0) {  // I + KL(q(y) || p(y)) -> mi_weight * I + KL(q(y) || p(y))
    Var q_marginal = mean(qy, {0});
    Var kl_marginal = sum(q_marginal * (log(q_marginal) + std::log(static_cast<double>(K))));
    kl_y_mean = (kl_y_mean - kl_marginal) * options.mi_weight + kl_marginal;
  }
  // Information constraint (Note [cluster collapse]): below lambda the term is the constant lambda.
  if (options.free_bits > 0 && kl_y_mean.item() < options.free_bits)
    kl_y_mean = tape.constant(Tensor::scalar(options.free_bits, config_.dtype));
  if (options.y_weight != 0) loss = loss + kl_y_mean * options.y_weight;
  return {loss, reconstruction, kl_z_weighted, kl_y, q.y_logits};
}

double train_gmvae_epoch(Gmvae& model, Optimizer& optimizer, DataLoader& loader, const GmvaeTrainOptions& options,
                         int64_t epoch, const std::function<void(int64_t, double)>& on_step) {
  model.train();
  loader.start_epoch(epoch);
  Generator gen(hash64(options.seed, static_cast<uint64_t>(epoch)));  // a resumed run draws the same noise
  const std::vector<Parameter*> params = model.parameters();
  Tape tape;
  Batch batch;
  double loss_sum = 0;
  int64_t step = 0;
  const int64_t steps_per_epoch = loader.batches_per_epoch();
  while (loader.next(batch)) {
    GmvaeLossOptions loss_options = options.loss;
    if (options.y_warmup_epochs > 0) {
      const double t = static_cast<double>((epoch - 1) * steps_per_epoch + step) /
                       static_cast<double>(options.y_warmup_epochs * steps_per_epoch);
      loss_options.y_weight *= std::clamp(t, 0.0, 1.0);
    }
    optimizer.zero_grad();
    Var x = tape.constant(model.config().dtype == DType::f32 ? batch.x : batch.x.to(model.config().dtype));
    const Gmvae::Terms terms = model.loss(x, gen, loss_options);
    const double loss = optimization_step(tape, terms.loss, optimizer, params, options.clip_norm, epoch, step);
    loss_sum += loss;
    if (on_step) on_step(step, loss);
    ++step;
  }
  return loss_sum / static_cast<double>(std::max<int64_t>(step, 1));
}

std::vector<int32_t> initialize_components(Gmvae& model, const Dataset& data, uint64_t seed,
                                           const ComponentStart& start) {
  const GmvaeConfig& c = model.config();
  if (c.z_given_y) fail<ValueError>("initialize_components: needs q(z|x) (z_given x), got q(z|x, y)");
  if (start.method != "kmeans" && start.method != "spectral")
    fail<ValueError>("initialize_components: method must be kmeans or spectral, found '", start.method, "'");
  const int64_t N = data.size(), K = c.components, Z = c.latent;
  if (N < K) fail<ValueError>("initialize_components: ", K, " components need >= ", K, " images, got ", N);
  DataLoader loader(data, {.batch_size = 500, .shuffle = false, .seed = seed});
  loader.start_epoch(0);
  const bool was_training = model.is_training();
  model.eval();
  std::vector<double> codes, variances;  // mu(x) and exp(log_var(x)), (N, Z)
  codes.reserve(static_cast<size_t>(N * Z));
  variances.reserve(static_cast<size_t>(N * Z));
  Tape tape;
  Batch batch;
  while (loader.next(batch)) {
    NoGradGuard no_grad(tape);
    const auto [mu, log_var] = model.encode_z(tape.constant(batch.x.to(c.dtype)));
    for (int64_t i = 0; i < batch.size * Z; ++i) {
      codes.push_back(mu.value().item(i));
      variances.push_back(std::exp(log_var.value().item(i)));
    }
    tape.reset();
  }
  model.train(was_training);
  KMeansResult clusters;
  if (start.method == "kmeans")
    clusters = kmeans(codes, N, Z, K, hash64(seed, 0x6b6d65616e73), start.restarts);
  else
    clusters.assignment = spectral_clustering(codes, N, Z, K, seed,
                                              {.neighbours = start.neighbours, .eigenvectors = start.eigenvectors,
                                               .restarts = start.restarts});
  std::vector<int64_t> counts(static_cast<size_t>(K), 0);
  for (const int32_t k : clusters.assignment) ++counts[k];
  if (start.method == "spectral") {
    // The clusters' mean codes (k-means' centroids are these already).
    clusters.centroids.assign(static_cast<size_t>(K * Z), 0.0);
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < Z; ++j) clusters.centroids[clusters.assignment[i] * Z + j] += codes[i * Z + j];
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < Z; ++j)
        clusters.centroids[k * Z + j] /= static_cast<double>(std::max<int64_t>(counts[k], 1));
  }
  Tensor prior_mu = Tensor::empty({K, Z}, DType::f64), prior_log_var = Tensor::empty({K, Z}, DType::f64);
  // The variance of cluster k's aggregate posterior, the mixture of its N(mu_i, sigma_i^2): Var_i(mu_i) +
  // mean_i(sigma_i^2). The second part matters: on the latent dimensions the VAE leaves unused, mu_i ~ 0 for all
  // x (a variance of the codes near 0) while sigma_i^2 ~ 1, and a component that tight would make KL_z and the
  // closed-form q(y|x) blow up on them.
  std::vector<double> spread(static_cast<size_t>(K * Z), 0.0);
  for (int64_t i = 0; i < N; ++i) {
    const int32_t k = clusters.assignment[i];
    for (int64_t j = 0; j < Z; ++j)
      spread[k * Z + j] += std::pow(codes[i * Z + j] - clusters.centroids[k * Z + j], 2) + variances[i * Z + j];
  }
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < Z; ++j) {
      prior_mu.set_item(k * Z + j, clusters.centroids[k * Z + j]);
      const double variance = counts[k] > 0 ? spread[k * Z + j] / static_cast<double>(counts[k]) : 1.0;
      prior_log_var.set_item(k * Z + j, std::log(variance));
    }
  if (c.covariance != "full") {
    model.set_prior(prior_mu, prior_log_var);
    return clusters.assignment;
  }
  // Note [full-covariance components]: Sigma_k = Cov(mu) + diag(mean(sigma^2)) over the cluster's images, and
  // P_k = chol(Sigma_k^-1); lv_k = -2 log diag(P_k) replaces the diagonal start above.
  Tensor precision_tril = Tensor::zeros({K, Z, Z}, DType::f64);
  for (int64_t k = 0; k < K; ++k) {
    std::vector<double> sigma(static_cast<size_t>(Z * Z), 0.0);
    for (int64_t i = 0; i < N; ++i) {
      if (clusters.assignment[i] != k) continue;
      for (int64_t a = 0; a < Z; ++a) {
        const double da = codes[i * Z + a] - clusters.centroids[k * Z + a];
        sigma[a * Z + a] += variances[i * Z + a];
        for (int64_t b = 0; b < Z; ++b) sigma[a * Z + b] += da * (codes[i * Z + b] - clusters.centroids[k * Z + b]);
      }
    }
    for (double& v : sigma) v /= static_cast<double>(std::max<int64_t>(counts[k], 1));
    if (counts[k] == 0)
      for (int64_t a = 0; a < Z; ++a) sigma[a * Z + a] = 1.0;
    const std::vector<double> P = precision_cholesky(sigma, Z, "initialize_components");
    for (int64_t a = 0; a < Z; ++a) {
      prior_log_var.set_item(k * Z + a, -2.0 * std::log(P[a * Z + a]));
      for (int64_t b = 0; b < a; ++b) precision_tril.set_item((k * Z + a) * Z + b, P[a * Z + b]);
    }
  }
  model.set_prior(prior_mu, prior_log_var, precision_tril);
  return clusters.assignment;
}

GmvaeEvaluation evaluate_gmvae(Gmvae& model, const Dataset& data, int64_t batch_size, uint64_t seed, bool binarize) {
  DataLoader loader(data, {.batch_size = batch_size, .shuffle = false, .seed = seed, .binarize = binarize});
  loader.start_epoch(0);
  Generator gen(hash64(seed, 0x5eed'e7a1));
  Tape tape;
  Batch batch;
  GmvaeEvaluation r;
  const int64_t K = model.config().components;
  const bool was_training = model.is_training();
  model.eval();
  while (loader.next(batch)) {
    NoGradGuard no_grad(tape);
    Var x = tape.constant(model.config().dtype == DType::f32 ? batch.x : batch.x.to(model.config().dtype));
    const Gmvae::Terms t = model.loss(x, gen);
    const Tensor logits = t.y_logits.value();
    for (int64_t b = 0; b < batch.size; ++b) {  // double sums in data order: reproducible to the bit
      r.reconstruction += t.reconstruction.value().item(b);
      r.kl_z += t.kl_z.value().item(b);
      r.kl_y += t.kl_y.value().item(b);
      int32_t best = 0;
      double total = 0;
      for (int64_t k = 0; k < K; ++k) {
        if (logits.item(b * K + k) > logits.item(b * K + best)) best = static_cast<int32_t>(k);
      }
      for (int64_t k = 0; k < K; ++k) total += std::exp(logits.item(b * K + k) - logits.item(b * K + best));
      r.mean_max_qy += 1.0 / total;
      r.clusters.push_back(best);
    }
    tape.reset();
  }
  model.train(was_training);
  const double n = static_cast<double>(data.size());
  r.reconstruction /= n;
  r.kl_z /= n;
  r.kl_y /= n;
  r.mean_max_qy /= n;
  r.elbo = -(r.reconstruction + r.kl_z + r.kl_y);
  return r;
}

}  // namespace tapegrad
