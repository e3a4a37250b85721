// Training checkpoints: a model's parameters, its optimizer's state and string metadata in one safetensors file.
// Parameter tensors keep their module names ("encoder.fc1.weight"), as in a PyTorch state_dict; optimizer
// state is stored under "optimizer.<state>.<parameter>" (e.g. "optimizer.exp_avg.encoder.fc1.weight").
#pragma once

#include <string>

#include "models/module.h"
#include "models/optim.h"
#include "models/safetensors.h"

namespace tapegrad {

// Writes atomically; `metadata` should name the model ("model": "vae-mlp") so that loading into another model
// fails with a clear hint.
void save_checkpoint(const std::string& path, Module& model, const Optimizer* optimizer, Metadata metadata);

// Loads into `model` (and `optimizer` when given and the file has its state), after checking that names,
// shapes and dtypes match and that every key of `expected` is present with the same value. Without an optimizer, the
// file's optimizer state is skipped (evaluating or sampling a training checkpoint). Returns the metadata.
Metadata load_checkpoint(const std::string& path, Module& model, Optimizer* optimizer, const Metadata& expected);

}  // namespace tapegrad
