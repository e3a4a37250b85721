// "After warm-up a training step does not allocate" (Note [arena]), tested by counting every call of the
// global operator new in this test binary (Tensor storage and shared_ptr control blocks go through it too).
#include <doctest/doctest.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

#include "models/vae.h"

namespace {
std::atomic<long> g_allocations{0};
}

// Replacing the global allocation functions is the standard way to observe them ([replacement.functions]).
// The whole family is replaced, so that every pointer is freed by the allocator that made it (the standard
// library also calls the nothrow and aligned forms, e.g. std::stable_sort's temporary buffer).
namespace {
void* counted_allocation(std::size_t size, std::size_t alignment) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  size = size == 0 ? 1 : size;
  if (alignment <= alignof(std::max_align_t)) return std::malloc(size);
  return std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment);
}
void* checked(void* p) {
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return checked(counted_allocation(n, 0)); }
void* operator new[](std::size_t n) { return checked(counted_allocation(n, 0)); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_allocation(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_allocation(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) { return checked(counted_allocation(n, static_cast<std::size_t>(a))); }
void* operator new[](std::size_t n, std::align_val_t a) { return checked(counted_allocation(n, static_cast<std::size_t>(a))); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_allocation(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_allocation(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

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
