// IDX reader/writer: round trips, and one clear FileError (naming the file, expected vs found) per corruption.
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include "models/fileio.h"
#include "models/idx.h"
#include "tests/models/temp_dir.h"

using namespace tapegrad;
using tapegrad::testing::TempDir;
using tapegrad::testing::contains;
using tapegrad::testing::file_error;
using tapegrad::testing::starts_with;

namespace {

IdxArray small_images(int64_t n = 3, int64_t h = 4, int64_t w = 5) {
  IdxArray a{{n, h, w}, {}};
  for (int64_t i = 0; i < n * h * w; ++i) a.data.push_back(static_cast<uint8_t>(i * 7));
  return a;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) { write_file_atomic(path, bytes); }


}  // namespace

TEST_CASE("idx: write then read gives the same dims and bytes, raw and gzip") {
  TempDir dir("idx_roundtrip");
  const IdxArray a = small_images();
  for (bool gz : {false, true}) {
    const std::string path = dir / (gz ? "a.gz" : "a");
    write_idx(path, a, gz);
    const std::vector<uint8_t> bytes = read_file_bytes(path);
    CHECK((bytes[0] == 0x1F) == gz);
    const IdxArray b = read_idx(path, 3);
    CHECK(b.dims == a.dims);
    CHECK(b.data == a.data);
    const IdxImages images = read_idx_images(path);
    CHECK(images.count == 3);
    CHECK(images.rows == 4);
    CHECK(images.cols == 5);
    CHECK_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(::getpid())));
  }
}

TEST_CASE("idx: images_to_tensor gives (N, 1, H, W) float32 scaled by 1/255") {
  const IdxArray a = small_images(2, 3, 2);
  Tensor t = images_to_tensor(a.data, 2, 3, 2);
  CHECK(t.shape() == Shape{2, 1, 3, 2});
  CHECK(t.dtype() == DType::f32);
  for (int64_t i = 0; i < t.numel(); ++i) CHECK(t.item(i) == doctest::Approx(a.data[i] / 255.0));
}

TEST_CASE("idx: gunzip reads concatenated gzip members") {
  std::vector<uint8_t> part1 = {1, 2, 3}, part2 = {4, 5};
  std::vector<uint8_t> joined = gzip_compress(part1);
  const std::vector<uint8_t> second = gzip_compress(part2);
  joined.insert(joined.end(), second.begin(), second.end());
  CHECK(gunzip(joined, "x.gz") == std::vector<uint8_t>{1, 2, 3, 4, 5});
}

TEST_CASE("idx: a missing file is a FileError naming it") {
  TempDir dir("idx_missing");
  const std::string path = dir / "nope-idx3-ubyte";
  const std::string msg = file_error([&] { read_idx(path); });
  CHECK(starts_with(msg, path + ": cannot open"));
}

TEST_CASE("idx: wrong magic names the file and shows expected and found bytes in hex") {
  TempDir dir("idx_magic");
  const std::string path = dir / "zip";
  write_bytes(path, {0x50, 0x4B, 0x03, 0x04, 0, 0, 0, 0});
  CHECK(file_error([&] { read_idx_images(path); }) ==
        path + ": wrong IDX magic, expected 00 00 08 03, found 50 4B 03 04");
  // A labels file passed where images are expected: right type, wrong rank.
  IdxArray labels{{4}, {0, 1, 2, 3}};
  write_idx(dir / "labels", labels);
  CHECK(file_error([&] { read_idx_images(dir / "labels"); }) ==
        dir / "labels" + ": wrong IDX magic, expected 00 00 08 03, found 00 00 08 01");
  // Non-u8 data types are refused with a hint.
  write_bytes(dir / "floats", {0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0});
  CHECK(contains(file_error([&] { read_idx(dir / "floats", 1); }), "found 00 00 0D 01; hint: only u8"));
}

