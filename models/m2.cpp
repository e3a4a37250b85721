#include "models/m2.h"

#include <cmath>
#include <cstring>
#include <numeric>

#include "autograd/arithmetic.h"
#include "autograd/linalg.h"
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
          {"activation", activation}, {"classifier", classifier}, {"decoder", decoder}};
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
  c.decoder = m.count("decoder") ? m.at("decoder") : "mlp";  // absent in checkpoints before the option
  if (c.decoder != "mlp" && c.decoder != "conv")
    fail<FileError>(path, ": metadata 'decoder', expected mlp or conv, found '", c.decoder, "'");
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
  if (c.decoder != "mlp" && c.decoder != "conv")
    fail<ValueError>("M2: decoder must be mlp or conv, got '", c.decoder, "'");
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
  if (c.decoder == "conv") add_conv_decoder(decoder_, c.latent + c.classes, c.height, c.width, gen, "M2");
  else build_mlp(decoder_, hidden_sizes(c, c.latent + c.classes, c.pixels()), gen, kind);
  if (c.dtype != DType::f32)
    for (Parameter* p : parameters()) {
      p->value = p->value.to(c.dtype);
      p->grad = Tensor::zeros(p->value.shape(), c.dtype);
    }
}

std::string M2::describe() const {
  return cat("image=", config_.height, "x", config_.width, ", classes=", config_.classes, ", hidden=", config_.hidden,
             "x", config_.hidden_layers, ", latent=", config_.latent, ", activation=", config_.activation,
             ", classifier=", config_.classifier, ", decoder=", config_.decoder);
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
  return encode_hidden(features + encoder_y_(y));
}

// The mu and log-variance heads as one layer of 2Z outputs (their weights stacked): h, the largest input of the
// encoder (1,000 x 500 a step when enumerating), is read once for both, forward and backward, instead of twice.
// Each output is the same dot product as in a head of its own.
M2::Posterior M2::encode_hidden(const Var& pre_activation) {
  Var h = encoder_body_(pre_activation);
  Tape& tape = h.tape();
  Var weight = concat({tape.param(mu_head_.weight()), tape.param(log_var_head_.weight())}, 0);
  Var bias = concat({tape.param(*mu_head_.bias()), tape.param(*log_var_head_.bias())}, 0);
  Var both = linear(h, weight, bias);
  const int64_t Z = config_.latent;
  return {slice(both, -1, 0, Z), slice(both, -1, Z, 2 * Z)};
}

Var M2::decode(const Var& z, const Var& y) {
  if (z.rank() != 2 || y.rank() != 2 || y.dim(0) != z.dim(0))
    fail<ShapeError>("M2::decode: z and y must be (rows, Z) and (rows, K), got ", z.shape(), " and ", y.shape());
  return decoder_(concat({z, y}, -1));
}

Var M2::neg_elbo(const Var& x, const Var& features, const Var& y, const Tensor& eps) {
  std::vector<int64_t> x_rows(static_cast<size_t>(x.dim(0)));
  std::iota(x_rows.begin(), x_rows.end(), int64_t{0});
  return neg_elbo_rows(x, x_rows, encode_features(features, y), y, eps);
}

// Row r of (q, y, eps) is image x_rows[r] of x with class y_r: the decoder runs once over all rows and each row's
// logits are compared with its image where it lies (Note [BCE summed per row] in autograd/loss.cpp), so neither x
// nor the logits are ever copied per class.
Var M2::neg_elbo_rows(const Var& x, std::span<const int64_t> x_rows, const Posterior& q, const Var& y,
                      const Tensor& eps) {
  Var z = q.mu + exp(q.log_var * 0.5) * x.tape().constant(eps);
  Var reconstruction = binary_cross_entropy_with_logits_row_sum(decode(z, y), x, x_rows);
  Var kl = sum(kl_standard_normal(q.mu, q.log_var), {-1});
  // -log p(y) = log K for the uniform prior: a constant, kept so that the value is the bound itself.
  return reconstruction + kl + std::log(static_cast<double>(config_.classes));
}

