#include "models/m2.h"

#include <cmath>
#include <numeric>

#include "autograd/arithmetic.h"
#include "autograd/loss.h"
#include "autograd/reduction.h"
#include "autograd/shape.h"
#include "models/conv_layers.h"
#include "models/distributions.h"

namespace tapegrad {

namespace {

int64_t parse_positive(const Metadata& m, const std::string& key, const std::string& path) {
  auto it = m.find(key);
  if (it == m.end()) fail<FileError>(path, ": metadata '", key, "' missing, expected an M2 checkpoint, found none");
  try {
    const long long v = std::stoll(it->second);
    if (v > 0) return v;
  } catch (const std::exception&) {
  }
  fail<FileError>(path, ": metadata '", key, "', expected a positive integer, found '", it->second, "'");
}

std::vector<int64_t> hidden_sizes(const M2Config& c, int64_t in, int64_t out) {
  std::vector<int64_t> sizes{in};
  for (int64_t i = 0; i < c.hidden_layers; ++i) sizes.push_back(c.hidden);
  sizes.push_back(out);
  return sizes;
}

}  // namespace

Metadata M2Config::to_metadata() const {
  return {{"model", "m2"}, {"height", std::to_string(height)}, {"width", std::to_string(width)},
          {"classes", std::to_string(classes)}, {"hidden", std::to_string(hidden)},
          {"hidden_layers", std::to_string(hidden_layers)}, {"latent", std::to_string(latent)},
          {"activation", activation}, {"classifier", classifier}};
}

M2Config M2Config::from_metadata(const Metadata& m, const std::string& path) {
  auto model = m.find("model");
  if (model == m.end() || model->second != "m2")
    fail<FileError>(path, ": metadata 'model', expected m2, found ",
                    model == m.end() ? std::string("none") : "'" + model->second + "'");
  M2Config c;
  c.height = parse_positive(m, "height", path);
  c.width = parse_positive(m, "width", path);
  c.classes = parse_positive(m, "classes", path);
  c.hidden = parse_positive(m, "hidden", path);
  c.hidden_layers = parse_positive(m, "hidden_layers", path);
  c.latent = parse_positive(m, "latent", path);
  c.activation = m.count("activation") ? m.at("activation") : "softplus";
  c.classifier = m.count("classifier") ? m.at("classifier") : "mlp";  // absent in checkpoints before the option
  if (c.classifier != "mlp" && c.classifier != "conv")
    fail<FileError>(path, ": metadata 'classifier', expected mlp or conv, found '", c.classifier, "'");
  return c;
}

M2::M2(const M2Config& c, Generator& gen)
    : config_(c),
      encoder_x_(c.pixels(), c.hidden, gen),
      encoder_y_(c.classes, c.hidden, gen, /*bias=*/false),
      mu_head_(c.hidden, c.latent, gen),
      log_var_head_(c.hidden, c.latent, gen),
      activation_(Activation::parse(c.activation)) {
  if (c.hidden <= 0 || c.latent <= 0 || c.classes < 2 || c.hidden_layers < 1)
    fail<ValueError>("M2: hidden, latent, hidden_layers must be > 0 and classes >= 2, got hidden=", c.hidden,
                     " latent=", c.latent, " hidden_layers=", c.hidden_layers, " classes=", c.classes);
  if (c.classifier != "mlp" && c.classifier != "conv")
    fail<ValueError>("M2: classifier must be mlp or conv, got '", c.classifier, "'");
  const Activation::Kind kind = Activation::parse(c.activation);
  register_module("classifier", classifier_);
  const int64_t classifier_in =
      c.classifier == "conv" ? add_conv_encoder(classifier_, c.height, c.width, gen, "M2") : c.pixels();
  build_mlp(classifier_, hidden_sizes(c, classifier_in, c.classes), gen, kind);
  register_module("encoder_x", encoder_x_);
  register_module("encoder_y", encoder_y_);
  register_module("encoder", encoder_body_);
  encoder_body_.add<Activation>(kind);
  for (int64_t i = 1; i < c.hidden_layers; ++i) {
    encoder_body_.add<Linear>(c.hidden, c.hidden, gen);
    encoder_body_.add<Activation>(kind);
  }
  register_module("mu", mu_head_);
  register_module("log_var", log_var_head_);
  register_module("decoder", decoder_);
  build_mlp(decoder_, hidden_sizes(c, c.latent + c.classes, c.pixels()), gen, kind);
  if (c.dtype != DType::f32)
    for (Parameter* p : parameters()) {
      p->value = p->value.to(c.dtype);
      p->grad = Tensor::zeros(p->value.shape(), c.dtype);
    }
}

std::string M2::describe() const {
  return cat("image=", config_.height, "x", config_.width, ", classes=", config_.classes, ", hidden=", config_.hidden,
             "x", config_.hidden_layers, ", latent=", config_.latent, ", activation=", config_.activation,
             ", classifier=", config_.classifier);
}

Var M2::classify(const Var& x) {
  if (x.rank() != 2 || x.dim(1) != config_.pixels())
    fail<ShapeError>("M2::classify: x must be (B, ", config_.pixels(), "), got ", x.shape());
  return classifier_(x);
}

// Note [shared x features]: the encoder's first layer on [x, y] is W [x; y] + b = (W_x x + b) + W_y y. In the
// enumeration of -U every image appears K times with K different y; the (B, D) x (D, H) product, the largest
// of the encoder, is computed once and repeated, and only the cheap y part differs per class.
Var M2::x_features(const Var& x) {
  if (x.rank() != 2 || x.dim(1) != config_.pixels())
    fail<ShapeError>("M2::encode: x must be (B, ", config_.pixels(), "), got ", x.shape());
  return encoder_x_(x);
}

M2::Posterior M2::encode_features(const Var& features, const Var& y) {
  if (y.rank() != 2 || y.dim(1) != config_.classes || y.dim(0) != features.dim(0))
    fail<ShapeError>("M2::encode: y must be one-hot (", features.dim(0), ", ", config_.classes, "), got ", y.shape());
  Var h = encoder_body_(features + encoder_y_(y));
  return {mu_head_(h), log_var_head_(h)};
}

Var M2::decode(const Var& z, const Var& y) { return decoder_(concat({z, y}, 1)); }

Var M2::neg_elbo(const Var& x, const Var& features, const Var& y, const Tensor& eps) {
  const Posterior q = encode_features(features, y);
  Var z = q.mu + exp(q.log_var * 0.5) * x.tape().constant(eps);
  Var reconstruction = sum(binary_cross_entropy_with_logits(decode(z, y), x, Reduction::none), {-1});
  Var kl = sum(kl_standard_normal(q.mu, q.log_var), {-1});
  // -log p(y) = log K for the uniform prior: a constant, kept so that the value is the bound itself.
  return reconstruction + kl + std::log(static_cast<double>(config_.classes));
}

Var M2::neg_unlabelled_bound(const Var& x, const Tensor& eps) {
  Tape& tape = x.tape();
  const int64_t B = x.dim(0), K = config_.classes;
  if (eps.rank() != 2 || eps.dim(0) != K * B || eps.dim(1) != config_.latent)
    fail<ShapeError>("M2::neg_unlabelled_bound: eps must be (", K * B, ", ", config_.latent, "), got ", eps.shape());
  // Row k * B + b: image b with class k.
  std::vector<int64_t> image(static_cast<size_t>(K * B)), label(static_cast<size_t>(K * B));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t b = 0; b < B; ++b) {
      image[k * B + b] = b;
      label[k * B + b] = k;
    }
  Var y = one_hot(tape, label, K, config_.dtype);
  Var x_all = index_select(x, 0, image);
  Var features = index_select(x_features(x), 0, image);  // Note [shared x features]
  Var neg_l = transpose(reshape(neg_elbo(x_all, features, y, eps), {K, B}), 0, 1);  // (B, K)
  Var log_q = log_softmax(classify(x), 1);
  // sum_y q (-L) - H(q) = sum_y q (-L + log q).
  return sum(exp(log_q) * (neg_l + log_q), {1});
}

