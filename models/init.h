// Parameter initialisation, matching PyTorch's defaults so that models start from the same distribution.
//
// nn.Linear and nn.Conv2d draw weights with kaiming_uniform_(a = sqrt(5)) (He et al. 2015): the bound is
// gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + a^2)), which simplifies to 1 / sqrt(fan_in); biases are
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)). fan_in = in_features (Linear) or in_channels * kh * kw (Conv2d).
#pragma once

#include "ops/random.h"
#include "ops/tensor.h"

namespace tapegrad {

// U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Linear/Conv weights and biases.
Tensor default_uniform_init(const Shape& shape, int64_t fan_in, Generator& generator, DType dtype = DType::f32);

}  // namespace tapegrad