Var M2::neg_unlabelled_bound(const Var& x, const Tensor& eps) {
  return unlabelled_bound_from(neg_elbo_every_class(x, x_features(x), eps), classify(x));
}

// -U(x) = sum_y q (-L) - H(q) = sum_y q (-L + log q), from -L(x, y): (B, K) and q(y|x)'s logits.
Var M2::unlabelled_bound_from(const Var& neg_elbo_every_class, const Var& logits) {
  Var log_q = log_softmax(logits, 1);
  return sum(exp(log_q) * (neg_elbo_every_class + log_q), {1});
}

M2::EveryClass M2::every_class(const Var& features) {
  Tape& tape = features.tape();
  const int64_t B = features.dim(0), K = config_.classes, H = config_.hidden;
  EveryClass out;
  out.label.resize(static_cast<size_t>(K * B));
  out.image.resize(static_cast<size_t>(K * B));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t b = 0; b < B; ++b) out.label[k * B + b] = k, out.image[k * B + b] = b;
  // The encoder's first layer for every (class, image): W_x x_b + b + W_y e_k, the x-part once per image (Note
  // [shared x features]) and W_y e_k = column k of W_y, added by broadcasting (1, B, H) + (K, 1, H).
  Var w_y = transpose(tape.param(encoder_y_.weight()), 0, 1);  // (K, H)
  out.q = encode_hidden(reshape(reshape(features, {1, B, H}) + reshape(w_y, {K, 1, H}), {K * B, H}));
  return out;
}

Var M2::neg_elbo_every_class(const Var& x, const Var& features, const Tensor& eps) {
  const int64_t B = x.dim(0), K = config_.classes;
  if (eps.rank() != 2 || eps.dim(0) != K * B || eps.dim(1) != config_.latent)
    fail<ShapeError>("M2::neg_unlabelled_bound: eps must be (", K * B, ", ", config_.latent, "), got ", eps.shape());
  const EveryClass rows = every_class(features);
  Var y = one_hot(x.tape(), rows.label, K, config_.dtype);
  return transpose(reshape(neg_elbo_rows(x, rows.image, rows.q, y, eps), {K, B}), 0, 1);
}

