// safetensors save/load (see safetensors.h for the layout).
#include "models/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <set>

#include "models/fileio.h"
#include "models/json.h"
#include "ops/error.h"

namespace tapegrad {

static_assert(std::endian::native == std::endian::little, "safetensors data is little endian; add byte swapping");

namespace {

constexpr const char* kMetadataKey = "__metadata__";

const char* st_dtype(DType dtype) { return dtype == DType::f32 ? "F32" : "F64"; }

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

// Reads one tensor entry of the header; `where` prefixes errors ("<path>: tensor 'w'").
Entry parse_entry(const std::string& where, const std::string& name, const Json& info) {
  if (info.kind != Json::Kind::object) fail<FileError>(where, ": entry, expected an object, found ", info.kind_name());
  for (const auto& [key, value] : info.object) {
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail<FileError>(where, ": field, expected dtype, shape or data_offsets, found \"", key, "\"");
  }
  const Json* dtype = info.find("dtype");
  const Json* shape = info.find("shape");
  const Json* offsets = info.find("data_offsets");
  if (!dtype || !shape || !offsets)
    fail<FileError>(where, ": fields, expected dtype, shape and data_offsets, found ", info.object.size(), " of them");
  Entry e{name, DType::f32, {}, 0, 0};
  if (dtype->kind != Json::Kind::string || (dtype->string != "F32" && dtype->string != "F64"))
    fail<FileError>(where, ": dtype, expected \"F32\" or \"F64\", found ",
                    dtype->kind == Json::Kind::string ? json_quote(dtype->string) : std::string(dtype->kind_name()));
  e.dtype = dtype->string == "F32" ? DType::f32 : DType::f64;
  if (shape->kind != Json::Kind::array || shape->array.size() > static_cast<size_t>(kMaxRank))
    fail<FileError>(where, ": shape, expected an array of at most ", kMaxRank, " integers, found ", shape->kind_name(),
                    shape->kind == Json::Kind::array ? cat(" of ", shape->array.size()) : std::string());
  uint64_t numel = 1;
  for (const Json& d : shape->array) {
    if (d.kind != Json::Kind::integer || d.integer < 0 || d.integer > (int64_t{1} << 40))
      fail<FileError>(where, ": shape, expected integers in [0, 2^40], found ",
                      d.kind == Json::Kind::integer ? cat(d.integer) : std::string(d.kind_name()));
    e.shape.push_back(d.integer);
    numel *= static_cast<uint64_t>(d.integer);
    if (numel > (uint64_t{1} << 40)) fail<FileError>(where, ": shape, expected at most 2^40 elements, found more");
  }
  if (offsets->kind != Json::Kind::array || offsets->array.size() != 2 ||
      offsets->array[0].kind != Json::Kind::integer || offsets->array[1].kind != Json::Kind::integer ||
      offsets->array[0].integer < 0 || offsets->array[1].integer < offsets->array[0].integer)
    fail<FileError>(where, ": data_offsets, expected [begin, end] with 0 <= begin <= end, found another value");
  e.begin = static_cast<uint64_t>(offsets->array[0].integer);
  e.end = static_cast<uint64_t>(offsets->array[1].integer);
  const uint64_t nbytes = numel * dtype_size(e.dtype);
  if (e.end - e.begin != nbytes)
    fail<FileError>(where, ": data_offsets [", e.begin, ", ", e.end, "], expected ", nbytes, " bytes for shape ",
                    e.shape, " ", st_dtype(e.dtype), ", found ", e.end - e.begin);
  return e;
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata) {
  std::set<std::string> names;
  std::string header = "{";
  if (!metadata.empty()) {
    header += cat(json_quote(kMetadataKey), ":{");
    bool first = true;
    for (const auto& [key, value] : metadata) {
      header += cat(first ? "" : ",", json_quote(key), ":", json_quote(value));
      first = false;
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == kMetadataKey || !names.insert(name).second)
      fail<ValueError>("save_safetensors: tensor names must be unique and not __metadata__, got '", name, "'");
    if (!tensor.defined()) fail<ValueError>("save_safetensors: tensor '", name, "' must be defined, got an empty handle");
    std::string shape;
    for (int64_t d : tensor.shape()) shape += cat(shape.empty() ? "" : ",", d);
    header += cat(header.size() > 1 ? "," : "", json_quote(name), ":{\"dtype\":\"", st_dtype(tensor.dtype()),
                  "\",\"shape\":[", shape, "],\"data_offsets\":[", offset, ",", offset + tensor.nbytes(), "]}");
    offset += tensor.nbytes();
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');  // the data then starts 8-byte aligned
  std::vector<uint8_t> bytes(8 + header.size() + offset);
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  uint8_t* data = bytes.data() + 8 + header.size();
  for (const auto& [name, tensor] : tensors) {
    if (tensor.nbytes() > 0) std::memcpy(data, tensor.raw(), tensor.nbytes());
    data += tensor.nbytes();
  }
  write_file_atomic(path, bytes);
}

Checkpoint load_safetensors(const std::string& path) { return parse_safetensors(read_file_bytes(path), path); }

Checkpoint parse_safetensors(std::span<const uint8_t> bytes, const std::string& path) {
  if (bytes.size() < 8)
    fail<FileError>(path, ": file too short, expected at least 8 bytes (the header length), found ", bytes.size());
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  if (n > bytes.size() - 8)
    fail<FileError>(path, ": header length beyond the file, expected at most ", bytes.size() - 8, " bytes, found ", n,
                    n >= (uint64_t{1} << 32) ? "; hint: this is probably not a safetensors file" : "");
  Json header;
  try {
    header = parse_json(std::string_view(reinterpret_cast<const char*>(bytes.data()) + 8, n));
  } catch (const JsonError& e) {
    fail<FileError>(path, ": bad JSON header at byte ", e.offset, " of the header (file offset ", e.offset + 8,
                    "), expected ", e.expected, ", found ", e.found);
  }
  if (header.kind != Json::Kind::object)
    fail<FileError>(path, ": header, expected a JSON object, found ", header.kind_name());

  Checkpoint out;
  std::vector<Entry> entries;
  for (const auto& [name, value] : header.object) {
    if (name == kMetadataKey) {
      if (value.kind != Json::Kind::object)
        fail<FileError>(path, ": __metadata__, expected an object of strings, found ", value.kind_name());
      for (const auto& [key, v] : value.object) {
        if (v.kind != Json::Kind::string)
          fail<FileError>(path, ": metadata '", key, "', expected a string value, found ", v.kind_name());
        out.metadata[key] = v.string;
      }
      continue;
    }
    entries.push_back(parse_entry(cat(path, ": tensor '", name, "'"), name, value));
  }

  // Offsets must tile [0, data length) exactly: sorted by begin, each starts where the previous ended.
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  const uint64_t data_length = bytes.size() - 8 - n;
  uint64_t expected_begin = 0;
  std::string previous = "the start of the data";
  for (const Entry& e : entries) {
    if (e.begin != expected_begin)
      fail<FileError>(path, ": tensor '", e.name, "' data_offsets begin, expected ", expected_begin, " (the end of ",
                      previous, "), found ", e.begin, e.begin < expected_begin ? " (overlapping)" : " (a gap)");
    expected_begin = e.end;
    previous = cat("'", e.name, "'");
  }
  if (expected_begin != data_length)
    fail<FileError>(path, ": data length, expected ", expected_begin, " bytes (the end of ", previous, "), found ",
                    data_length, expected_begin > data_length ? "; hint: the file is truncated" : " (trailing bytes)");

  const uint8_t* data = bytes.data() + 8 + n;
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    if (t.nbytes() > 0) std::memcpy(t.raw(), data + e.begin, t.nbytes());
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

namespace {

std::string written_by_hint(const Metadata& metadata) {
  const auto model = metadata.find("model");
  if (model == metadata.end()) return "; hint: the checkpoint records no 'model' metadata, so it may come from another program";
  std::string hint = cat("; hint: this checkpoint was written by model '", model->second, "'");
  std::string others;
  for (const auto& [key, value] : metadata)
    if (key != "model") others += cat(others.empty() ? "" : ", ", key, "=", value);
  if (others.size() > 200) others = others.substr(0, 200) + "...";
  if (!others.empty()) hint += cat(" (", others, ")");
  return hint + "; build that model to load it";
}

}  // namespace

Metadata load_into(const std::string& path, const NamedTensors& targets, const Metadata& expected_metadata,
                   const std::string& ignored_prefix) {
  Checkpoint ck = load_safetensors(path);
  if (!ignored_prefix.empty())
    std::erase_if(ck.tensors, [&](const auto& named) { return named.first.rfind(ignored_prefix, 0) == 0; });
  for (const auto& [key, value] : expected_metadata) {
    const auto found = ck.metadata.find(key);
    if (found == ck.metadata.end())
      fail<FileError>(path, ": metadata '", key, "', expected ", value.empty() ? "present" : cat("'", value, "'"),
                      ", found nothing", written_by_hint(ck.metadata));
    if (!value.empty() && found->second != value)
      fail<FileError>(path, ": metadata '", key, "', expected '", value, "', found '", found->second, "'",
                      written_by_hint(ck.metadata));
  }
  std::vector<std::string> problems;
  std::vector<std::pair<Tensor, const Tensor*>> copies;  // (target alias, source)
  for (const auto& [target_name, target] : targets) {
    const std::string& name = target_name;  // a plain reference: clang 14 cannot capture structured bindings
    const auto it = std::find_if(ck.tensors.begin(), ck.tensors.end(), [&](const auto& p) { return p.first == name; });
    if (it == ck.tensors.end()) {
      problems.push_back(cat("missing tensor '", name, "' ", target.shape()));
      continue;
    }
    const Tensor& src = it->second;
    if (src.shape() != target.shape())
      problems.push_back(cat("tensor '", name, "' has shape ", src.shape(), ", expected ", target.shape()));
    else if (src.dtype() != target.dtype())
      problems.push_back(cat("tensor '", name, "' has dtype ", st_dtype(src.dtype()), ", expected ", st_dtype(target.dtype())));
    else
      copies.emplace_back(target, &src);
  }
  for (const auto& [file_name, tensor] : ck.tensors) {
    const std::string& name = file_name;
    const bool wanted = std::any_of(targets.begin(), targets.end(), [&](const auto& p) { return p.first == name; });
    if (!wanted) problems.push_back(cat("unexpected tensor '", name, "' ", tensor.shape()));
  }
  if (!problems.empty()) {
    std::string joined;
    const size_t shown = std::min<size_t>(problems.size(), 8);
    for (size_t i = 0; i < shown; ++i) joined += cat(i ? "; " : "", problems[i]);
    if (shown < problems.size()) joined += cat("; and ", problems.size() - shown, " more");
    fail<FileError>(path, ": ", joined, written_by_hint(ck.metadata));
  }
  for (auto& [target, src] : copies) target.copy_from(*src);
  return ck.metadata;
}

}  // namespace tapegrad
