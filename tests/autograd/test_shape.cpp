// Tests for autograd/shape.cpp. Each shape op: gradient against central differences over odd sizes and a
// 1000+ element case, values on small known answers, and errors that name the op and the offending value.
#include <doctest/doctest.h>

#include <vector>

#include "autograd/arithmetic.h"
#include "autograd/shape.h"
#include "gradcheck.h"
#include "ops/parallel.h"

using namespace tapegrad;
using testing::uniform;

namespace {
const std::vector<int64_t> kSizes = {1, 3, 17};
using F = testing::Function;
}  // namespace

TEST_CASE("reshape: gradient matches central differences, -1 infers a dimension") {
  for (int64_t n : kSizes) {
    CAPTURE(n);
    CHECK_GRADCHECK([n](Tape&, const std::vector<Var>& v) { return reshape(v[0], {n, -1}); }, {uniform({2, n, 3}, -1, 1, n)});
  }
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return reshape(v[0], {-1}); }, {uniform({10, 11, 10}, -1, 1, 2)});
  Tape tape;
  CHECK(reshape(tape.constant(Tensor::zeros({4, 6})), {2, -1, 3}).shape() == Shape{2, 4, 3});
}

TEST_CASE("permute and transpose: gradients match central differences (3-d, 4-d, 1000+ elements)") {
  for (int64_t n : kSizes) {
    CAPTURE(n);
    const Tensor x = uniform({n, 3, 2}, -1, 1, 3 + n);
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return permute(v[0], {2, 0, 1}); }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return transpose(v[0], 0, -1); }, {x});
  }
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return permute(v[0], {3, 1, 0, 2}); },
                  {uniform({2, 3, 4, 5}, -1, 1, 4)});
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return permute(v[0], {1, 3, 0, 2}); },
                  {uniform({3, 5, 7, 11}, -1, 1, 5)});
  // Used twice: the transpose and the original both feed the output.
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return transpose(v[0], 0, 1) * v[0]; },
                  {uniform({4, 4}, -1, 1, 6)});
}

TEST_CASE("permute: values move to the permuted positions") {
  Tape tape;
  Var x = tape.constant(Tensor::from({1, 2, 3, 4, 5, 6}, {2, 3}));
  Var y = transpose(x, 0, 1);
  CHECK(y.shape() == Shape{3, 2});
  const std::vector<double> expected = {1, 4, 2, 5, 3, 6};
  for (int i = 0; i < 6; ++i) CHECK(y.value().item(i) == expected[i]);
}

TEST_CASE("slice: gradient matches central differences; negative bounds count from the end") {
  for (int64_t n : kSizes) {
    CAPTURE(n);
    const Tensor x = uniform({3, n + 2, 2}, -1, 1, 7 + n);
    CHECK_GRADCHECK([n](Tape&, const std::vector<Var>& v) { return slice(v[0], 1, 1, n + 1); }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return slice(v[0], -1, -1, 2); }, {x});
  }
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return slice(v[0], 0, 5, 37); }, {uniform({40, 30}, -1, 1, 8)});
  // Two overlapping slices of one input add their gradients.
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return slice(v[0], 0, 0, 3) * slice(v[0], 0, 1, 4); },
                  {uniform({4, 3}, -1, 1, 9)});
  Tape tape;
  Var y = slice(tape.constant(Tensor::from({1, 2, 3, 4, 5}, {5})), 0, -3, -1);
  CHECK(y.shape() == Shape{2});
  CHECK(y.value().item(0) == 3.0);
  CHECK(y.value().item(1) == 4.0);
}

TEST_CASE("concat and stack: gradients match central differences with 3 inputs, one of them used twice") {
  for (int64_t n : kSizes) {
    CAPTURE(n);
    const Tensor a = uniform({n, 3}, -1, 1, 10), b = uniform({n, 2}, -1, 1, 11), c = uniform({n, 3}, -1, 1, 12);
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return concat({v[0], v[1], v[0]}, 1); }, {a, b});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return concat({v[0], v[2], v[0]}, 0); }, {a, b, c});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return stack({v[0], v[1], v[0]}, 0); }, {a, c});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return stack({v[0], v[1], v[2]}, 1); }, {a, c, c});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return stack({v[0], v[1], v[0]}, -1); }, {a, c});
  }
  const Tensor big = uniform({20, 30, 2}, -1, 1, 13);
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return concat({v[0], v[1], v[0]}, 1); }, {big, big});
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return stack({v[0], v[1], v[0]}, 2); }, {big, big});
}

