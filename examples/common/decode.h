// Decoding latent codes into pictures, shared by the generative-model programs (vae, gmvae): any model with
// `Var decode(const Var& z)` returning Bernoulli logits.
#pragma once

#include "autograd/activation.h"
#include "autograd/tape.h"
#include "ops/tensor.h"

namespace tapegrad::decode {

// Decoder means sigmoid(logits) of (N, Z) codes, as a tensor of pixel intensities (N, D).
template <class Model>
Tensor decode_means(Model& model, const Tensor& codes) {
  Tape tape;
  NoGradGuard no_grad(tape);
  return sigmoid(model.decode(tape.constant(codes))).value().clone();
}

}  // namespace tapegrad::decode
