// Datasets and the DataLoader: the bundled digits, --data resolution, and loader determinism.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>

#include "models/data.h"
#include "models/idx.h"
#include "tests/models/temp_dir.h"

using namespace tapegrad;
using tapegrad::testing::TempDir;

namespace {

// n images of 2 x 3 pixels; pixel j of image i is (i * 6 + j) * 5 % 256; label i % 10.
Dataset toy(int64_t n) {
  Dataset d;
  d.rows = 2;
  d.cols = 3;
  for (int64_t i = 0; i < n * 6; ++i) d.images.push_back(static_cast<uint8_t>(i * 5 % 256));
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(static_cast<int32_t>(i % 10));
  return d;
}

std::vector<int64_t> visit_order(DataLoader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<int64_t> seen;
  Batch batch;
  while (loader.next(batch)) seen.insert(seen.end(), batch.index.begin(), batch.index.end());
  return seen;
}

const Dataset& digits_train() {
  static const MnistSplits splits = load_data("digits");
  return splits.train;
}

}  // namespace

TEST_CASE("data: bundled digits load as 8000 train / 2000 test 28 x 28 images with every digit 0-9 present") {
  const MnistSplits splits = load_data("");
  CHECK(splits.train.size() == 8000);
  CHECK(splits.test.size() == 2000);
  CHECK(splits.train.rows == 28);
  CHECK(splits.train.cols == 28);
  for (const Dataset* d : {&splits.train, &splits.test}) {
    const std::vector<int64_t> counts = d->class_counts();
    for (int64_t c : counts) CHECK(c > d->size() / 20);  // balanced-ish: every class above half its share
    CHECK(*std::max_element(d->images.begin(), d->images.end()) == 255);
  }
  CHECK(splits.train.class_counts()[1] == 900);  // data/README.md
  const Tensor all = splits.test.to_tensor();
  CHECK(all.shape() == Shape{2000, 1, 28, 28});
}

TEST_CASE("data: resolve_data maps digits, fashion and folders; TAPEGRAD_DATA overrides the bundled root") {
  CHECK(resolve_data("/some/folder") == "/some/folder");
  CHECK(resolve_data("digits") == resolve_data(""));
  TempDir root("data_root");
  std::filesystem::create_directories(root.path / "digits");
  ::setenv("TAPEGRAD_DATA", root.path.c_str(), 1);
  CHECK(resolve_data("digits") == root / "digits");
  ::setenv("TAPEGRAD_DATA", "/elsewhere", 1);
  CHECK_THROWS_WITH_AS(resolve_data("digits"), doctest::Contains("/elsewhere/digits: the bundled digits"), FileError);
  ::unsetenv("TAPEGRAD_DATA");
  if (std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) {
    CHECK(resolve_data("fashion") == "/usr/share/datasets/fashion-mnist");
  } else {
    CHECK_THROWS_WITH_AS(resolve_data("fashion"), doctest::Contains("apt-get install dataset-fashion-mnist"), FileError);
  }
}

TEST_CASE("data: load_mnist_dir names the missing file and catches a label count mismatch across files") {
  TempDir dir("data_dir");
  CHECK_THROWS_WITH_AS(load_mnist_dir(dir / "absent"), doctest::Contains("absent: cannot open"), FileError);
  CHECK_THROWS_WITH_AS(load_mnist_dir(dir.path.string()),
                       doctest::Contains("train-images-idx3-ubyte[.gz]: cannot open, expected an IDX file"), FileError);
  for (const char* split : {"train", "t10k"}) {
    write_idx(dir / (std::string(split) + "-images-idx3-ubyte.gz"), IdxArray{{3, 2, 2}, std::vector<uint8_t>(12, 7)}, true);
    write_idx(dir / (std::string(split) + "-labels-idx1-ubyte"), IdxArray{{3}, {1, 2, 3}});
  }
  CHECK(load_mnist_dir(dir.path.string()).test.size() == 3);
  write_idx(dir / "t10k-labels-idx1-ubyte", IdxArray{{2}, {1, 2}});
  CHECK_THROWS_WITH_AS(load_mnist_dir(dir.path.string()),
                       (dir / "t10k-labels-idx1-ubyte" + ": label count, expected 3 (the image count of " +
                        dir / "t10k-images-idx3-ubyte.gz" + "), found 2").c_str(),
                       FileError);
}

