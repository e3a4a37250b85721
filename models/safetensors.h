// Checkpoints in the safetensors format (https://github.com/huggingface/safetensors), readable by PyTorch/NumPy.
//
// Layout: u64 little-endian N, then N bytes of JSON header
//   {"<name>": {"dtype": "F32" | "F64", "shape": [d0, ...], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"<key>": "<string value>", ...}}
// padded with spaces to a multiple of 8, then the tensor data (C order, little endian), contiguous from offset 0
// (offsets are relative to the end of the header), with no gaps, the last end equal to the data length.
//
// The loader parses the header with a small strict JSON parser (objects, arrays, strings, integers; nothing
// else) and validates everything before touching the data; every failure is a FileError naming the file.
// Saving is atomic (models/fileio.h, Note [atomic write]).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ops/tensor.h"

namespace tapegrad {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using Metadata = std::map<std::string, std::string>;

struct Checkpoint {
  NamedTensors tensors;  // in file (data offset) order
  Metadata metadata;
};

// Writes `tensors` in the given order (names must be unique and not "__metadata__").
void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata = {});

// Reads and validates a whole checkpoint.
Checkpoint load_safetensors(const std::string& path);
// The same from bytes in memory; `path` only names them in errors.
Checkpoint parse_safetensors(std::span<const uint8_t> bytes, const std::string& path);

// Copies the checkpoint's tensors into `targets` (tensors that alias a model's parameters), requiring the same
// set of names, and for each the same shape and dtype. Every metadata key of `expected_metadata` must be present;
// a non-empty expected value must match. Errors list missing and unexpected names and shape mismatches, with a
// hint naming the model recorded in the file's "model" metadata. File tensors whose names start with a non-empty
// `ignored_prefix` are skipped (e.g. "optimizer." to read a model out of a training checkpoint). Returns the file's
// metadata.
Metadata load_into(const std::string& path, const NamedTensors& targets, const Metadata& expected_metadata = {},
                   const std::string& ignored_prefix = {});

}  // namespace tapegrad
