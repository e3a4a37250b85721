// Module: the unit models are assembled from, as in PyTorch's nn.Module.
//
// A module owns its parameters and registers its child modules, which gives hierarchical names
// ("encoder.fc1.weight", the keys of checkpoints), parameter counting, train/eval mode and a printable summary.
// Modules are neither copied nor moved (children are registered by address): build them in place, and hold
// them by value as members or by unique_ptr (Sequential).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tape.h"

namespace tapegrad {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  virtual std::string type_name() const = 0;
  // One-line description of this module's own configuration, e.g. "in=784, out=400".
  virtual std::string describe() const { return ""; }

  // Parameters of this module and all its descendants, in registration order (depth first).
  std::vector<std::pair<std::string, Parameter*>> named_parameters();
  std::vector<Parameter*> parameters();
  int64_t parameter_count();

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // An indented tree with each module's type, configuration and parameter count.
  std::string summary();

 protected:
  Parameter& register_parameter(const std::string& name, Tensor value);
  template <class M>
  M& register_module(const std::string& name, M& child) {
    children_.emplace_back(name, &child);
    return child;
  }

 private:
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Parameter*>>& out);
  void summarize(const std::string& name, int depth, std::string& out);

  std::vector<std::unique_ptr<Parameter>> parameters_;  // unique_ptr: addresses stay valid as the list grows
  std::vector<std::pair<std::string, Module*>> children_;
  bool training_ = true;
};

// A module with one input and one output; what Sequential chains.
class Layer : public Module {
 public:
  virtual Var forward(const Var& x) = 0;
  Var operator()(const Var& x) { return forward(x); }
};

}  // namespace tapegrad