TEST_CASE("data: DataLoader visits every index exactly once per epoch, same seed and epoch give the same order") {
  const Dataset d = toy(103);
  DataLoader a(d, {.batch_size = 10, .seed = 7});
  DataLoader b(d, {.batch_size = 10, .seed = 7});
  const std::vector<int64_t> a0 = visit_order(a, 0);
  CHECK(a0.size() == 103);
  CHECK(std::set<int64_t>(a0.begin(), a0.end()).size() == 103);
  CHECK(a0 == visit_order(b, 0));
  CHECK(a0 != visit_order(a, 1));                       // a new epoch reshuffles
  CHECK(a0 == visit_order(a, 0));                       // and going back reproduces
  DataLoader c(d, {.batch_size = 10, .seed = 8});
  CHECK(a0 != visit_order(c, 0));                       // another seed, another order
  CHECK(a.batches_per_epoch() == 11);
  DataLoader ordered(d, {.batch_size = 10, .shuffle = false});
  const std::vector<int64_t> plain = visit_order(ordered, 3);
  CHECK(plain.front() == 0);
  CHECK(std::is_sorted(plain.begin(), plain.end()));
}

TEST_CASE("data: the shuffle is pinned (splitmix64 Fisher-Yates gives the same order on every platform)") {
  const Dataset d = toy(10);
  DataLoader loader(d, {.batch_size = 4, .seed = 42});
  const std::vector<int64_t> order = visit_order(loader, 0);
  uint64_t state = 1234567;
  CHECK(splitmix64(state) == 0x599ED017FB08FC85ull);  // the reference splitmix64 stream from seed 1234567
  CHECK(order == std::vector<int64_t>{8, 1, 5, 3, 6, 0, 2, 9, 4, 7});  // changing the generator breaks old runs
}

TEST_CASE("data: binarisation is pinned and has mean p per pixel (20,000 draws of a ramp image)") {
  Dataset d;
  d.rows = d.cols = 4;
  const int n = 20000;
  for (int k = 0; k < n; ++k)
    for (int j = 0; j < 16; ++j) d.images.push_back(static_cast<uint8_t>(j * 16));
  d.labels.assign(n, 0);
  DataLoader loader(d, {.batch_size = n, .shuffle = false, .seed = 42, .binarize = true});
  Batch batch;
  REQUIRE(loader.next(batch));
  for (int j = 0; j < 16; ++j) {
    double sum = 0;
    for (int k = 0; k < n; ++k) sum += batch.x.item(k * 16 + j);
    const double p = j * 16 / 255.0;
    CHECK(std::abs(sum / n - p) < 4 * std::sqrt(p * (1 - p) / n) + 1e-12);  // 4 standard errors
  }
  // The first two examples' bits for (seed 42, epoch 0); changing the generator breaks old runs.
  std::string bits;
  for (int k = 0; k < 32; ++k) bits += batch.x.item(k) == 1.0 ? '1' : '0';
  CHECK(bits == "00000001011111110000100010101111");
}

TEST_CASE("data: drop_last skips the short final batch; otherwise it is smaller and x has B rows") {
  const Dataset d = toy(25);
  DataLoader keep(d, {.batch_size = 10, .drop_last = false});
  DataLoader drop(d, {.batch_size = 10, .drop_last = true});
  Batch batch;
  std::vector<int64_t> sizes;
  while (keep.next(batch)) sizes.push_back(batch.size);
  CHECK(sizes == std::vector<int64_t>{10, 10, 5});
  CHECK(batch.x.shape() == Shape{5, 6});
  CHECK(batch.y.size() == 5);
  sizes.clear();
  while (drop.next(batch)) sizes.push_back(batch.size);
  CHECK(sizes == std::vector<int64_t>{10, 10});
  CHECK(drop.batches_per_epoch() == 2);
}