M2::Terms M2::loss(const Var& x_l, std::span<const int32_t> labels, const Var& x_u, Generator& gen,
                   const LossWeights& w) {
  Tape& tape = x_l.tape();
  const int64_t B_l = x_l.dim(0), B_u = x_u.dim(0);
  if (static_cast<int64_t>(labels.size()) != B_l)
    fail<ShapeError>("M2::loss: labels must have one entry per labelled image, got ", labels.size(), " for ", B_l);
  Terms t;
  Var total = tape.constant(Tensor::zeros({}, config_.dtype));
  if (B_l > 0) {
    std::vector<int64_t> y64(labels.begin(), labels.end());
    Var y = one_hot(tape, y64, config_.classes, config_.dtype);
    t.labelled = neg_elbo(x_l, x_features(x_l), y, m2_noise(*this, B_l, gen));
    t.classification = cross_entropy(classify(x_l), labels, Reduction::none);
    total = mean(t.labelled) * w.labelled + mean(t.classification) * w.classification;
  }
  if (B_u > 0) {
    t.unlabelled = neg_unlabelled_bound(x_u, m2_noise(*this, config_.classes * B_u, gen));
    total = total + mean(t.unlabelled) * w.unlabelled;
  }
  t.loss = total;
  return t;
}

Tensor m2_noise(const M2& model, int64_t rows, Generator& gen) {
  Tensor eps = Tensor::empty({rows, model.config().latent}, model.config().dtype);
  gen.normal(eps);
  return eps;
}

