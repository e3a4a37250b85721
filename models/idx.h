// IDX files (the MNIST format): read raw or gzip-compressed, validate, write atomically.
//
// Format (http://yann.lecun.com/exdb/mnist/): magic `00 00 <type> <rank>` (type 0x08 = unsigned byte), then
// `rank` big-endian u32 dimensions, then the C-order data. Images are `00 00 08 03` (N, H, W); labels are
// `00 00 08 01` (N,). A file starting with `1F 8B` is gzip and is decompressed first (zlib).
//
// Pixels stay u8 (a quarter of the float memory); `pixel_value` maps them to [0, 1] as v / 255, the one
// conversion every loader uses. `images_to_tensor` gives (N, 1, H, W) float32, the layout conv layers take;
// an MLP flattens with `.reshaped({N, H * W})` (same storage).
//
// Every error is a FileError "<path>: <what>, expected <x>, found <y>".
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ops/tensor.h"

namespace tapegrad {

struct IdxArray {
  std::vector<int64_t> dims;  // e.g. {N, 28, 28}
  std::vector<uint8_t> data;  // C order, product(dims) bytes
};

// Reads a u8 IDX file. `rank` > 0 requires that rank (the magic must be 00 00 08 <rank>).
IdxArray read_idx(const std::string& path, int rank = 0);
// The same from the file's bytes in memory (raw or gzip); `path` only names them in errors.
IdxArray parse_idx(std::span<const uint8_t> file_bytes, const std::string& path, int rank = 0);
// Writes `array` as u8 IDX (gzip-compressed when `gzip`), atomically (models/fileio.h).
void write_idx(const std::string& path, const IdxArray& array, bool gzip = false);

struct IdxImages {
  int64_t count = 0, rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // (count, rows, cols)
};
IdxImages read_idx_images(const std::string& path);
// Labels as int32; each must be < num_classes ("<path>: label at index i, expected < 10, found 12").
std::vector<int32_t> read_idx_labels(const std::string& path, int num_classes = 10);
// Throws "<labels_path>: label count, expected <n_images> (the image count of <images_path>), found <n_labels>".
void check_label_count(const std::string& images_path, int64_t n_images, const std::string& labels_path,
                       int64_t n_labels);

inline float pixel_value(uint8_t v) { return static_cast<float>(v) / 255.0f; }
// pixels: (N, H, W) u8 -> (N, 1, H, W) float32 in [0, 1].
Tensor images_to_tensor(std::span<const uint8_t> pixels, int64_t count, int64_t rows, int64_t cols);

// gzip helpers (zlib). `gunzip` accepts concatenated members and names `path` in its errors.
std::vector<uint8_t> gunzip(std::span<const uint8_t> compressed, const std::string& path);
std::vector<uint8_t> gzip_compress(std::span<const uint8_t> raw);

}  // namespace tapegrad
