// Gradient checking against central finite differences, in double precision (PyTorch's gradcheck, Stan's
// finite-diff tests). The function under test is differentiated in the direction of a random upstream
// gradient w: L(x) = sum(f(x) * w), so that every output element matters (sum(f) alone would hide errors
// that cancel). Small inputs get every partial derivative checked; large ones random projections
// <dL/dx, v> plus a sample of coordinates.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "ops/random.h"

namespace tapegrad::testing {

using Function = std::function<Var(Tape&, const std::vector<Var>&)>;

struct GradcheckOptions {
  double step = 1e-6;      // central difference step h: error O(h^2) + O(eps / h), both ~1e-10 here
  double rtol = 1e-6;
  double atol = 1e-8;      // absolute floor for tiny gradients
  int64_t full_check_limit = 64;  // inputs up to this size: every element
  int projections = 3;
  uint64_t seed = 12345;
};

// "" when every gradient matches; otherwise a description of the first mismatch.
std::string gradcheck(const Function& f, const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

// A float64 tensor with values uniform in [low, high), from a fixed seed.
Tensor uniform(const Shape& shape, double low, double high, uint64_t seed, DType dtype = DType::f64);
// Same, with every |value| pushed to at least `margin` (test points off the kink of relu, abs, clamp at 0).
Tensor uniform_off_zero(const Shape& shape, double low, double high, double margin, uint64_t seed);

}  // namespace tapegrad::testing

#define CHECK_GRADCHECK(...)                                          \
  do {                                                                \
    const std::string gradcheck_failure = ::tapegrad::testing::gradcheck(__VA_ARGS__); \
    CHECK_MESSAGE(gradcheck_failure.empty(), gradcheck_failure);      \
  } while (0)
