// A small strict JSON parser for file headers (safetensors): objects, arrays, strings with escapes, integers.
// Anything else (floats, exponents, true/false/null, duplicate keys, leading zeros, raw control characters,
// nesting deeper than 64) is rejected, with the byte offset of the problem.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ops/error.h"

namespace tapegrad {

struct Json {
  enum class Kind { object, array, string, integer };
  Kind kind = Kind::object;
  int64_t integer = 0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;  // document order

  // Declared here, defined in json.cpp: a member container of pairs holding the (here still incomplete) Json itself
  // is not portable otherwise (clang with libstdc++ rejects the implicit ones).
  Json();
  Json(const Json&);
  Json(Json&&) noexcept;
  Json& operator=(const Json&);
  Json& operator=(Json&&) noexcept;
  ~Json();

  const Json* find(std::string_view key) const;  // object member or nullptr
  const char* kind_name() const;                 // "an object", "an array", "a string", "an integer"
};

// what(): "at byte <offset>: expected <x>, found <y>"; the parts are kept for callers that add a file name.
struct JsonError : ValueError {
  JsonError(size_t offset, std::string expected, std::string found);
  size_t offset;
  std::string expected, found;
};

Json parse_json(std::string_view text);

// `text` as a JSON string literal, quotes included ("a\"b" -> "\"a\\\"b\"").
std::string json_quote(std::string_view text);

}  // namespace tapegrad