// Note [one pass over both batches]: the classifier and the encoder's x-part see the labelled and the unlabelled
// images in one call each ([x_l; x_u], 150 rows), and the decoder sees the labelled images' rows and the
// unlabelled (image, class) rows in one call ([B_l; K * B_u] = 1,050 rows), not two: each weight matrix is packed
// for the GEMM once per step instead of twice, and its gradient is one product over all rows. Every row's value is
// the same either way; the weight gradients sum the same terms in another order.
M2::Terms M2::loss(const Var& x_l, std::span<const int32_t> labels, const Var& x_u, Generator& gen,
                   const LossWeights& w) {
  Tape& tape = x_l.tape();
  const int64_t B_l = x_l.dim(0), B_u = x_u.dim(0), K = config_.classes, Z = config_.latent;
  if (static_cast<int64_t>(labels.size()) != B_l)
    fail<ShapeError>("M2::loss: labels must have one entry per labelled image, got ", labels.size(), " for ", B_l);
  if (B_l + B_u == 0) fail<ValueError>("M2::loss: needs at least one image, got empty labelled and unlabelled batches");
  Var x = B_l == 0 ? x_u : B_u == 0 ? x_l : concat({x_l, x_u}, 0);
  Var logits = classify(x), features = x_features(x);
  // Rows of the decoder pass: labelled image b (class labels[b]), then unlabelled image b with class k at
  // B_l + k * B_u + b; each names its image in x and its class.
  std::vector<int64_t> image(static_cast<size_t>(B_l)), label(labels.begin(), labels.end());
  std::iota(image.begin(), image.end(), int64_t{0});
  Posterior q;
  // The noise of the labelled rows, then of the unlabelled ones: the generator's order of separate passes.
  Tensor eps = Tensor::empty({B_l + K * B_u, Z}, config_.dtype);
  const size_t row_bytes = static_cast<size_t>(Z) * dtype_size(config_.dtype);
  if (B_l > 0) {
    Var y_l = one_hot(tape, label, K, config_.dtype);
    q = encode_features(B_u == 0 ? features : slice(features, 0, 0, B_l), y_l);
    std::memcpy(eps.raw(), m2_noise(*this, B_l, gen).raw(), B_l * row_bytes);
  }
  if (B_u > 0) {
    EveryClass rows = every_class(B_l == 0 ? features : slice(features, 0, B_l, B_l + B_u));
    for (int64_t i : rows.image) image.push_back(B_l + i);
    label.insert(label.end(), rows.label.begin(), rows.label.end());
    q = B_l == 0 ? rows.q : Posterior{concat({q.mu, rows.q.mu}, 0), concat({q.log_var, rows.q.log_var}, 0)};
    std::memcpy(static_cast<char*>(eps.raw()) + B_l * row_bytes, m2_noise(*this, K * B_u, gen).raw(),
                K * B_u * row_bytes);
  }
  Var neg_elbo = neg_elbo_rows(x, image, q, one_hot(tape, label, K, config_.dtype), eps);
  Terms t;
  Var total = tape.constant(Tensor::zeros({}, config_.dtype));
  if (B_l > 0) {
    t.labelled = B_u == 0 ? neg_elbo : slice(neg_elbo, 0, 0, B_l);
    t.classification = cross_entropy(B_u == 0 ? logits : slice(logits, 0, 0, B_l), labels, Reduction::none);
    total = mean(t.labelled) * w.labelled + mean(t.classification) * w.classification;
  }
  if (B_u > 0) {
    Var neg_elbo_u = B_l == 0 ? neg_elbo : slice(neg_elbo, 0, B_l, B_l + K * B_u);
    t.unlabelled = unlabelled_bound_from(transpose(reshape(neg_elbo_u, {K, B_u}), 0, 1),
                                         B_l == 0 ? logits : slice(logits, 0, B_l, B_l + B_u));
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

namespace {

// argmax over each row of `scores` (B, K), appended to `out`; ties go to the lower class.
void append_row_argmax(const Tensor& scores, std::vector<int32_t>& out) {
  const int64_t B = scores.dim(0), K = scores.dim(1);
  for (int64_t b = 0; b < B; ++b) {
    int32_t best = 0;
    for (int64_t k = 1; k < K; ++k)
      if (scores.item(b * K + k) > scores.item(b * K + best)) best = static_cast<int32_t>(k);
    out.push_back(best);
  }
}

// `scores(model, tape, x)` -> (B, K) for each batch of the dataset, in order; the argmax of every row.
template <class Scores>
std::vector<int32_t> predict_by(M2& model, const Dataset& data, bool binarize, uint64_t seed, Scores scores) {
  DataLoader loader(data, {.batch_size = 500, .shuffle = false, .seed = hash64(seed, 0xe7a1), .binarize = binarize});
  Tape tape;
  Batch batch;
  std::vector<int32_t> out;
  const bool was_training = model.is_training();
  model.eval();
  while (loader.next(batch)) {
    NoGradGuard no_grad(tape);
    append_row_argmax(scores(tape, tape.constant(batch.x)), out);
    tape.reset();
  }
  model.train(was_training);
  return out;
}

}  // namespace

std::vector<int32_t> predict_m2(M2& model, const Dataset& data, bool binarize, uint64_t seed) {
  return predict_by(model, data, binarize, seed, [&](Tape&, const Var& x) { return model.classify(x).value(); });
}

std::vector<int32_t> predict_m2_generative(M2& model, const Dataset& data, bool binarize, uint64_t seed) {
  return predict_by(model, data, binarize, seed, [&](Tape&, const Var& x) {
    const Tensor no_noise = Tensor::zeros({model.config().classes * x.dim(0), model.config().latent},
                                          model.config().dtype);
    return (-model.neg_elbo_every_class(x, model.x_features(x), no_noise)).value();
  });
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
