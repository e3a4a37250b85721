// Counter-based random numbers: Philox4x32-10 (Salmon et al. 2011, "Parallel Random Numbers: As Easy as 1, 2, 3").
//
// Element i of a sampled tensor is a pure function of (seed, offset + i): no generator state is shared between
// threads, so a sample is the same for any thread count and any split of the work. A `Generator` only keeps
// the seed and a running offset, which makes it trivially checkpointable (two integers).
#pragma once

#include <array>
#include <cstdint>

#include "ops/tensor.h"

namespace tapegrad {

// One Philox4x32-10 block: four 32-bit outputs from a 128-bit counter and a 64-bit key.
std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// Uniform in (0, 1) from 32 random bits: never exactly 0 or 1, so log(u) and log(1 - u) are finite.
inline double uniform_open01(uint32_t bits) { return (static_cast<double>(bits) + 0.5) * (1.0 / 4294967296.0); }

class Generator {
 public:
  explicit Generator(uint64_t seed = 0, uint64_t offset = 0) : seed_(seed), offset_(offset) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed, offset_ = offset; }

  // Fill `out` and advance the offset by its element count (rounded up to whole Philox blocks).
  void uniform(Tensor& out, double low = 0.0, double high = 1.0);   // U(low, high)
  void normal(Tensor& out, double mean = 0.0, double stddev = 1.0); // Box-Muller
  void gumbel(Tensor& out);                                          // -log(-log(U))
  void bernoulli(Tensor& out, const Tensor& probs);                  // out[i] = U_i < probs[i]
  uint64_t next_u64();                                               // one draw, for shuffles

 private:
  uint64_t take(int64_t count);  // returns the first offset of `count` fresh values
  uint64_t seed_, offset_;
};

// The stateless form: value i depends only on (seed, offset + i).
void fill_uniform(Tensor& out, uint64_t seed, uint64_t offset, double low = 0.0, double high = 1.0);
void fill_normal(Tensor& out, uint64_t seed, uint64_t offset, double mean = 0.0, double stddev = 1.0);
void fill_gumbel(Tensor& out, uint64_t seed, uint64_t offset);

}  // namespace tapegrad
