// Helpers for tests that read and write files: a per-test temporary folder, removed at scope exit, and the
// message of the FileError a call throws.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>

#include "ops/error.h"

namespace tapegrad::testing {

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name)
      : path(std::filesystem::temp_directory_path() / ("tapegrad_" + name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& file) const { return (path / file).string(); }
};

// A plain (non-atomic, no fsync) write, for tests that write thousands of corrupt files.
inline void write_plain(const std::string& path, std::span<const uint8_t> bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(bytes.data()),
                                                                 static_cast<std::streamsize>(bytes.size()));
}

// The message of the FileError thrown by `fn`, or "" when nothing is thrown.
template <class Fn>
std::string file_error(Fn fn) {
  try {
    fn();
  } catch (const FileError& e) {
    return e.what();
  }
  return "";
}

inline bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace tapegrad::testing