double train_m2_epoch(M2& model, Optimizer& optimizer, DataLoader& labelled, DataLoader& unlabelled,
                      const M2TrainOptions& options, int64_t epoch, const std::function<void(int64_t, double)>& on_step) {
  model.train();
  unlabelled.start_epoch(epoch);
  int64_t labelled_pass = epoch * 1000;
  labelled.start_epoch(labelled_pass);
  Generator gen(hash64(options.seed, static_cast<uint64_t>(epoch)));
  Tape tape;
  Batch batch_l, batch_u;
  double loss_sum = 0;
  int64_t step = 0;
  const int64_t steps = unlabelled.batches_per_epoch();
  for (; step < steps; ++step) {
    if (!labelled.next(batch_l)) {
      labelled.start_epoch(++labelled_pass);
      labelled.next(batch_l);
    }
    optimizer.zero_grad();
    Var x_l = tape.constant(batch_l.x);
    Var objective;
    if (options.supervised_only) {
      objective = cross_entropy(model.classify(x_l), batch_l.y);
    } else {
      unlabelled.next(batch_u);
      objective = model.loss(x_l, batch_l.y, tape.constant(batch_u.x), gen, options.weights).loss;
    }
    const double loss = optimization_step(tape, objective, optimizer, {}, /*clip_norm=*/0, epoch, step);
    loss_sum += loss;
    if (on_step) on_step(step, loss);
  }
  return loss_sum / static_cast<double>(std::max<int64_t>(step, 1));
}

std::vector<int32_t> predict_m2(M2& model, const Dataset& data, bool binarize, uint64_t seed) {
  DataLoader loader(data, {.batch_size = 500, .shuffle = false, .seed = hash64(seed, 0xe7a1), .binarize = binarize});
  Tape tape;
  Batch batch;
  std::vector<int32_t> out;
  const bool was_training = model.is_training();
  model.eval();
  while (loader.next(batch)) {
    NoGradGuard no_grad(tape);
    const Tensor logits = model.classify(tape.constant(batch.x)).value();
    const int64_t K = logits.dim(1);
    for (int64_t b = 0; b < batch.size; ++b) {
      int32_t best = 0;
      for (int64_t k = 1; k < K; ++k)
        if (logits.item(b * K + k) > logits.item(b * K + best)) best = static_cast<int32_t>(k);
      out.push_back(best);
    }
    tape.reset();
  }
  model.train(was_training);
  return out;
}

double accuracy(const std::vector<int32_t>& predicted, const std::vector<int32_t>& labels) {
  if (predicted.size() != labels.size() || labels.empty())
    fail<ValueError>("accuracy: predictions and labels must have the same non-zero length, got ", predicted.size(),
                     " and ", labels.size());
  int64_t right = 0;
  for (size_t i = 0; i < labels.size(); ++i) right += predicted[i] == labels[i];
  return static_cast<double>(right) / static_cast<double>(labels.size());
}

Dataset subset(const Dataset& data, std::span<const int64_t> indices) {
  Dataset out;
  out.rows = data.rows;
  out.cols = data.cols;
  out.num_classes = data.num_classes;
  out.source = data.source;
  out.images.reserve(indices.size() * static_cast<size_t>(data.pixels()));
  for (int64_t i : indices) {
    if (i < 0 || i >= data.size()) fail<ValueError>("subset: indices must be in [0, ", data.size(), "), got ", i);
    out.images.insert(out.images.end(), data.image(i), data.image(i) + data.pixels());
    out.labels.push_back(data.labels[i]);
  }
  return out;
}

}  // namespace tapegrad