TEST_CASE("idx: corrupt gzip data fails with the file name and the zlib reason") {
  TempDir dir("idx_gzip");
  const std::string path = dir / "a.gz";
  write_idx(path, small_images(), true);
  std::vector<uint8_t> bytes = read_file_bytes(path);
  for (size_t i = 12; i < bytes.size() - 8; ++i) bytes[i] ^= 0x5A;  // scramble the deflate body
  write_bytes(path, bytes);
  const std::string msg = file_error([&] { read_idx(path); });
  CHECK(starts_with(msg, path + ": gzip data fails to decompress, expected a valid gzip stream, found zlib error"));

  write_idx(path, small_images(), true);
  bytes = read_file_bytes(path);
  bytes.resize(bytes.size() / 2);
  write_bytes(path, bytes);
  CHECK(contains(file_error([&] { read_idx(path); }), path + ": gzip data fails to decompress"));
  CHECK(contains(file_error([&] { read_idx(path); }), "truncated"));

  write_idx(path, small_images(), true);
  bytes = read_file_bytes(path);
  bytes.push_back('x');
  write_bytes(path, bytes);
  CHECK(starts_with(file_error([&] { read_idx(path); }), path + ": trailing garbage after the gzip data"));
}

TEST_CASE("idx: truncated or over-long data states expected and found byte counts") {
  TempDir dir("idx_size");
  for (bool gz : {false, true}) {
    const std::string path = dir / (gz ? "a.gz" : "a");
    IdxArray a = small_images();  // 3 x 4 x 5 = 60 bytes after a 16-byte header
    a.data.pop_back();
    a.dims = {3, 4, 5};
    std::vector<uint8_t> bytes = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5};
    bytes.insert(bytes.end(), a.data.begin(), a.data.end());
    write_bytes(path, gz ? gzip_compress(bytes) : bytes);
    const std::string where = gz ? " (after gunzip)" : "";
    CHECK(file_error([&] { read_idx_images(path); }) ==
          path + ": truncated data" + where + ", expected 60 bytes of data after the 16-byte header, found 59");
    bytes.push_back(1);
    bytes.push_back(2);
    write_bytes(path, gz ? gzip_compress(bytes) : bytes);
    CHECK(file_error([&] { read_idx_images(path); }) ==
          path + ": trailing garbage" + where + ", expected 60 bytes of data after the 16-byte header, found 61");
    bytes.resize(10);  // inside the dims
    write_bytes(path, gz ? gzip_compress(bytes) : bytes);
    CHECK(file_error([&] { read_idx_images(path); }) ==
          path + ": truncated IDX header" + where + ", expected 16 bytes, found 10");
  }
  // Dims whose product is absurd are refused before any allocation.
  write_bytes(dir / "huge", {0, 0, 8, 3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 1});
  CHECK(starts_with(file_error([&] { read_idx_images(dir / "huge"); }), dir / "huge" + ": header dims"));
}

TEST_CASE("idx: truncating a gzip IDX file at every byte gives a FileError, never a crash") {
  TempDir dir("idx_every_byte");
  const std::string path = dir / "a.gz";
  write_idx(path, small_images(), true);
  const std::vector<uint8_t> full = read_file_bytes(path);
  for (size_t n = 0; n < full.size(); ++n) CHECK_THROWS_AS(parse_idx(std::span(full).first(n), path), FileError);
}

TEST_CASE("idx: labels out of range and label/image count mismatch name the files") {
  TempDir dir("idx_labels");
  write_idx(dir / "labels", IdxArray{{4}, {0, 9, 12, 3}});
  CHECK(file_error([&] { read_idx_labels(dir / "labels", 10); }) ==
        dir / "labels" + ": label at index 2, expected < 10, found 12");
  CHECK(file_error([&] { check_label_count(dir / "images", 5, dir / "labels", 4); }) ==
        dir / "labels" + ": label count, expected 5 (the image count of " + dir / "images" + "), found 4");
}
