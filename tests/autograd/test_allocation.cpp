// "After warm-up a training step does not allocate" (Note [arena]), tested by counting every call of the
// global operator new in this test binary (Tensor storage and shared_ptr control blocks go through it too).
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "models/vae.h"

namespace {
std::atomic<long> g_allocations{0};
}

// Replacing the global allocation functions is the standard way to observe them ([replacement.functions]).
void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

using namespace tapegrad;

TEST_CASE("a steady-state VAE training step (forward, backward, Adam) makes no heap allocation") {
  MnistSplits data = load_data("digits");
  VaeConfig config;
  config.hidden = 64;
  config.latent = 8;
  Generator init(1), noise(2);
  Vae model(config, init);
  Adam adam(model.named_parameters(), {.lr = 1e-3});
  DataLoader loader(data.train, {.batch_size = 32, .seed = 1});
  loader.start_epoch(1);
  Tape tape;
  Batch batch;
  auto step = [&] {
    loader.next(batch);
    adam.zero_grad();
    const Vae::Terms terms = model.loss(tape.constant(batch.x), noise, 1.0);
    tape.backward(terms.loss);
    adam.step();
    tape.reset();
  };
  for (int warmup = 0; warmup < 3; ++warmup) step();
  const long before = g_allocations.load();
  for (int k = 0; k < 5; ++k) step();
  CHECK(g_allocations.load() - before == 0);
}
