// Strict JSON subset parser (see json.h). Recursive descent with an explicit depth limit, so hostile input
// ("[[[[...") cannot overflow the stack.
#include "models/json.h"

#include <cstdio>
#include <limits>

namespace tapegrad {

Json::Json() = default;
Json::Json(const Json&) = default;
Json::Json(Json&&) noexcept = default;
Json& Json::operator=(const Json&) = default;
Json& Json::operator=(Json&&) noexcept = default;
Json::~Json() = default;

const Json* Json::find(std::string_view key) const {
  for (const auto& [k, v] : object)
    if (k == key) return &v;
  return nullptr;
}

const char* Json::kind_name() const {
  switch (kind) {
    case Kind::object: return "an object";
    case Kind::array: return "an array";
    case Kind::string: return "a string";
    case Kind::integer: return "an integer";
  }
  return "?";
}

JsonError::JsonError(size_t offset_, std::string expected_, std::string found_)
    : ValueError(cat("at byte ", offset_, ": expected ", expected_, ", found ", found_)),
      offset(offset_),
      expected(std::move(expected_)),
      found(std::move(found_)) {}

namespace {

constexpr int kMaxDepth = 64;

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Json parse_document() {
    Json value = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) error("the end of the JSON text");
    return value;
  }

 private:
  std::string describe_here() const {
    if (pos_ >= text_.size()) return "the end of the text";
    const unsigned char c = text_[pos_];
    char buf[16];
    if (c >= 0x20 && c < 0x7F) std::snprintf(buf, sizeof buf, "'%c'", c);
    else std::snprintf(buf, sizeof buf, "byte 0x%02X", c);
    return buf;
  }
  [[noreturn]] void error(const std::string& expected) const { throw JsonError(pos_, expected, describe_here()); }
  [[noreturn]] void error(const std::string& expected, const std::string& found) const {
    throw JsonError(pos_, expected, found);
  }

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }
  bool peek(char c) const { return pos_ < text_.size() && text_[pos_] == c; }
  void expect(char c) {
    if (!peek(c)) error(cat("'", c, "'"));
    ++pos_;
  }

  Json parse_value(int depth) {
    if (depth > kMaxDepth) error(cat("nesting at most ", kMaxDepth, " deep"), "deeper nesting");
    skip_space();
    if (peek('{')) return parse_object(depth);
    if (peek('[')) return parse_array(depth);
    if (peek('"')) {
      Json v;
      v.kind = Json::Kind::string;
      v.string = parse_string();
      return v;
    }
    if (peek('-') || (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9')) return parse_integer();
    error("an object, array, string or integer");
  }

  Json parse_object(int depth) {
    Json v;
    v.kind = Json::Kind::object;
    expect('{');
    skip_space();
    if (peek('}')) {
      ++pos_;
      return v;
    }
    for (;;) {
      skip_space();
      const size_t key_pos = pos_;
      if (!peek('"')) error("a string key");
      std::string key = parse_string();
      if (v.find(key)) {
        pos_ = key_pos;
        error("unique keys", cat("a second \"", key, "\""));
      }
      skip_space();
      expect(':');
      Json member = parse_value(depth + 1);
      v.object.emplace_back(std::move(key), std::move(member));
      skip_space();
      if (peek(',')) {
        ++pos_;
        continue;
      }
      if (peek('}')) {
        ++pos_;
        return v;
      }
      error("',' or '}'");
    }
  }

  Json parse_array(int depth) {
    Json v;
    v.kind = Json::Kind::array;
    expect('[');
    skip_space();
    if (peek(']')) {
      ++pos_;
      return v;
    }
    for (;;) {
      v.array.push_back(parse_value(depth + 1));
      skip_space();
      if (peek(',')) {
        ++pos_;
        continue;
      }
      if (peek(']')) {
        ++pos_;
        return v;
      }
      error("',' or ']'");
    }
  }

  Json parse_integer() {
    Json v;
    v.kind = Json::Kind::integer;
    const bool negative = peek('-');
    if (negative) ++pos_;
    if (pos_ >= text_.size() || text_[pos_] < '0' || text_[pos_] > '9') error("a digit");
    if (text_[pos_] == '0' && pos_ + 1 < text_.size() && text_[pos_ + 1] >= '0' && text_[pos_ + 1] <= '9')
      error("an integer without leading zeros");
    uint64_t magnitude = 0;
    const uint64_t limit = negative ? uint64_t{1} << 63 : uint64_t{std::numeric_limits<int64_t>::max()};
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      const uint64_t digit = static_cast<uint64_t>(text_[pos_] - '0');
      if (magnitude > (limit - digit) / 10) error("an integer that fits 64 bits", "a larger one");
      magnitude = magnitude * 10 + digit;
      ++pos_;
    }
    if (peek('.') || peek('e') || peek('E')) error("an integer", "a number with a fraction or exponent");
    v.integer = negative ? static_cast<int64_t>(0 - magnitude) : static_cast<int64_t>(magnitude);
    return v;
  }

  uint32_t parse_hex4() {
    if (pos_ + 4 > text_.size()) error("4 hex digits after \\u");
    uint32_t code = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_];
      uint32_t digit;
      if (c >= '0' && c <= '9') digit = static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') digit = static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') digit = static_cast<uint32_t>(c - 'A' + 10);
      else error("a hex digit");
      code = code * 16 + digit;
      ++pos_;
    }
    return code;
  }

  static void append_utf8(std::string& out, uint32_t code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    for (;;) {
      if (pos_ >= text_.size()) error("'\"' closing the string");
      const unsigned char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) error("an escaped control character");
      if (c != '\\') {
        out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      ++pos_;
      if (pos_ >= text_.size()) error("an escape character");
      const char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t code = parse_hex4();
          if (code >= 0xD800 && code < 0xDC00) {  // high surrogate: a low one must follow
            if (pos_ + 2 > text_.size() || text_[pos_] != '\\' || text_[pos_ + 1] != 'u') error("a low surrogate \\uDC00-\\uDFFF");
            pos_ += 2;
            const uint32_t low = parse_hex4();
            if (low < 0xDC00 || low >= 0xE000) error("a low surrogate \\uDC00-\\uDFFF", cat("\\u", low));
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          } else if (code >= 0xDC00 && code < 0xE000) {
            error("a code point", "a lone low surrogate");
          }
          append_utf8(out, code);
          break;
        }
        default:
          --pos_;
          error("one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u");
      }
    }
  }

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

Json parse_json(std::string_view text) { return Parser(text).parse_document(); }

std::string json_quote(std::string_view text) {
  std::string out = "\"";
  for (const char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04X", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

}  // namespace tapegrad
