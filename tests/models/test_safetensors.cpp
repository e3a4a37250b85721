// safetensors checkpoints: round trips, strict validation (every failure a FileError naming the file),
// load_into's name/shape/dtype checks, and interchange with Python's json + numpy in both directions.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

#include "models/fileio.h"
#include "models/json.h"
#include "models/safetensors.h"
#include "tests/models/temp_dir.h"

using namespace tapegrad;
using tapegrad::testing::TempDir;
using tapegrad::testing::contains;
using tapegrad::testing::file_error;
using tapegrad::testing::starts_with;

namespace {

// Values i * 0.25 - 1 (exact in both dtypes), the same formula the Python check uses.
Tensor ramp(const Shape& shape, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  for (int64_t i = 0; i < t.numel(); ++i) t.set_item(i, i * 0.25 - 1.0);
  return t;
}

NamedTensors sample_tensors() {
  return {{"encoder.fc1.weight", ramp({3, 4}, DType::f32)},
          {"encoder.fc1.bias", ramp({3}, DType::f32)},
          {"scale", ramp({}, DType::f64)},
          {"empty", ramp({0, 2}, DType::f32)},
          {"decoder.w\"quoted\\", ramp({2, 1, 2}, DType::f64)}};
}

// Writes u64 header length + header + data bytes verbatim.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes, uint64_t declared = ~0ull) {
  std::vector<uint8_t> bytes(8 + header.size() + data_bytes, 0);
  const uint64_t n = declared == ~0ull ? header.size() : declared;
  std::memcpy(bytes.data(), &n, 8);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  write_file_atomic(path, bytes);
}


}  // namespace

TEST_CASE("safetensors: save then load returns the same names, order, dtypes, shapes, bits and metadata") {
  TempDir dir("st_roundtrip");
  const std::string path = dir / "ck.safetensors";
  const NamedTensors tensors = sample_tensors();
  const Metadata metadata = {{"model", "vae-mlp"}, {"note", "line\nbreak \"q\" \\ \x01"}};
  save_safetensors(path, tensors, metadata);
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  const Checkpoint ck = load_safetensors(path);
  REQUIRE(ck.tensors.size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    CHECK(ck.tensors[i].first == tensors[i].first);
    CHECK(bitwise_equal(ck.tensors[i].second, tensors[i].second));
  }
  CHECK(ck.metadata == metadata);
  CHECK_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(::getpid())));
  save_safetensors(path, {}, {});  // overwriting works and an empty checkpoint is valid
  CHECK(load_safetensors(path).tensors.empty());
}

TEST_CASE("safetensors: saving refuses duplicate names and the reserved __metadata__ name") {
  TempDir dir("st_names");
  CHECK_THROWS_AS(save_safetensors(dir / "a", {{"w", ramp({1}, DType::f32)}, {"w", ramp({1}, DType::f32)}}), ValueError);
  CHECK_THROWS_AS(save_safetensors(dir / "a", {{"__metadata__", ramp({1}, DType::f32)}}), ValueError);
}

TEST_CASE("safetensors: every corruption gives a FileError naming the file and stating expected vs found") {
  TempDir dir("st_corrupt");
  const std::string p = dir / "bad.safetensors";
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  struct Case {
    const char* what;
    std::string header;
    size_t data;
    std::string message;  // expected message after "<path>: "
  };
  const Case cases[] = {
      {"bad JSON", R"({"a":{"dtype":"F32" "shape":[2]}})", 8,
       "bad JSON header at byte 20 of the header (file offset 28), expected ',' or '}', found '\"'"},
      {"float in header", R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8,
       "bad JSON header at byte 30 of the header (file offset 38), expected an integer, found a number with a fraction or exponent"},
      {"literal true", R"({"__metadata__":{"k":true}})", 0,
       "bad JSON header at byte 21 of the header (file offset 29), expected an object, array, string or integer, found 't'"},
      {"duplicate key", "{" + ok_entry + "," + ok_entry + "}", 16,
       "bad JSON header at byte 54 of the header (file offset 62), expected unique keys, found a second \"a\""},
      {"unknown dtype", R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})", 4,
       "tensor 'a': dtype, expected \"F32\" or \"F64\", found \"BF16\""},
      {"shape/offset mismatch", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8,
       "tensor 'a': data_offsets [0, 8], expected 12 bytes for shape (3,) F32, found 8"},
      {"negative dim", R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}})", 8,
       "tensor 'a': shape, expected integers in [0, 2^40], found -1"},
      {"gap", "{" + ok_entry + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})", 16,
       "tensor 'b' data_offsets begin, expected 8 (the end of 'a'), found 12 (a gap)"},
      {"overlap", "{" + ok_entry + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8,
       "tensor 'b' data_offsets begin, expected 8 (the end of 'a'), found 4 (overlapping)"},
      {"not from 0", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8,
       "tensor 'a' data_offsets begin, expected 0 (the end of the start of the data), found 4 (a gap)"},
      {"truncated data", "{" + ok_entry + "}", 6, "data length, expected 8 bytes (the end of 'a'), found 6; hint: the file is truncated"},
      {"trailing data", "{" + ok_entry + "}", 9, "data length, expected 8 bytes (the end of 'a'), found 9 (trailing bytes)"},
      {"non-string metadata", R"({"__metadata__":{"epoch":3}})", 0, "metadata 'epoch', expected a string value, found an integer"},
      {"unknown field", R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,4],"x":1}})", 4,
       "tensor 'a': field, expected dtype, shape or data_offsets, found \"x\""},
      {"header not an object", "[1]", 0, "header, expected a JSON object, found an array"},
  };
  for (const Case& c : cases) {
    const std::string what = c.what;
    CAPTURE(what);
    write_raw(p, c.header, c.data);
    CHECK(file_error([&] { load_safetensors(p); }) == p + ": " + c.message);
  }
  write_raw(p, "", 0);
  CHECK(starts_with(file_error([&] { load_safetensors(p); }), p + ": bad JSON header at byte 0"));
  write_raw(p, "{}", 0, 1000);
  CHECK(file_error([&] { load_safetensors(p); }) == p + ": header length beyond the file, expected at most 2 bytes, found 1000");
  write_file_atomic(p, std::vector<uint8_t>{1, 2, 3});
  CHECK(file_error([&] { load_safetensors(p); }) == p + ": file too short, expected at least 8 bytes (the header length), found 3");
  CHECK(starts_with(file_error([&] { load_safetensors(dir / "missing"); }), dir / "missing" + ": cannot open"));
  write_raw(p, std::string(100, '['), 0);
  CHECK(starts_with(file_error([&] { load_safetensors(p); }), p + ": bad JSON header at byte 65"));
}

