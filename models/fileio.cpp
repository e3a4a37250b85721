// Whole-file reads and atomic writes (see fileio.h, Note [atomic write]).
#include "models/fileio.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "ops/error.h"

namespace tapegrad {

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) fail<FileError>(path, ": cannot open, expected a readable file, found ", std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  size_t got = 0;
  while ((got = std::fread(chunk, 1, sizeof chunk, file)) > 0) bytes.insert(bytes.end(), chunk, chunk + got);
  const bool failed = std::ferror(file);
  std::fclose(file);
  if (failed) fail<FileError>(path, ": read error, expected a readable file, found ", std::strerror(errno));
  return bytes;
}

namespace {

void fsync_directory_of(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // some file systems do not allow opening directories; the rename already happened
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* file = std::fopen(tmp.c_str(), "wb");
  if (!file) fail<FileError>(path, ": cannot create ", tmp, ", expected a writable folder, found ", std::strerror(errno));
  bool ok = bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), file) == bytes.size();
  ok = ok && std::fflush(file) == 0;
  ok = ok && ::fsync(::fileno(file)) == 0;
  const int err = errno;
  ok = (std::fclose(file) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    fail<FileError>(path, ": cannot write ", bytes.size(), " bytes, expected success, found ", std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_err = errno;
    std::remove(tmp.c_str());
    fail<FileError>(path, ": cannot rename ", tmp, " over it, expected success, found ", std::strerror(rename_err));
  }
  fsync_directory_of(path);
}

}  // namespace tapegrad