TEST_CASE("concat and stack: values are laid out in input order") {
  Tape tape;
  Var a = tape.constant(Tensor::from({1, 2}, {1, 2})), b = tape.constant(Tensor::from({3, 4, 5, 6}, {2, 2}));
  Var c = concat({a, b}, 0);
  CHECK(c.shape() == Shape{3, 2});
  for (int i = 0; i < 6; ++i) CHECK(c.value().item(i) == i + 1);
  Var s = stack({a, a}, 2);
  CHECK(s.shape() == Shape{1, 2, 2});
  const std::vector<double> expected = {1, 1, 2, 2};
  for (int i = 0; i < 4; ++i) CHECK(s.value().item(i) == expected[i]);
}

TEST_CASE("broadcast_to: gradient sums over the broadcast axes") {
  for (int64_t n : kSizes) {
    CAPTURE(n);
    CHECK_GRADCHECK([n](Tape&, const std::vector<Var>& v) { return broadcast_to(v[0], {2, n, 3}); },
                    {uniform({n, 1}, -1, 1, 14)});
    CHECK_GRADCHECK([n](Tape&, const std::vector<Var>& v) { return broadcast_to(v[0], {n, 1, 3}); },
                    {uniform({3}, -1, 1, 15)});
  }
  CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return broadcast_to(v[0], {40, 30}); }, {uniform({30}, -1, 1, 16)});
}

TEST_CASE("index_select: gradient matches central differences and repeated indices accumulate") {
  for (int64_t n : kSizes) {
    CAPTURE(n);
    const Tensor x = uniform({4, n, 3}, -1, 1, 17 + n);
    const std::vector<int64_t> rows = {n - 1, 0, n - 1, n / 2};
    CHECK_GRADCHECK([rows](Tape&, const std::vector<Var>& v) { return index_select(v[0], 1, rows); }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return index_select(v[0], 0, {3, 3, 1}); }, {x});
    CHECK_GRADCHECK([](Tape&, const std::vector<Var>& v) { return index_select(v[0], -1, {2, 0, 2, 2}); }, {x});
  }
  const std::vector<int64_t> many = {5, 0, 5, 39, 12, 12, 12};
  CHECK_GRADCHECK([many](Tape&, const std::vector<Var>& v) { return index_select(v[0], 0, many); },
                  {uniform({40, 30}, -1, 1, 18)});
  // The gradient of a row picked k times is k times the upstream gradient.
  Tape tape;
  Var x = tape.leaf(Tensor::zeros({3, 2}, DType::f64));
  Var y = index_select(x, 0, {2, 0, 2, 2});
  tape.backward(y, Tensor::full(y.shape(), 1.0, DType::f64));
  const std::vector<double> expected = {1, 1, 0, 0, 3, 3};
  for (int i = 0; i < 6; ++i) CHECK(x.grad().item(i) == expected[i]);
}

TEST_CASE("gather: gradient matches central differences (torch.gather semantics)") {
  for (int64_t n : kSizes) {
    CAPTURE(n);
    const Tensor x = uniform({n, 5}, -1, 1, 19 + n);
    std::vector<int64_t> labels(n * 2);
    for (int64_t i = 0; i < n * 2; ++i) labels[i] = (i * 3) % 5;
    CHECK_GRADCHECK([n, labels](Tape&, const std::vector<Var>& v) { return gather(v[0], 1, {n, 2}, labels); }, {x});
    std::vector<int64_t> rows(3 * 5);
    for (int64_t i = 0; i < 15; ++i) rows[i] = (i * 7) % n;
    CHECK_GRADCHECK([rows](Tape&, const std::vector<Var>& v) { return gather(v[0], 0, {3, 5}, rows); }, {x});
  }
  std::vector<int64_t> index(40 * 30);
  for (size_t i = 0; i < index.size(); ++i) index[i] = static_cast<int64_t>((i * 13) % 25);
  CHECK_GRADCHECK([index](Tape&, const std::vector<Var>& v) { return gather(v[0], 1, {40, 30}, index); },
                  {uniform({40, 25}, -1, 1, 20)});
  Tape tape;  // y[i][j] = x[i][index[i][j]]
  Var x = tape.constant(Tensor::from({1, 2, 3, 4, 5, 6}, {2, 3}));
  Var y = gather(x, 1, {2, 2}, std::vector<int64_t>{2, 0, 1, 1});
  const std::vector<double> expected = {3, 1, 5, 5};
  for (int i = 0; i < 4; ++i) CHECK(y.value().item(i) == expected[i]);
}

