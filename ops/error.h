// Exceptions and message helpers shared by every layer of tapegrad.
//
// Messages follow one pattern so that users can grep for them:
//   <op>: <what> must <rule>, got <value>        (e.g. "matmul: inner dimensions must match, got (2, 3) @ (4, 5)")
//   <path>: <what>, expected <x>, found <y>       (files)
// plus "hint: ..." when a likely cause is known.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tapegrad {

// One family, rooted in std::runtime_error, so `catch (const std::exception&)` still works.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ShapeError : Error {  // tensor shapes that do not fit an op
  using Error::Error;
};
struct ValueError : Error {  // bad arguments that are not shapes (axis out of range, negative sizes, ...)
  using Error::Error;
};
struct FileError : Error {  // unreadable, corrupt or mismatched files
  using Error::Error;
};
struct TapeError : Error {  // misuse of the autodiff tape (stale handles, missing seeds)
  using Error::Error;
};
struct NonFiniteError : Error {  // an op produced NaN or Inf while Tape::set_check_finite(true) was on
  using Error::Error;
};

// Concatenates anything printable with operator<<: cat("got ", shape, " and ", 3).
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

template <class E = Error, class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw E(cat(parts...));
}

}  // namespace tapegrad
