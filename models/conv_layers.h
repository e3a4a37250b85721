// Convolution layers (PyTorch's nn.Conv2d and nn.ConvTranspose2d, groups = 1) and the reshapes between
// convolutional and dense parts of a network. Shapes: NCHW.
#pragma once

#include <string>

#include "autograd/conv.h"
#include "models/layers.h"
#include "models/module.h"
#include "ops/random.h"

namespace tapegrad {

struct ConvSpec {
  int64_t in_channels, out_channels, kernel_size;
  int64_t stride = 1, padding = 0, dilation = 1, output_padding = 0;  // output_padding: transposed only
};

// The shared body of Conv2d and ConvTranspose2d: they differ only in the weight layout, the fan-in of their
// initialisation and which autograd op forward calls.
class Convolution : public Layer {
 public:
  Var forward(const Var& x) override;
  std::string describe() const override;

 protected:
  Convolution(const ConvSpec& spec, bool transposed, Generator& generator, bool bias);

 private:
  ConvSpec spec_;
  bool transposed_;
  Parameter* weight_;
  Parameter* bias_ = nullptr;
};

// weight (out, in, k, k), bias (out,); init U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in * k * k.
class Conv2d : public Convolution {
 public:
  Conv2d(const ConvSpec& spec, Generator& generator, bool bias = true) : Convolution(spec, false, generator, bias) {}
  std::string type_name() const override { return "Conv2d"; }
};

// weight (in, out, k, k), bias (out,); PyTorch computes its fan_in from weight.size(1) * k * k = out * k * k.
class ConvTranspose2d : public Convolution {
 public:
  ConvTranspose2d(const ConvSpec& spec, Generator& generator, bool bias = true)
      : Convolution(spec, true, generator, bias) {}
  std::string type_name() const override { return "ConvTranspose2d"; }
};

// (B, ...) -> (B, prod(...)): from convolutional features to a dense layer.
class Flatten : public Layer {
 public:
  Var forward(const Var& x) override;
  std::string type_name() const override { return "Flatten"; }
};

// (B, C*H*W) -> (B, C, H, W).
class Unflatten : public Layer {
 public:
  Unflatten(int64_t channels, int64_t height, int64_t width) : c_(channels), h_(height), w_(width) {}
  Var forward(const Var& x) override;
  std::string type_name() const override { return "Unflatten"; }
  std::string describe() const override;

 private:
  int64_t c_, h_, w_;
};

// The image halves of the conv VAE (models/vae.h), shared by every model with `--arch conv`. The encoder takes
// (B, H*W) pixels through two stride-2 4x4 convolutions (32 and 64 channels, ReLU after each) to (B, 64*H/4*W/4)
// features and returns that width; the decoder takes (B, in) through Linear(in, 64*H/4*W/4), ReLU and two
// stride-2 4x4 transposed convolutions (32 channels with ReLU, then 1) back to (B, H*W) logits. H and W must be
// multiples of 4; `model` names the caller in the error.
int64_t add_conv_encoder(Sequential& seq, int64_t height, int64_t width, Generator& gen, const char* model);
void add_conv_decoder(Sequential& seq, int64_t in, int64_t height, int64_t width, Generator& gen, const char* model);

}  // namespace tapegrad