TEST_CASE("one_hot: rows of zeros with a single one, and no gradient") {
  Tape tape;
  Var y = one_hot(tape, std::vector<int64_t>{2, 0, 1}, 3, DType::f64);
  CHECK(y.shape() == Shape{3, 3});
  CHECK_FALSE(y.requires_grad());
  const std::vector<double> expected = {0, 0, 1, 1, 0, 0, 0, 1, 0};
  for (int i = 0; i < 9; ++i) CHECK(y.value().item(i) == expected[i]);
}

TEST_CASE("shape ops: bad arguments throw and name the op and the value") {
  Tape tape;
  Var x = tape.constant(Tensor::zeros({3, 4}));
  CHECK_THROWS_WITH_AS(reshape(x, {5, 2}), "reshape: element count must be preserved, got (3, 4) (12 elements) to (5, 2) (10 elements)",
                       ShapeError);
  CHECK_THROWS_WITH_AS(reshape(x, {5, -1}), "reshape: element count must be preserved, got (3, 4) (12 elements) to (5, -1) (no whole size for -1)",
                       ShapeError);
  CHECK_THROWS_AS(reshape(x, {-1, -1}), ShapeError);
  CHECK_THROWS_WITH_AS(permute(x, {0, 0}), "permute: axes must be a permutation of [0, 2), got (0, 0) for shape (3, 4)",
                       ValueError);
  CHECK_THROWS_AS(permute(x, {0}), ValueError);
  CHECK_THROWS_WITH_AS(slice(x, 1, 2, 7), "slice: range must satisfy 0 <= start <= end <= 4, got [2, 7) on axis 1 of shape (3, 4)",
                       ValueError);
  CHECK_THROWS_AS(slice(x, 0, 2, 1), ValueError);
  Var z = tape.constant(Tensor::zeros({2, 3}));
  CHECK_THROWS_WITH_AS(concat({x, z}, 1), "concat: input shapes must match except on axis 1, got (3, 4) and (2, 3)", ShapeError);
  CHECK_THROWS_WITH_AS(stack({x, x, z}, 0), "stack: input shapes must match, got (3, 4) and (2, 3)", ShapeError);
  CHECK_THROWS_WITH_AS(broadcast_to(x, {2, 4}), "broadcast_to: shapes must broadcast, got (3, 4) and (2, 4)", ShapeError);
  CHECK_THROWS_WITH_AS(index_select(x, 1, {0, 4}), "index_select: index must be in [0, 4), got 4 at position 1", ValueError);
  CHECK_THROWS_WITH_AS(index_select(x, 0, {-1}), "index_select: index must be in [0, 3), got -1 at position 0", ValueError);
  CHECK_THROWS_WITH_AS(gather(x, 1, {3, 1}, std::vector<int64_t>{0, 9, 1}),
                       "gather: index must be in [0, 4), got 9 at position 1", ValueError);
  CHECK_THROWS_AS(gather(x, 1, {4, 1}, std::vector<int64_t>{0, 0, 0, 0}), ShapeError);
  CHECK_THROWS_WITH_AS(one_hot(tape, std::vector<int64_t>{1, 3}, 3), "one_hot: index must be in [0, 3), got 3 at position 1",
                       ValueError);
}

TEST_CASE("index_select and gather: forward and backward are bit-identical for 1 and 2 threads") {
  const Tensor x = uniform({300, 40, 8}, -1, 1, 21).to(DType::f32);
  const Tensor seed_select = uniform({300, 500, 8}, -1, 1, 22).to(DType::f32);
  std::vector<int64_t> rows(500), index(300 * 40 * 8);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>((i * 7) % 40);  // many repeats
  for (size_t i = 0; i < index.size(); ++i) index[i] = static_cast<int64_t>((i * 11) % 40);
  auto run = [&](int threads) {
    set_num_threads(threads);
    Tape tape(size_t{1} << 24);
    Var v = tape.leaf(x);
    Var a = index_select(v, 1, rows);
    tape.backward(a, seed_select);
    std::vector<Tensor> results = {a.value().clone(), v.grad().clone()};
    tape.reset();
    v = tape.leaf(x);
    Var g = gather(v, 1, x.shape(), index);
    tape.backward(g, x);
    results.push_back(g.value().clone());
    results.push_back(v.grad().clone());
    set_num_threads(0);
    return results;
  };
  const auto one = run(1), two = run(2);
  for (size_t i = 0; i < one.size(); ++i) CHECK(bitwise_equal(one[i], two[i]));
}
