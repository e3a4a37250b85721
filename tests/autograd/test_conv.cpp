#include <doctest/doctest.h>

#include "autograd/conv.h"
#include "gradcheck.h"

using namespace tapegrad;
using testing::uniform;

namespace {
struct Case {
  Shape x, w;
  Conv2dOptions options;
};
}  // namespace

TEST_CASE("conv2d: gradient matches central differences (stride, padding, dilation, odd sizes, batch 1 and 3)") {
  const std::vector<Case> cases = {
      {{1, 1, 5, 7}, {2, 1, 3, 3}, {}},
      {{3, 2, 7, 5}, {3, 2, 3, 2}, {.stride = {2, 1}, .padding = {1, 0}}},
      {{1, 3, 9, 9}, {2, 3, 3, 3}, {.stride = {2, 2}, .padding = {2, 1}, .dilation = {2, 2}}},
      {{3, 1, 8, 8}, {4, 1, 4, 4}, {.stride = {2, 2}, .padding = {1, 1}}},  // a conv-VAE layer in miniature
  };
  for (const Case& c : cases) {
    CAPTURE(c.x);
    CAPTURE(c.w);
    const Tensor x = uniform(c.x, -1, 1, 1), w = uniform(c.w, -1, 1, 2), b = uniform({c.w[0]}, -1, 1, 3);
    const Conv2dOptions o = c.options;
    CHECK_GRADCHECK([o](Tape&, const std::vector<Var>& v) { return conv2d(v[0], v[1], v[2], o); }, {x, w, b});
    CHECK_GRADCHECK([o](Tape&, const std::vector<Var>& v) { return conv2d(v[0], v[1], o); }, {x, w});
  }
}

TEST_CASE("conv_transpose2d: gradient matches central differences (stride, padding, output_padding, dilation)") {
  const std::vector<Case> cases = {
      {{1, 2, 3, 4}, {2, 1, 3, 3}, {}},
      {{3, 4, 4, 4}, {4, 2, 4, 4}, {.stride = {2, 2}, .padding = {1, 1}}},  // 4x4 -> 8x8, a decoder layer
      {{1, 2, 3, 3}, {2, 3, 3, 2}, {.stride = {2, 3}, .padding = {1, 0}, .output_padding = {1, 2}}},
      {{3, 1, 4, 3}, {1, 2, 2, 2}, {.stride = {1, 1}, .dilation = {2, 1}}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.x);
    CAPTURE(c.w);
    const Tensor x = uniform(c.x, -1, 1, 4), w = uniform(c.w, -1, 1, 5), b = uniform({c.w[1]}, -1, 1, 6);
    const Conv2dOptions o = c.options;
    CHECK_GRADCHECK([o](Tape&, const std::vector<Var>& v) { return conv_transpose2d(v[0], v[1], v[2], o); }, {x, w, b});
  }
}

TEST_CASE("conv2d and conv_transpose2d name the op and the shapes on bad input") {
  Tape tape;
  Var x = tape.constant(Tensor::zeros({2, 3, 8, 8})), w = tape.constant(Tensor::zeros({4, 5, 3, 3}));
  CHECK_THROWS_WITH_AS(conv2d(x, w), "conv2d: input channels must match weight, got (2, 3, 8, 8) and (4, 5, 3, 3)",
                       ShapeError);
  Var w_ok = tape.constant(Tensor::zeros({4, 3, 3, 3})), bad_bias = tape.constant(Tensor::zeros({5}));
  CHECK_THROWS_WITH_AS(conv2d(x, w_ok, bad_bias), "conv2d: bias must have shape (4,), got (5,)", ShapeError);
  CHECK_THROWS_AS(conv_transpose2d(x, w_ok), ShapeError);  // the transpose wants x with 4 = weight's in channels
}
