#include "models/module.h"

namespace tapegrad {

Parameter& Module::register_parameter(const std::string& name, Tensor value) {
  for (const auto& p : parameters_)
    if (p->name == name) fail<ValueError>(type_name(), ": parameter name must be unique, got '", name, "' twice");
  parameters_.push_back(std::make_unique<Parameter>(name, std::move(value)));
  return *parameters_.back();
}

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, Parameter*>>& out) {
  for (auto& p : parameters_) out.emplace_back(prefix + p->name, p.get());
  for (auto& [name, child] : children_) child->collect(prefix + name + ".", out);
}

std::vector<std::pair<std::string, Parameter*>> Module::named_parameters() {
  std::vector<std::pair<std::string, Parameter*>> out;
  collect("", out);
  return out;
}

std::vector<Parameter*> Module::parameters() {
  std::vector<Parameter*> out;
  for (auto& [name, p] : named_parameters()) out.push_back(p);
  return out;
}

int64_t Module::parameter_count() {
  int64_t total = 0;
  for (Parameter* p : parameters()) total += p->value.numel();
  return total;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::summarize(const std::string& name, int depth, std::string& out) {
  out += std::string(2 * depth, ' ') + (name.empty() ? "" : name + ": ") + type_name();
  const std::string config = describe();
  if (!config.empty()) out += "(" + config + ")";
  out += "  [" + std::to_string(parameter_count()) + " parameters]\n";
  for (auto& [child_name, child] : children_) child->summarize(child_name, depth + 1, out);
}

std::string Module::summary() {
  std::string out;
  summarize("", 0, out);
  return out;
}

}  // namespace tapegrad
