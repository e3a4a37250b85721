// ops/layout: the strided copy kernel against its naive twin, over odd sizes and for 1 and 2 threads.
#include <doctest/doctest.h>

#include <numeric>
#include <vector>

#include "gradcheck.h"
#include "ops/elementwise.h"
#include "ops/layout.h"
#include "ops/parallel.h"

using namespace tapegrad;
using testing::uniform;

namespace {
Shape permuted(const Shape& s, const std::vector<int>& axes) {
  Shape out;
  for (int a : axes) out.push_back(s[a]);
  return out;
}
}  // namespace

TEST_CASE("permute_copy equals its naive twin over odd sizes, every 3-d permutation and a 4-d one") {
  const std::vector<Shape> shapes = {{1, 1, 1}, {3, 1, 17}, {17, 3, 5}, {1, 33, 2}, {40, 30, 20}};
  for (DType dtype : {DType::f32, DType::f64}) {
    for (const Shape& s : shapes) {
      const Tensor x = uniform(s, -1, 1, 7).to(dtype);
      std::vector<int> axes = {0, 1, 2};
      do {
        CAPTURE(s);
        CAPTURE(axes[0] * 100 + axes[1] * 10 + axes[2]);
        Tensor fast = Tensor::empty(permuted(s, axes), dtype), slow = Tensor::empty(permuted(s, axes), dtype);
        ops::permute_copy(x, axes, fast);
        ops::naive::permute_copy(x, axes, slow);
        CHECK(bitwise_equal(fast, slow));
      } while (std::next_permutation(axes.begin(), axes.end()));
    }
  }
  const Tensor x = uniform({3, 5, 7, 2}, -1, 1, 8);
  const std::vector<int> axes = {2, 0, 3, 1};
  Tensor fast = Tensor::empty(permuted(x.shape(), axes), DType::f64), slow = fast.clone();
  ops::permute_copy(x, axes, fast);
  ops::naive::permute_copy(x, axes, slow);
  CHECK(bitwise_equal(fast, slow));
}

TEST_CASE("permute_copy is bit-identical for 1 and 2 threads on a large transpose") {
  const Tensor x = uniform({300, 500}, -1, 1, 9).to(DType::f32);
  const std::vector<int> axes = {1, 0};
  Tensor one = Tensor::empty({500, 300}), two = Tensor::empty({500, 300}), slow = Tensor::empty({500, 300});
  set_num_threads(1);
  ops::permute_copy(x, axes, one);
  set_num_threads(2);
  ops::permute_copy(x, axes, two);
  set_num_threads(0);
  ops::naive::permute_copy(x, axes, slow);
  CHECK(bitwise_equal(one, two));
  CHECK(bitwise_equal(one, slow));
}

TEST_CASE("strided_copy accumulates with +=, broadcasts with stride 0 and writes at an offset") {
  Tensor dst = Tensor::full({2, 3}, 1.0, DType::f64);
  const Tensor row = Tensor::from<double>(std::vector<double>{1, 2, 3}, Shape{3});
  ops::Strides src{}, rows = ops::contiguous_strides(dst.shape());
  src[1] = 1;  // the same row for both output rows
  ops::strided_copy(Shape{2, 3}, row, 0, src, dst, 0, rows, /*accumulate=*/true);
  const std::vector<double> expected = {2, 3, 4, 2, 3, 4};
  for (int i = 0; i < 6; ++i) CHECK(dst.item(i) == expected[i]);
  ops::strided_copy(Shape{1, 2}, row, 1, rows, dst, 4, rows, /*accumulate=*/false);  // dst[1, 1:3] = row[1:3]
  CHECK(dst.item(4) == 2.0);
  CHECK(dst.item(5) == 3.0);
  CHECK(dst.item(3) == 2.0);
}

TEST_CASE("strided_copy: tiled transposes (read- or write-strided, with outer axes) equal the naive permute") {
  for (const Shape& s : {Shape{3, 40, 70}, Shape{33, 5, 65}, Shape{64, 64}}) {
    CAPTURE(s);
    const Tensor x = uniform(s, -1, 1, 11);
    std::vector<int> axes(s.rank());
    std::iota(axes.begin(), axes.end(), 0);
    do {
      const Shape ys = permuted(s, axes);
      Tensor fast = Tensor::empty(ys, DType::f64), slow = fast.clone();
      ops::permute_copy(x, axes, fast);
      ops::naive::permute_copy(x, axes, slow);
      CHECK(bitwise_equal(fast, slow));
      // Scatter back (dst strided, src contiguous, +=): x + x, element by element.
      Tensor back = x.clone();
      const ops::Strides xs = ops::contiguous_strides(s);
      ops::Strides dst{};
      for (int d = 0; d < s.rank(); ++d) dst[d] = xs[axes[d]];
      ops::strided_copy(ys, fast, 0, ops::contiguous_strides(ys), back, 0, dst, /*accumulate=*/true);
      Tensor twice = x.clone();
      ops::add_into(twice, x);
      CHECK(bitwise_equal(back, twice));
    } while (std::next_permutation(axes.begin(), axes.end()));
  }
}
