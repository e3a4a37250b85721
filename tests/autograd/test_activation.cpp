#include <doctest/doctest.h>

#include <cmath>

#include "autograd/activation.h"
#include "autograd/arithmetic.h"
#include "gradcheck.h"

using namespace tapegrad;
using testing::uniform_off_zero;

TEST_CASE("activations: gradients match central differences (sizes 1, 3, 17, 1001, off the kink at 0)") {
  for (int64_t n : {1, 3, 17, 1001}) {
    CAPTURE(n);
    const Tensor x = uniform_off_zero({n}, -4, 4, 0.05, 100 + n);
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return relu(v[0]); }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return leaky_relu(v[0], 0.2); }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return elu(v[0], 1.5); }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return tanh(v[0]); }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return sigmoid(v[0]); }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return softplus(v[0]); }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return log_sigmoid(v[0]); }, {x});
  }
}

TEST_CASE("sigmoid, softplus, log_sigmoid are finite and exact for |x| up to 1e4, in float32 and float64") {
  for (DType dtype : {DType::f32, DType::f64}) {
    Tape tape;
    Tensor x = Tensor::empty({4}, dtype);
    const double values[] = {-1e4, -100, 100, 1e4};
    for (int i = 0; i < 4; ++i) x.set_item(i, values[i]);
    Var v = tape.leaf(x);
    Var s = sigmoid(v), sp = softplus(v), ls = log_sigmoid(v);
    const Tensor seed = Tensor::full({4}, 1.0, dtype);
    tape.backward(sp + ls + s, seed);
    for (int i = 0; i < 4; ++i) {
      CAPTURE(values[i]);
      CHECK(s.value().item(i) == doctest::Approx(values[i] > 0 ? 1.0 : 0.0));
      CHECK(sp.value().item(i) == doctest::Approx(std::max(values[i], 0.0)));  // log1p(e^-100) ~ 4e-44
      CHECK(ls.value().item(i) == doctest::Approx(std::min(values[i], 0.0)));
      CHECK(std::isfinite(v.grad().item(i)));
    }
  }
}
