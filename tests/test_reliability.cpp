// Reliability claims of issue 8 that live in the doctest suite (docs/reliability.md lists all of them):
//   - every fuzz seed and every input that once crashed a fuzzer parses or fails with FileError (tests/fuzz);
//   - a full VAE training epoch gives bit-identical parameters on 1 and 2 threads, and run to run.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <vector>

#include <unistd.h>

#include "models/checkpoint.h"
#include "models/data.h"
#include "models/fileio.h"
#include "models/optim.h"
#include "models/vae.h"
#include "ops/parallel.h"
#include "tests/fuzz/targets.h"

using namespace tapegrad;
namespace fs = std::filesystem;

namespace {

// The files of tests/fuzz/<dir>/<kind>, sorted (so failures name the same file each run).
std::vector<fs::path> files_in(const std::string& dir, const std::string& kind) {
  std::vector<fs::path> out;
  const fs::path folder = fs::path(TAPEGRAD_TEST_SOURCE_DIR) / "tests" / "fuzz" / dir / kind;
  if (fs::is_directory(folder))
    for (const auto& entry : fs::directory_iterator(folder))
      if (entry.is_regular_file()) out.push_back(entry.path());
  std::sort(out.begin(), out.end());
  return out;
}

template <class Body>
void replay(const std::string& kind, Body body) {
  size_t count = 0;
  for (const char* dir : {"corpus", "regressions"})
    for (const fs::path& file : files_in(dir, kind)) {
      const std::vector<uint8_t> bytes = read_file_bytes(file.string());
      INFO(file.string());
      CHECK_NOTHROW(body(std::span<const uint8_t>(bytes)));
      ++count;
    }
  CHECK(count >= 5);  // the seed corpus is there (a wrong TAPEGRAD_TEST_SOURCE_DIR would test nothing)
}

}  // namespace

TEST_CASE("fuzz corpus: every IDX seed and past crash parses or throws FileError") {
  replay("idx", fuzz::idx_one_input);
}

TEST_CASE("fuzz corpus: every safetensors seed and past crash parses or throws FileError") {
  replay("safetensors", fuzz::safetensors_one_input);
}

namespace {

// The parameters (and Adam state) after one full epoch on the bundled digits, as raw bytes.
std::vector<uint8_t> train_one_epoch(const MnistSplits& data, int threads) {
  const int previous = set_num_threads(threads);
  Generator init(7);
  Vae model(VaeConfig{}, init);  // the MLP VAE: 784-400-20
  Adam optimizer(model.named_parameters(), {.lr = 1e-3});
  DataLoader loader(data.train, {.batch_size = 128, .shuffle = true, .seed = 7, .binarize = true});
  train_vae_epoch(model, optimizer, loader, {.seed = 7}, 1);
  set_num_threads(previous);
  std::vector<uint8_t> bytes;
  auto append = [&](const Tensor& t) {
    const auto* p = static_cast<const uint8_t*>(t.raw());
    bytes.insert(bytes.end(), p, p + t.nbytes());
  };
  for (auto& [name, p] : model.named_parameters()) append(p->value);
  for (auto& [name, t] : optimizer.state()) append(t);
  return bytes;
}

}  // namespace

TEST_CASE("vae: a full training epoch gives bit-identical parameters on 1 and 2 threads, and run to run") {
  const MnistSplits data = load_data("digits");
  REQUIRE(data.train.size() >= 1000);
  const std::vector<uint8_t> one = train_one_epoch(data, 1);
  const std::vector<uint8_t> two = train_one_epoch(data, 2);
  const std::vector<uint8_t> again = train_one_epoch(data, 2);
  REQUIRE(one.size() == two.size());
  CHECK(one.size() > 4 * 784 * 400);
  CHECK(std::memcmp(one.data(), two.data(), one.size()) == 0);
  CHECK(std::memcmp(two.data(), again.data(), two.size()) == 0);
}

// Found by tests/kill_resume.sh: `vae eval` (and sample, reconstruct, interpolate) could not read any checkpoint
// written by `vae train`, because loading without an optimizer reported its state as "unexpected tensor"s.
TEST_CASE("checkpoint: a training checkpoint (with Adam state) loads into a model without an optimizer") {
  const fs::path path = fs::temp_directory_path() / ("tapegrad_ckpt_no_optim_" + std::to_string(::getpid()));
  Generator init(1);
  VaeConfig config;
  config.hidden = 16;
  config.latent = 2;
  Vae trained(config, init);
  Adam optimizer(trained.named_parameters(), {.lr = 1e-3});
  Metadata meta = config.to_metadata();
  save_checkpoint(path.string(), trained, &optimizer, meta);
  Generator other(2);
  Vae fresh(config, other);
  const Metadata loaded = load_checkpoint(path.string(), fresh, nullptr, config.to_metadata());
  CHECK(loaded.at("optimizer") == "Adam");
  const auto a = trained.named_parameters(), b = fresh.named_parameters();
  for (size_t i = 0; i < a.size(); ++i)
    CHECK(std::memcmp(a[i].second->value.raw(), b[i].second->value.raw(), a[i].second->value.nbytes()) == 0);
  // A file without the model's tensors still fails, naming them.
  Vae bigger(VaeConfig{}, other);
  CHECK_THROWS_WITH_AS(load_checkpoint(path.string(), bigger, nullptr, {}), doctest::Contains("has shape"), FileError);
  fs::remove(path);
}
