#include "ops/random.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "ops/parallel.h"
#include "ops/simd.h"

namespace tapegrad {

std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  // Multipliers and Weyl constants from the paper (Table 2 / Random123).
  constexpr uint32_t kMul0 = 0xD2511F53, kMul1 = 0xCD9E8D57, kWeyl0 = 0x9E3779B9, kWeyl1 = 0xBB67AE85;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t{kMul0} * ctr[0], p1 = uint64_t{kMul1} * ctr[2];
    ctr = {static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ key[0], static_cast<uint32_t>(p1),
           static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ key[1], static_cast<uint32_t>(p0)};
    key[0] += kWeyl0;
    key[1] += kWeyl1;
  }
  return ctr;
}

namespace {

// The four 32-bit words of block `block` for a given seed.
std::array<uint32_t, 4> block_bits(uint64_t seed, uint64_t block) {
  return philox4x32({static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0, 0},
                    {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
}

// The words of one seed's stream, counter c being word c % 4 of block c / 4. It keeps the last block it
// computed: neighbouring counters share a block (four uniforms, or the two normals of Box-Muller's four words),
// so a fill runs philox once per block instead of once per word, with the same bits.
class PhiloxWords {
 public:
  explicit PhiloxWords(uint64_t seed) : seed_(seed) {}
  uint32_t operator()(uint64_t counter) {
    const uint64_t block = counter / 4;
    if (block != cached_block_) {
      bits_ = block_bits(seed_, block);
      cached_block_ = block;
    }
    return bits_[counter % 4];
  }

 private:
  uint64_t seed_;
  uint64_t cached_block_ = ~uint64_t{0};  // none yet: block indices are counter / 4 < 2^62
  std::array<uint32_t, 4> bits_{};
};

// data[i] = value(offset + i, words) for every element; each task reads the stream through its own PhiloxWords.
template <class T, class Value>
void fill_with(Tensor& out, uint64_t seed, uint64_t offset, Value value) {
  T* data = out.data<T>();
  parallel_for(out.numel(), 4096, [&](int64_t begin, int64_t end) {
    PhiloxWords words(seed);
    for (int64_t i = begin; i < end; ++i) data[i] = static_cast<T>(value(offset + static_cast<uint64_t>(i), words));
  }, 8);
}

uint32_t word(uint64_t seed, uint64_t counter) { return block_bits(seed, counter / 4)[counter % 4]; }

// Box-Muller needs two uniforms per normal: element i takes the words of counters 2c and 2c+1 of a separate
// stream (the high bit of the counter marks it), so normals never reuse the uniform stream's bits.
// Note [vector Box-Muller]: z = sqrt(-2 log u1) cos(2 pi u2) is computed a batch of doubles at a time with
// xsimd's log and cos (scalar libm's took 40 ns a normal, 2% of a GMVAE epoch). Every element, the last ones of
// a range included, goes through the same batch code (Note [simd tail] in ops/simd.h), so an element's bits
// depend on its counter alone, never on where a thread's range starts or ends.
template <class T>
void fill_standard_normal_scaled(T* data, int64_t begin, int64_t end, uint64_t seed, uint64_t offset, double mean,
                                 double stddev) {
  using D = simd::Batch<double>;
  constexpr int64_t W = simd::width<double>;
  constexpr uint64_t stream = uint64_t{1} << 63;
  PhiloxWords words(seed);
  alignas(64) double u1[W], u2[W], z[W];
  for (int64_t i = begin; i < end; i += W) {
    const int64_t n = std::min(W, end - i);
    for (int64_t k = 0; k < W; ++k) {
      const uint64_t c = (offset + static_cast<uint64_t>(i + k)) * 2;
      u1[k] = k < n ? uniform_open01(words(stream | c)) : 0.5;
      u2[k] = k < n ? uniform_open01(words(stream | (c + 1))) : 0.5;
    }
    const D radius = xsimd::sqrt(D(-2.0) * xsimd::log(D::load_aligned(u1)));
    (radius * xsimd::cos(D(2.0 * std::numbers::pi) * D::load_aligned(u2))).store_aligned(z);
    for (int64_t k = 0; k < n; ++k) data[i + k] = static_cast<T>(mean + stddev * z[k]);
  }
}

}  // namespace

void fill_uniform(Tensor& out, uint64_t seed, uint64_t offset, double low, double high) {
  dispatch(out.dtype(), [&]<class T>() {
    fill_with<T>(out, seed, offset,
                 [&](uint64_t c, PhiloxWords& words) { return low + (high - low) * uniform_open01(words(c)); });
  });
}

void fill_normal(Tensor& out, uint64_t seed, uint64_t offset, double mean, double stddev) {
  dispatch(out.dtype(), [&]<class T>() {
    T* data = out.data<T>();
    parallel_for(out.numel(), 4096, [&](int64_t begin, int64_t end) {
      fill_standard_normal_scaled(data, begin, end, seed, offset, mean, stddev);
    }, 8);
  });
}

void fill_gumbel(Tensor& out, uint64_t seed, uint64_t offset) {
  dispatch(out.dtype(), [&]<class T>() {
    fill_with<T>(out, seed, offset, [&](uint64_t c, PhiloxWords& words) { return -std::log(-std::log(uniform_open01(words(c)))); });
  });
}

uint64_t Generator::take(int64_t count) {
  const uint64_t first = offset_;
  offset_ += (static_cast<uint64_t>(count) + 3) / 4 * 4;  // whole blocks, so streams never overlap
  return first;
}

void Generator::uniform(Tensor& out, double low, double high) { fill_uniform(out, seed_, take(out.numel()), low, high); }
void Generator::normal(Tensor& out, double mean, double stddev) {
  fill_normal(out, seed_, take(out.numel()), mean, stddev);
}
void Generator::gumbel(Tensor& out) { fill_gumbel(out, seed_, take(out.numel())); }

void Generator::bernoulli(Tensor& out, const Tensor& probs) {
  if (!(out.shape() == probs.shape()))
    fail<ShapeError>("bernoulli: output shape must match probs, got ", out.shape(), " and ", probs.shape());
  const uint64_t first = take(out.numel());
  dispatch(out.dtype(), [&]<class T>() {
    const T* p = probs.data<T>();
    fill_with<T>(out, seed_, first, [&](uint64_t c, PhiloxWords& words) {
      return uniform_open01(words(c)) < static_cast<double>(p[c - first]) ? 1.0 : 0.0;
    });
  });
}

uint64_t Generator::next_u64() {
  const uint64_t c = take(2);
  return (uint64_t{word(seed_, c)} << 32) | word(seed_, c + 1);
}

}  // namespace tapegrad