TEST_CASE("safetensors: truncating a checkpoint at every byte gives a FileError, never a crash") {
  TempDir dir("st_truncate");
  const std::string path = dir / "ck.safetensors";
  save_safetensors(path, sample_tensors(), {{"model", "m"}});
  const std::vector<uint8_t> full = read_file_bytes(path);
  for (size_t n = 0; n < full.size(); ++n) CHECK_THROWS_AS(parse_safetensors(std::span(full).first(n), path), FileError);
  const std::string cut = dir / "cut.safetensors";  // and once through the file system
  tapegrad::testing::write_plain(cut, std::span(full).first(full.size() - 1));
  CHECK_THROWS_WITH_AS(load_safetensors(cut), doctest::Contains((cut + ": data length").c_str()), FileError);
}

TEST_CASE("safetensors: load_into copies into aliases, and reports missing, unexpected and mis-shaped tensors") {
  TempDir dir("st_load_into");
  const std::string path = dir / "ck.safetensors";
  save_safetensors(path, {{"encoder.fc1.weight", ramp({4, 3}, DType::f32)}, {"b", ramp({3}, DType::f32)}},
                   {{"model", "vae-mlp"}, {"hidden", "4"}});
  Tensor w = Tensor::zeros({4, 3}), b = Tensor::zeros({3});
  const Metadata meta = load_into(path, {{"encoder.fc1.weight", w}, {"b", b}}, {{"model", "vae-mlp"}});
  CHECK(meta.at("hidden") == "4");
  CHECK(bitwise_equal(w, ramp({4, 3}, DType::f32)));

  Tensor small = Tensor::zeros({2, 3});
  CHECK(file_error([&] { load_into(path, {{"encoder.fc1.weight", small}, {"b", b}}); }) ==
        path + ": tensor 'encoder.fc1.weight' has shape (4, 3), expected (2, 3); hint: this checkpoint was written by model "
               "'vae-mlp' (hidden=4); build that model to load it");
  CHECK(small.item(0) == 0.0);  // nothing is copied when anything mismatches
  CHECK(file_error([&] { load_into(path, {{"encoder.fc1.weight", w}, {"c", b}}); }) ==
        path + ": missing tensor 'c' (3,); unexpected tensor 'b' (3,); hint: this checkpoint was written by model "
               "'vae-mlp' (hidden=4); build that model to load it");
  CHECK(starts_with(file_error([&] { load_into(path, {{"encoder.fc1.weight", w}, {"b", Tensor::zeros({3}, DType::f64)}}); }),
                    path + ": tensor 'b' has dtype F32, expected F64"));
  CHECK(starts_with(file_error([&] { load_into(path, {{"encoder.fc1.weight", w}, {"b", b}}, {{"model", "vae-conv"}}); }),
                    path + ": metadata 'model', expected 'vae-conv', found 'vae-mlp'"));
  CHECK(starts_with(file_error([&] { load_into(path, {{"encoder.fc1.weight", w}, {"b", b}}, {{"epoch", ""}}); }),
                    path + ": metadata 'epoch', expected present, found nothing"));
}

