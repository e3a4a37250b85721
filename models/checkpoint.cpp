#include "models/checkpoint.h"

namespace tapegrad {

namespace {
NamedTensors targets_of(Module& model, const Optimizer* optimizer) {
  NamedTensors tensors;
  for (auto& [name, p] : model.named_parameters()) tensors.emplace_back(name, p->value);
  if (optimizer)
    for (auto& [name, t] : optimizer->state()) tensors.emplace_back("optimizer." + name, t);
  return tensors;
}
}  // namespace

void save_checkpoint(const std::string& path, Module& model, const Optimizer* optimizer, Metadata metadata) {
  if (optimizer) {
    metadata["optimizer"] = optimizer->type_name();
    metadata["optimizer_steps"] = std::to_string(optimizer->steps());
  }
  save_safetensors(path, targets_of(model, optimizer), metadata);
}

Metadata load_checkpoint(const std::string& path, Module& model, Optimizer* optimizer, const Metadata& expected) {
  Metadata want = expected;
  if (optimizer) want["optimizer"] = optimizer->type_name();
  // load_into copies into the tensors we pass, which alias the live parameters and optimizer buffers.
  // Without an optimizer (evaluation, sampling) its state in the file is skipped, not an "unexpected tensor".
  Metadata metadata = load_into(path, targets_of(model, optimizer), want, optimizer ? "" : "optimizer.");
  if (optimizer) {
    std::vector<std::pair<std::string, Tensor>> state = optimizer->state();  // already filled by load_into
    optimizer->load_state(state, std::stoll(metadata.at("optimizer_steps")));
  }
  return metadata;
}

}  // namespace tapegrad
