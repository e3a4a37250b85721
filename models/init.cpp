#include "models/init.h"

#include <cmath>

namespace tapegrad {

Tensor default_uniform_init(const Shape& shape, int64_t fan_in, Generator& generator, DType dtype) {
  if (fan_in <= 0) fail<ValueError>("init: fan_in must be > 0, got ", fan_in);
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  Tensor t = Tensor::empty(shape, dtype);
  generator.uniform(t, -bound, bound);
  return t;
}

}  // namespace tapegrad