TEST_CASE("data: batches hold pixel / 255 and the labels of their indices, reusing one buffer") {
  const Dataset d = toy(12);
  DataLoader loader(d, {.batch_size = 5, .seed = 3});
  Batch batch;
  REQUIRE(loader.next(batch));
  const void* storage = batch.x.raw();
  do {
    CHECK(batch.x.raw() == storage);
    for (int64_t r = 0; r < batch.size; ++r) {
      const int64_t i = batch.index[r];
      CHECK(batch.y[r] == d.labels[i]);
      for (int64_t j = 0; j < 6; ++j) CHECK(batch.x.item(r * 6 + j) == doctest::Approx(d.image(i)[j] / 255.0));
    }
  } while (loader.next(batch));
  CHECK(batch.x.reshaped({batch.size, 1, 2, 3}).shape() == Shape{2, 1, 2, 3});
}

TEST_CASE("data: dynamic binarisation gives values in {0, 1}, is deterministic per (seed, epoch, index), has mean p") {
  const Dataset& d = digits_train();
  DataLoaderOptions options{.batch_size = 256, .seed = 5, .binarize = true};
  DataLoader a(d, options), b(d, options);
  a.start_epoch(2);
  b.start_epoch(2);
  Batch ba, bb;
  REQUIRE(a.next(ba));
  REQUIRE(b.next(bb));
  CHECK(bitwise_equal(ba.x, bb.x));
  double sum_x = 0, sum_p = 0;
  for (int64_t k = 0; k < ba.x.numel(); ++k) {
    const double v = ba.x.item(k);
    CHECK((v == 0.0 || v == 1.0));
    sum_x += v;
    sum_p += d.image(ba.index[k / 784])[k % 784] / 255.0;
  }
  CHECK(sum_x == doctest::Approx(sum_p).epsilon(0.02));
  // Another epoch draws anew, but the same example in the same epoch does not depend on the batch size.
  DataLoader other(d, {.batch_size = 7, .seed = 5, .binarize = true});
  other.start_epoch(2);
  Batch bo;
  REQUIRE(other.next(bo));
  CHECK(bo.index[0] == ba.index[0]);
  for (int64_t j = 0; j < 784; ++j) CHECK(bo.x.item(j) == ba.x.item(j));
  a.start_epoch(3);
  REQUIRE(a.next(ba));
  CHECK_FALSE(bitwise_equal(ba.x, bb.x));
}

TEST_CASE("data: a subset loader visits exactly the subset; labelled_split is per class, disjoint and seeded") {
  const Dataset d = toy(100);
  const auto [labelled, unlabelled] = labelled_split(d, 3, 11);
  CHECK(labelled.size() == 30);
  CHECK(unlabelled.size() == 70);
  std::set<int64_t> all(labelled.begin(), labelled.end());
  all.insert(unlabelled.begin(), unlabelled.end());
  CHECK(all.size() == 100);
  std::vector<int> per_class(10, 0);
  for (int64_t i : labelled) ++per_class[d.labels[i]];
  CHECK(per_class == std::vector<int>(10, 3));
  CHECK(labelled_split(d, 3, 11).first == labelled);
  CHECK(labelled_split(d, 3, 12).first != labelled);
  CHECK_THROWS_AS(labelled_split(d, 11, 0), ValueError);

  DataLoader loader(d, {.batch_size = 8, .seed = 1, .indices = labelled});
  std::vector<int64_t> seen = visit_order(loader, 4);
  std::sort(seen.begin(), seen.end());
  CHECK(seen == labelled);
  CHECK_THROWS_AS(DataLoader(d, {.indices = {100}}), ValueError);
}

TEST_CASE("data: Fashion-MNIST from dataset-fashion-mnist loads as 60000/10000 with 6000 per class (when installed)") {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz")) {
    MESSAGE("skipped: apt-get install dataset-fashion-mnist");
    return;
  }
  const MnistSplits splits = load_data("fashion");
  CHECK(splits.train.size() == 60000);
  CHECK(splits.test.size() == 10000);
  CHECK(splits.train.class_counts() == std::vector<int64_t>(10, 6000));
  CHECK(splits.test.class_counts() == std::vector<int64_t>(10, 1000));
}
