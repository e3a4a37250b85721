// IDX reading and writing (see idx.h for the format).
#include "models/idx.h"

#include <zlib.h>

#include <cstdio>
#include <limits>

#include "models/fileio.h"
#include "ops/error.h"

namespace tapegrad {

namespace {

constexpr uint8_t kTypeU8 = 0x08;
constexpr int kMaxIdxRank = 4;
constexpr uint64_t kMaxDecompressed = uint64_t{4} << 30;  // 4 GiB: far above any IDX file, below a zip bomb

std::string hex_bytes(std::span<const uint8_t> bytes) {
  std::string out;
  char buf[4];
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::snprintf(buf, sizeof buf, i == 0 ? "%02X" : " %02X", bytes[i]);
    out += buf;
  }
  return out;
}

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

bool is_gzip(std::span<const uint8_t> bytes) { return bytes.size() >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B; }

}  // namespace

std::vector<uint8_t> gunzip(std::span<const uint8_t> compressed, const std::string& path) {
  z_stream stream{};
  if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) fail<FileError>(path, ": zlib inflateInit2 failed");
  std::vector<uint8_t> out(std::max<size_t>(compressed.size() * 4, 1024));
  size_t consumed = 0;  // input bytes given to zlib so far (all of it: avail_in counts what is left)
  stream.next_in = const_cast<Bytef*>(compressed.data());
  stream.avail_in = static_cast<uInt>(compressed.size());
  if (compressed.size() > std::numeric_limits<uInt>::max()) {
    inflateEnd(&stream);
    fail<FileError>(path, ": gzip file size, expected at most 4 GiB, found ", compressed.size(), " bytes");
  }
  auto fail_inflate = [&](const std::string& what, const std::string& found) {
    inflateEnd(&stream);
    fail<FileError>(path, ": ", what, ", expected a valid gzip stream, found ", found);
  };
  for (;;) {
    if (stream.total_out == out.size()) {
      if (out.size() >= kMaxDecompressed) fail_inflate("gzip data fails to decompress", "more than 4 GiB of output");
      out.resize(std::min<size_t>(out.size() * 2, kMaxDecompressed));
    }
    stream.next_out = out.data() + stream.total_out;
    stream.avail_out = static_cast<uInt>(out.size() - stream.total_out);
    const int ret = inflate(&stream, Z_NO_FLUSH);
    consumed = compressed.size() - stream.avail_in;
    if (ret == Z_STREAM_END) {
      if (stream.avail_in == 0) break;
      if (!is_gzip(compressed.subspan(consumed))) {
        fail_inflate("trailing garbage after the gzip data",
                     cat(compressed.size() - consumed, " extra bytes at offset ", consumed));
      }
      const uLong total_out = stream.total_out;  // inflateReset clears the counter; keep appending after it
      inflateReset(&stream);
      stream.total_out = total_out;
      continue;
    }
    if (ret == Z_BUF_ERROR && stream.avail_in == 0 && stream.avail_out > 0)
      fail_inflate("gzip data fails to decompress", cat("the stream cut off after ", consumed, " bytes (truncated file)"));
    if (ret != Z_OK && ret != Z_BUF_ERROR)
      fail_inflate("gzip data fails to decompress",
                   cat("zlib error '", stream.msg ? stream.msg : zError(ret), "' near compressed byte ", consumed));
  }
  out.resize(stream.total_out);
  inflateEnd(&stream);
  return out;
}

