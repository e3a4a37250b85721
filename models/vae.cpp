#include "models/vae.h"

#include <cmath>

#include "autograd/arithmetic.h"
#include "autograd/loss.h"
#include "autograd/reduction.h"
#include "models/distributions.h"
#include "models/optim.h"

namespace tapegrad {

namespace {
constexpr double kLog2Pi = 1.8378770664093454836;

int64_t parse_positive(const Metadata& m, const std::string& key, const std::string& path) {
  auto it = m.find(key);
  if (it == m.end()) fail<FileError>(path, ": metadata '", key, "' missing, expected a VAE checkpoint, found none");
  try {
    const long long v = std::stoll(it->second);
    if (v > 0) return v;
  } catch (const std::exception&) {
  }
  fail<FileError>(path, ": metadata '", key, "', expected a positive integer, found '", it->second, "'");
}
}  // namespace

Metadata VaeConfig::to_metadata() const {
  return {{"model", model_name()}, {"arch", arch},
          {"height", std::to_string(height)}, {"width", std::to_string(width)},
          {"hidden", std::to_string(hidden)}, {"latent", std::to_string(latent)}};
}

VaeConfig VaeConfig::from_metadata(const Metadata& m, const std::string& path) {
  VaeConfig c;
  auto arch = m.find("arch");
  if (arch == m.end() || (arch->second != "mlp" && arch->second != "conv"))
    fail<FileError>(path, ": metadata 'arch', expected mlp or conv, found ",
                    arch == m.end() ? std::string("none") : "'" + arch->second + "'",
                    "\nhint: is this a checkpoint of another model (metadata 'model' = '",
                    m.count("model") ? m.at("model") : std::string("?"), "')?");
  c.arch = arch->second;
  c.height = parse_positive(m, "height", path);
  c.width = parse_positive(m, "width", path);
  c.hidden = parse_positive(m, "hidden", path);
  c.latent = parse_positive(m, "latent", path);
  return c;
}

Vae::Vae(const VaeConfig& config, Generator& gen) : config_(config) {
  const int64_t D = config.height * config.width, H = config.hidden, Z = config.latent;
  if (H <= 0 || Z <= 0 || D <= 0)
    fail<ValueError>("Vae: hidden, latent and image sizes must be > 0, got hidden=", H, " latent=", Z, " pixels=", D);
  register_module("encoder", encoder_);
  if (config.arch == "mlp") {
    encoder_.add<Linear>(D, H, gen);
    encoder_.add<Activation>(Activation::Kind::relu);
  } else if (config.arch == "conv") {
    encoder_.add<Linear>(add_conv_encoder(encoder_, config.height, config.width, gen, "Vae"), H, gen);
    encoder_.add<Activation>(Activation::Kind::relu);
  } else {
    fail<ValueError>("Vae: arch must be mlp or conv, got '", config.arch, "'");
  }
  heads_.push_back(std::make_unique<Linear>(H, Z, gen));
  mu_head_ = &register_module("mu", *heads_.back());
  heads_.push_back(std::make_unique<Linear>(H, Z, gen));
  log_var_head_ = &register_module("log_var", *heads_.back());
  register_module("decoder", decoder_);
  decoder_.add<Linear>(Z, H, gen);
  decoder_.add<Activation>(Activation::Kind::relu);
  if (config.arch == "mlp") {
    decoder_.add<Linear>(H, D, gen);
  } else {
    add_conv_decoder(decoder_, H, config.height, config.width, gen, "Vae");
  }
}

std::string Vae::describe() const {
  return cat("arch=", config_.arch, ", image=", config_.height, "x", config_.width, ", hidden=", config_.hidden,
             ", latent=", config_.latent);
}

Vae::Posterior Vae::encode(const Var& x) {
  const int64_t D = config_.height * config_.width;
  if (x.rank() != 2 || x.dim(1) != D) fail<ShapeError>("Vae::encode: x must be (B, ", D, "), got ", x.shape());
  Var h = encoder_(x);
  return {(*mu_head_)(h), (*log_var_head_)(h)};
}

Var Vae::decode(const Var& z) { return decoder_(z); }

Vae::Terms Vae::loss(const Var& x, Generator& gen, double beta) {
  const Posterior q = encode(x);
  Var z = Normal::from_log_var(q.mu, q.log_var).rsample(gen);
  Var logits = decode(z);
  // -log p(x|z): Bernoulli likelihood of every pixel, i.e. BCE with logits, summed over pixels.
  Var reconstruction = binary_cross_entropy_with_logits_row_sum(logits, x);
  Var kl = sum(kl_standard_normal(q.mu, q.log_var), {-1});
  Var per_example = beta == 1.0 ? reconstruction + kl : reconstruction + kl * beta;
  return {mean(per_example), reconstruction, kl};
}

std::vector<std::vector<double>> Vae::log_weights(const Var& x, Generator& gen, int64_t k) {
  Tape& tape = x.tape();
  NoGradGuard no_grad(tape);
  const Posterior q = encode(x);
  const Normal posterior = Normal::from_log_var(q.mu, q.log_var);
  const int64_t B = x.dim(0);
  std::vector<std::vector<double>> out(static_cast<size_t>(k), std::vector<double>(static_cast<size_t>(B)));
  for (int64_t i = 0; i < k; ++i) {
    Var z = posterior.rsample(gen);
    Var log_px_z = -binary_cross_entropy_with_logits_row_sum(decode(z), x);
    Var log_pz = sum(square(z) * -0.5 - 0.5 * kLog2Pi, {-1});
    Var log_qz = sum(posterior.log_prob(z), {-1});
    const Tensor w = (log_px_z + log_pz - log_qz).value();
    for (int64_t b = 0; b < B; ++b) out[i][b] = w.item(b);
  }
  return out;
}

double train_vae_epoch(Vae& model, Optimizer& optimizer, DataLoader& loader, const VaeTrainOptions& options,
                       int64_t epoch, const std::function<void(int64_t, double)>& on_step) {
  model.train();
  loader.start_epoch(epoch);
  // Noise for epoch e comes from its own stream: a resumed run draws exactly what an uninterrupted one would.
  Generator gen(hash64(options.seed, static_cast<uint64_t>(epoch)));
  const std::vector<Parameter*> params = model.parameters();
  Tape tape;
  tape.set_check_finite(options.check_finite);
  Batch batch;
  double loss_sum = 0;
  int64_t step = 0;
  const int64_t steps_per_epoch = loader.batches_per_epoch();
  while (loader.next(batch)) {
    // Linear KL warm-up (Bowman et al. 2016; Sonderby et al. 2016): beta grows from 0 over the first epochs.
    const double global_step = static_cast<double>(epoch * steps_per_epoch + step);
    const double warm = options.kl_warmup_epochs > 0
                            ? std::min(1.0, global_step / static_cast<double>(options.kl_warmup_epochs * steps_per_epoch))
                            : 1.0;
    optimizer.zero_grad();
    const Vae::Terms terms = model.loss(tape.constant(batch.x), gen, options.beta * warm);
    const double loss = optimization_step(tape, terms.loss, optimizer, params, options.clip_norm, epoch, step);
    loss_sum += loss;
    if (on_step) on_step(step, loss);
    ++step;
  }
  return loss_sum / static_cast<double>(std::max<int64_t>(step, 1));
}

VaeEvaluation evaluate_vae(Vae& model, const Dataset& data, int64_t batch_size, uint64_t seed, int64_t iwae_k,
                           bool binarize) {
  DataLoader loader(data, {.batch_size = batch_size, .shuffle = false, .seed = seed, .binarize = binarize});
  loader.start_epoch(0);
  Generator gen(hash64(seed, 0x5eed'e7a1));
  Tape tape;
  Batch batch;
  VaeEvaluation result;
  const int64_t Z = model.config().latent;
  std::vector<double> mu_sum(Z, 0.0), mu_sq(Z, 0.0);
  const bool was_training = model.is_training();
  model.eval();
  while (loader.next(batch)) {
    NoGradGuard no_grad(tape);
    Var x = tape.constant(batch.x);
    const Vae::Terms terms = model.loss(x, gen, 1.0);
    for (int64_t b = 0; b < batch.size; ++b) {  // double sums in data order: reproducible to the bit
      result.reconstruction += terms.reconstruction.value().item(b);
      result.kl += terms.kl.value().item(b);
    }
    const Vae::Posterior q = model.encode(x);
    for (int64_t b = 0; b < batch.size; ++b)
      for (int64_t j = 0; j < Z; ++j) {
        const double m = q.mu.value().item(b * Z + j);
        mu_sum[j] += m;
        mu_sq[j] += m * m;
      }
    if (iwae_k > 0) {
      const auto w = model.log_weights(x, gen, iwae_k);
      for (int64_t b = 0; b < batch.size; ++b) {
        double top = -INFINITY, total = 0;
        for (int64_t i = 0; i < iwae_k; ++i) top = std::max(top, w[i][b]);
        for (int64_t i = 0; i < iwae_k; ++i) total += std::exp(w[i][b] - top);
        result.iwae += top + std::log(total / static_cast<double>(iwae_k));
      }
    }
    tape.reset();
  }
  model.train(was_training);
  const double n = static_cast<double>(data.size());
  result.reconstruction /= n;
  result.kl /= n;
  result.elbo = -(result.reconstruction + result.kl);
  result.iwae /= n;
  for (int64_t j = 0; j < Z; ++j) {
    const double mean = mu_sum[j] / n, variance = mu_sq[j] / n - mean * mean;
    result.posterior_mean_variance.push_back(variance);
    result.active_units += variance > 0.01;
  }
  return result;
}

}  // namespace tapegrad
