// Whole-file reads and atomic writes, shared by the IDX and safetensors code.
//
// Note [atomic write]: a checkpoint or data file is written to `<path>.tmp.<pid>`, flushed and fsync'ed, renamed
// over `<path>` (rename is atomic on POSIX file systems), and then the directory is fsync'ed so the rename itself
// survives a crash. A reader therefore sees either the old file or the complete new one, never a torn write.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tapegrad {

// The bytes of `path`. Throws FileError "<path>: cannot open, expected a readable file, found <strerror>".
std::vector<uint8_t> read_file_bytes(const std::string& path);

// Writes `bytes` to `path` atomically (Note [atomic write]). Throws FileError naming `path` on any failure and
// leaves no temporary file behind.
void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);

}  // namespace tapegrad
