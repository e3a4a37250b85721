#include <doctest/doctest.h>

#include "ops/arena.h"
#include "ops/tensor.h"

using namespace tapegrad;

TEST_CASE("broadcast_shapes follows NumPy rules and names the op on mismatch") {
  CHECK(broadcast_shapes({3, 1}, {4}, "add") == Shape{3, 4});
  CHECK(broadcast_shapes({}, {2, 5}, "add") == Shape{2, 5});
  CHECK(broadcast_shapes({2, 1, 5}, {7, 1}, "mul") == Shape{2, 7, 5});
  CHECK_THROWS_WITH_AS(broadcast_shapes({2, 3}, {4}, "add"), "add: shapes must broadcast, got (2, 3) and (4,)", ShapeError);
}

TEST_CASE("tensors are 64-byte aligned and copies alias like PyTorch") {
  for (int64_t n : {1, 3, 17, 1000}) {
    Tensor t = Tensor::zeros({n}, DType::f64);
    CHECK(reinterpret_cast<uintptr_t>(t.raw()) % kAlignment == 0);
  }
  Tensor a = Tensor::from({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor alias = a;
  alias.set_item(0, 10);
  CHECK(a.item(0) == 10);
  Tensor deep = a.clone();
  deep.set_item(1, -1);
  CHECK(a.item(1) == 2);
  CHECK(a.reshaped({3, 2}).shape() == Shape{3, 2});
  CHECK_THROWS_WITH_AS(a.reshaped({4, 2}), "reshape: element count must stay 6, got (4, 2) (8) from (2, 3)", ShapeError);
  CHECK_THROWS_AS(a.data<double>(), ValueError);
  CHECK(a.to(DType::f64).item(5) == 6.0);
}

TEST_CASE("arena: after one cycle, the same allocations need no new block") {
  Arena arena(1024);
  for (int step = 0; step < 3; ++step) {
    for (int i = 0; i < 10; ++i) {
      void* p = arena.allocate(1000);
      CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
    }
    arena.reset();
  }
  const size_t after_warmup = arena.system_allocations();
  for (int i = 0; i < 10; ++i) arena.allocate(1000);
  arena.reset();
  CHECK(arena.system_allocations() == after_warmup);
  CHECK(arena.block_count() == 1);
}
