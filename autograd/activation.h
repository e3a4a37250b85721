// Activation functions. All are stable over the whole float range: sigmoid, softplus and log_sigmoid
// never evaluate exp of a large positive number (|x| up to 1e4 and beyond gives finite values and gradients).
#pragma once

#include "autograd/tape.h"

namespace tapegrad {

Var relu(const Var& x);                                // max(x, 0); gradient 0 at 0, as PyTorch
Var leaky_relu(const Var& x, double negative_slope = 0.01);
Var elu(const Var& x, double alpha = 1.0);             // x > 0 ? x : alpha (e^x - 1)
Var tanh(const Var& x);
Var sigmoid(const Var& x);                             // 1 / (1 + e^-x)
Var softplus(const Var& x);                            // log(1 + e^x)
Var log_sigmoid(const Var& x);                         // log sigmoid(x) = -softplus(-x)

}  // namespace tapegrad
