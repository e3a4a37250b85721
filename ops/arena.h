// Arena: a bump allocator for the tape's intermediate values, gradients and backward closures.
//
// Note [arena]: a training step allocates the same sizes in the same order every time. The arena hands out
// 64-byte-aligned slices of big blocks and `reset()` rewinds it; if a step needed more than one block, reset
// replaces them with a single block of the high-water size, so from the second step on a step never calls
// malloc (Stan Math's stack allocator works the same way).
#pragma once

#include <cstddef>
#include <vector>

namespace tapegrad {

class Arena {
 public:
  explicit Arena(size_t first_block_bytes = size_t{1} << 20);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  void* allocate(size_t bytes, size_t alignment = 64);
  void reset();

  size_t bytes_in_use() const;        // since the last reset
  size_t bytes_reserved() const;      // capacity of the blocks held
  size_t block_count() const { return blocks_.size(); }
  size_t system_allocations() const { return system_allocations_; }  // blocks ever obtained from malloc

 private:
  struct Block {
    std::byte* memory;
    size_t capacity;
  };
  void add_block(size_t min_bytes);

  std::vector<Block> blocks_;
  size_t current_ = 0;   // index of the block being bumped
  size_t offset_ = 0;    // bytes used in blocks_[current_]
  size_t used_before_current_ = 0;
  size_t system_allocations_ = 0;
};

}  // namespace tapegrad