TEST_CASE("safetensors json header: the strict parser decodes escapes and surrogate pairs and rejects what the format does not use") {
  const Json j = parse_json(R"( {"s": "a\"b\\c\/\n\u00e9\ud83d\ude00", "a": [1, -2, 0], "o": {}} )");
  CHECK(j.find("s")->string == "a\"b\\c/\n\xC3\xA9\xF0\x9F\x98\x80");
  CHECK(j.find("a")->array[1].integer == -2);
  CHECK(j.find("o")->object.empty());
  for (const char* bad : {"01", "1e3", "null", "\"\\x\"", "\"\\ud800\"", "{\"a\":1,}", "[1 2]", "\"a\nb\"", "{} x",
                          "99999999999999999999"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(parse_json(bad), JsonError);
  }
  CHECK(parse_json("-9223372036854775808").integer == INT64_MIN);
  CHECK(parse_json(json_quote("tab\there \x02")).string == "tab\there \x02");
}

// Python interop: CI installs python3-numpy for Debian's /usr/bin/python3 (shared/DEPENDENCIES.md).
TEST_CASE("safetensors: Python's json + numpy read our checkpoint, and we read one Python wrote") {
  TempDir dir("st_python");
  const std::string ours = dir / "ours.safetensors", theirs = dir / "theirs.safetensors", script = dir / "check.py";
  save_safetensors(ours, sample_tensors(), {{"model", "vae-mlp"}});
  std::ofstream(script) << R"PY(
import json, struct, sys
import numpy as np
ours, theirs = sys.argv[1], sys.argv[2]
raw = open(ours, "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
header = json.loads(raw[8:8 + n])
assert n % 8 == 0, n
assert header["__metadata__"] == {"model": "vae-mlp"}, header["__metadata__"]
data = raw[8 + n:]
expect = {"encoder.fc1.weight": [3, 4], "encoder.fc1.bias": [3], "scale": [], "empty": [0, 2], 'decoder.w"quoted\\': [2, 1, 2]}
assert set(expect) == set(header) - {"__metadata__"}, header.keys()
for name, shape in expect.items():
    info = header[name]
    b, e = info["data_offsets"]
    dt = {"F32": "<f4", "F64": "<f8"}[info["dtype"]]
    x = np.frombuffer(data[b:e], dtype=dt).reshape(info["shape"])
    assert list(x.shape) == shape, (name, x.shape)
    ref = (np.arange(x.size) * 0.25 - 1.0).reshape(shape)
    assert np.array_equal(x, ref), (name, x, ref)
# Now write one like the reference writer: sorted keys, metadata first, padded with spaces to 8.
arrays = {"b": np.arange(3, dtype="<f4") * 0.5, "a": np.arange(6, dtype="<f8").reshape(2, 3) - 2}
hdr, blobs, off = {"__metadata__": {"model": "py"}}, [], 0
for k in sorted(arrays):
    v = arrays[k].tobytes()
    hdr[k] = {"dtype": "F32" if arrays[k].dtype == np.float32 else "F64", "shape": list(arrays[k].shape), "data_offsets": [off, off + len(v)]}
    blobs.append(v); off += len(v)
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
open(theirs, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
)PY";
  const std::string cmd = "/usr/bin/python3 " + script + " '" + ours + "' '" + theirs + "'";
  const int status = std::system(cmd.c_str());
  INFO("command: ", cmd, "; needs /usr/bin/python3 with numpy (apt-get install python3-numpy)");
  REQUIRE(status == 0);
  const Checkpoint ck = load_safetensors(theirs);
  REQUIRE(ck.tensors.size() == 2);
  CHECK(ck.tensors[0].first == "a");
  CHECK(ck.tensors[0].second.dtype() == DType::f64);
  CHECK(ck.tensors[0].second.shape() == Shape{2, 3});
  CHECK(ck.tensors[0].second.item(5) == 3.0);
  CHECK(ck.tensors[1].second.item(2) == 1.0f);
  CHECK(ck.metadata.at("model") == "py");
}

TEST_CASE("safetensors: flipping any single byte of a checkpoint either loads or gives a FileError, never a crash") {
  TempDir dir("st_flip");
  const std::string path = dir / "ck.safetensors";
  save_safetensors(path, sample_tensors(), {{"model", "m"}});
  const std::vector<uint8_t> full = read_file_bytes(path);
  const std::string bad = dir / "bad.safetensors";
  int loaded = 0, rejected = 0;
  for (size_t i = 0; i < full.size(); ++i) {
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xFF}}) {
      std::vector<uint8_t> bytes = full;
      bytes[i] ^= mask;
      try {
        parse_safetensors(bytes, bad);
        ++loaded;
      } catch (const FileError& e) {
        CHECK(starts_with(e.what(), bad + ": "));
        ++rejected;
      }
    }
  }
  CHECK(rejected > 0);
  CHECK(loaded > 0);  // flips inside the data (and some inside names) are undetectable by design: no checksum
}
