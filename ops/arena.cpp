#include "ops/arena.h"

#include <algorithm>
#include <cstdlib>
#include <new>

namespace tapegrad {

Arena::Arena(size_t first_block_bytes) { add_block(first_block_bytes); }

Arena::~Arena() {
  for (Block& b : blocks_) std::free(b.memory);
}

void Arena::add_block(size_t min_bytes) {
  const size_t capacity = (min_bytes + 63) / 64 * 64;
  void* memory = std::aligned_alloc(64, capacity);
  if (!memory) throw std::bad_alloc();
  blocks_.push_back({static_cast<std::byte*>(memory), capacity});
  ++system_allocations_;
}

void* Arena::allocate(size_t bytes, size_t alignment) {
  for (;;) {
    Block& block = blocks_[current_];
    const size_t start = (offset_ + alignment - 1) / alignment * alignment;
    if (start + bytes <= block.capacity) {
      offset_ = start + bytes;
      return block.memory + start;
    }
    used_before_current_ += offset_;
    offset_ = 0;
    if (current_ + 1 == blocks_.size()) add_block(std::max(bytes + alignment, 2 * block.capacity));
    ++current_;
  }
}

void Arena::reset() {
  if (blocks_.size() > 1) {
    // Coalesce into one block big enough for everything the last cycle held (Note [arena]).
    size_t total = 0;
    for (Block& b : blocks_) {
      total += b.capacity;
      std::free(b.memory);
    }
    blocks_.clear();
    add_block(total);
  }
  current_ = 0;
  offset_ = 0;
  used_before_current_ = 0;
}

size_t Arena::bytes_in_use() const { return used_before_current_ + offset_; }

size_t Arena::bytes_reserved() const {
  size_t total = 0;
  for (const Block& b : blocks_) total += b.capacity;
  return total;
}

}  // namespace tapegrad