std::vector<uint8_t> gzip_compress(std::span<const uint8_t> raw) {
  z_stream stream{};
  if (deflateInit2(&stream, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    fail<Error>("gzip_compress: zlib deflateInit2 failed");
  std::vector<uint8_t> out(deflateBound(&stream, raw.size()) + 32);
  stream.next_in = const_cast<Bytef*>(raw.data());
  stream.avail_in = static_cast<uInt>(raw.size());
  stream.next_out = out.data();
  stream.avail_out = static_cast<uInt>(out.size());
  const int ret = deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  if (ret != Z_STREAM_END) fail<Error>("gzip_compress: zlib deflate must finish, got code ", ret);
  return out;
}

IdxArray read_idx(const std::string& path, int rank) { return parse_idx(read_file_bytes(path), path, rank); }

IdxArray parse_idx(std::span<const uint8_t> file_bytes, const std::string& path, int rank) {
  const bool gz = is_gzip(file_bytes);
  std::vector<uint8_t> unzipped;
  if (gz) unzipped = gunzip(file_bytes, path);
  const std::span<const uint8_t> bytes = gz ? std::span<const uint8_t>(unzipped) : file_bytes;
  const char* where = gz ? " (after gunzip)" : "";
  const std::string expected_magic = rank > 0 ? cat("00 00 08 0", rank) : std::string("00 00 08 <rank>");
  if (bytes.size() < 4)
    fail<FileError>(path, ": file too short for the IDX magic", where, ", expected 4 bytes, found ", bytes.size());
  const int file_rank = bytes[3];
  if (bytes[0] != 0 || bytes[1] != 0 || bytes[2] != kTypeU8 || (rank > 0 && file_rank != rank) || file_rank < 1 ||
      file_rank > kMaxIdxRank) {
    fail<FileError>(path, ": wrong IDX magic", where, ", expected ", expected_magic, ", found ",
                    hex_bytes(bytes.first(4)),
                    bytes[2] != kTypeU8 && bytes[0] == 0 && bytes[1] == 0 ? "; hint: only u8 (type 08) IDX data is supported"
                                                                          : "");
  }
  const size_t header = 4 + 4 * static_cast<size_t>(file_rank);
  if (bytes.size() < header)
    fail<FileError>(path, ": truncated IDX header", where, ", expected ", header, " bytes, found ", bytes.size());
  IdxArray array;
  uint64_t numel = 1;
  for (int i = 0; i < file_rank; ++i) {
    const uint32_t d = read_be32(bytes.data() + 4 + 4 * i);
    array.dims.push_back(d);
    numel *= d;  // each d < 2^32 and rank <= 4 could overflow: check as we go
    if (numel > kMaxDecompressed)
      fail<FileError>(path, ": header dims", where, ", expected at most ", kMaxDecompressed, " elements, found dimension ",
                      i, " = ", d, " making ", numel);
  }
  const size_t found = bytes.size() - header;
  if (found < numel)
    fail<FileError>(path, ": truncated data", where, ", expected ", numel, " bytes of data after the ", header,
                    "-byte header, found ", found);
  if (found > numel)
    fail<FileError>(path, ": trailing garbage", where, ", expected ", numel, " bytes of data after the ", header,
                    "-byte header, found ", found);
  array.data.assign(bytes.begin() + static_cast<ptrdiff_t>(header), bytes.end());
  return array;
}

void write_idx(const std::string& path, const IdxArray& array, bool gzip) {
  const int rank = static_cast<int>(array.dims.size());
  if (rank < 1 || rank > kMaxIdxRank) fail<ValueError>("write_idx: rank must be in [1, 4], got ", rank);
  uint64_t numel = 1;
  for (int64_t d : array.dims) {
    if (d < 0 || d > std::numeric_limits<uint32_t>::max()) fail<ValueError>("write_idx: dims must fit a u32, got ", d);
    numel *= static_cast<uint64_t>(d);
  }
  if (numel != array.data.size())
    fail<ValueError>("write_idx: data size must equal the product of dims ", numel, ", got ", array.data.size());
  std::vector<uint8_t> bytes = {0, 0, kTypeU8, static_cast<uint8_t>(rank)};
  for (int64_t d : array.dims)
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<uint8_t>(d >> shift));
  bytes.insert(bytes.end(), array.data.begin(), array.data.end());
  if (gzip) bytes = gzip_compress(bytes);
  write_file_atomic(path, bytes);
}

IdxImages read_idx_images(const std::string& path) {
  IdxArray array = read_idx(path, 3);
  if (array.dims[1] == 0 || array.dims[2] == 0)
    fail<FileError>(path, ": header dims, expected images of at least 1 x 1 pixels, found ", array.dims[1], " x ",
                    array.dims[2]);
  return {array.dims[0], array.dims[1], array.dims[2], std::move(array.data)};
}

std::vector<int32_t> read_idx_labels(const std::string& path, int num_classes) {
  IdxArray array = read_idx(path, 1);
  std::vector<int32_t> labels(array.data.begin(), array.data.end());
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] >= num_classes)
      fail<FileError>(path, ": label at index ", i, ", expected < ", num_classes, ", found ", labels[i]);
  }
  return labels;
}

void check_label_count(const std::string& images_path, int64_t n_images, const std::string& labels_path,
                       int64_t n_labels) {
  if (n_images != n_labels)
    fail<FileError>(labels_path, ": label count, expected ", n_images, " (the image count of ", images_path, "), found ",
                    n_labels);
}

Tensor images_to_tensor(std::span<const uint8_t> pixels, int64_t count, int64_t rows, int64_t cols) {
  const int64_t numel = count * rows * cols;
  if (static_cast<int64_t>(pixels.size()) != numel)
    fail<ShapeError>("images_to_tensor: pixel count must be ", count, " x ", rows, " x ", cols, " = ", numel, ", got ",
                     pixels.size());
  Tensor out = Tensor::empty({count, 1, rows, cols}, DType::f32);
  float* dst = out.data<float>();
  for (int64_t i = 0; i < numel; ++i) dst[i] = pixel_value(pixels[i]);
  return out;
}

}  // namespace tapegrad
