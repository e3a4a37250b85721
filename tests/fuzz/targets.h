// The bodies of the libFuzzer targets, shared with the doctest suite (tests/models/test_fuzz_corpus.cpp), which
// replays every seed and every past crash through exactly the same code on each ordinary test run.
//
// The contract under test: any bytes either parse into a consistent result or throw FileError naming the file.
// Anything else (a crash, a sanitizer report, a leak, another exception type, an inconsistent result) is a bug.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>

#include "models/idx.h"
#include "models/safetensors.h"
#include "ops/error.h"

namespace tapegrad::fuzz {

// An inconsistent parse result: deliberately not a tapegrad::Error, so neither the fuzzer nor the tests swallow it.
struct InvariantBroken : std::logic_error {
  using std::logic_error::logic_error;
};

// IDX, raw or gzip (the reader decides by the 1F 8B magic), at any rank and at the ranks the loaders ask for.
inline void idx_one_input(std::span<const uint8_t> bytes) {
  try {
    const IdxArray array = parse_idx(bytes, "fuzz.idx", 0);
    uint64_t numel = 1;
    for (int64_t d : array.dims) numel *= static_cast<uint64_t>(d);
    if (array.dims.empty() || array.dims.size() > 4 || numel != array.data.size())
      throw InvariantBroken("parse_idx: data size differs from the product of the dims");
    // Asking for the rank the file has must give the same answer; asking for another must fail.
    const int rank = static_cast<int>(array.dims.size());
    if (parse_idx(bytes, "fuzz.idx", rank).data != array.data)
      throw InvariantBroken("parse_idx: result depends on the requested rank");
    try {
      parse_idx(bytes, "fuzz.idx", rank == 3 ? 1 : 3);
      throw InvariantBroken("parse_idx: accepted a file of another rank");
    } catch (const FileError&) {
    }
  } catch (const FileError&) {
  }
}

// A safetensors checkpoint: header length, JSON header, data.
inline void safetensors_one_input(std::span<const uint8_t> bytes) {
  try {
    const Checkpoint checkpoint = parse_safetensors(bytes, "fuzz.safetensors");
    uint64_t header = 0;
    for (int i = 7; i >= 0; --i) header = header << 8 | bytes[static_cast<size_t>(i)];
    uint64_t data = 0;
    for (const auto& [name, tensor] : checkpoint.tensors) data += tensor.nbytes();
    if (8 + header + data != bytes.size()) throw InvariantBroken("parse_safetensors: tensors do not tile the data");
  } catch (const FileError&) {
  }
}

}  // namespace tapegrad::fuzz
