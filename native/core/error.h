// Typed errors thrown by native code. The binding turns each into an instance of the matching
// exported JavaScript class (ShapeError, DTypeError, ...). Native code never exits or aborts.
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include "dtype.h"

namespace kiln {

// Same names as the JavaScript error classes (lib/errors.ts).
enum class ErrorCode : int32_t {
  Shape = 0,
  DType = 1,
  Device = 2,
  Index = 3,
  Value = 4,
  Cuda = 5,
  OutOfMemory = 6,
  Dist = 7,
  Format = 8,
  Disposed = 9,
  Internal = 10,
};

inline const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::Shape: return "ShapeError";
    case ErrorCode::DType: return "DTypeError";
    case ErrorCode::Device: return "DeviceError";
    case ErrorCode::Index: return "IndexError";
    case ErrorCode::Value: return "ValueError";
    case ErrorCode::Cuda: return "CudaError";
    case ErrorCode::OutOfMemory: return "OutOfMemoryError";
    case ErrorCode::Dist: return "DistError";
    case ErrorCode::Format: return "FormatError";
    case ErrorCode::Disposed: return "DisposedError";
    case ErrorCode::Internal: return "KilnError";
  }
  return "KilnError";
}

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string op, const std::string& msg)
      : std::runtime_error(op.empty() ? msg : op + ": " + msg), code_(code), op_(std::move(op)), detail_(msg) {}
  ErrorCode code() const { return code_; }
  const std::string& op() const { return op_; }
  const std::string& detail() const { return detail_; }

 private:
  ErrorCode code_;
  std::string op_;
  std::string detail_;
};

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); i++) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

namespace detail {
inline void cat_to(std::ostringstream&) {}
template <typename T, typename... R>
void cat_to(std::ostringstream& o, const T& v, const R&... r) {
  o << v;
  cat_to(o, r...);
}
}  // namespace detail

// Concatenates its arguments with operator<<.
template <typename... A>
std::string str_cat(const A&... a) {
  std::ostringstream o;
  detail::cat_to(o, a...);
  return o.str();
}

[[noreturn]] inline void throw_dtype_unsupported(const char* op, DType dt) {
  throw Error(ErrorCode::DType, op, str_cat("dtype ", dtype_name(dt), " is not supported"));
}

}  // namespace kiln

// KILN_CHECK(cond, Code, op, parts...): throws kiln::Error(ErrorCode::Code, op, message) when cond
// is false; the message is the concatenation of parts, plus the file and line for Internal errors.
#define KILN_CHECK(cond, CODE, op, ...)                                                   \
  do {                                                                                    \
    if (!(cond)) throw ::kiln::Error(::kiln::ErrorCode::CODE, op, ::kiln::str_cat(__VA_ARGS__)); \
  } while (0)

#define KILN_INTERNAL_CHECK(cond, op)                                                              \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      throw ::kiln::Error(::kiln::ErrorCode::Internal, op,                                         \
                          ::kiln::str_cat("internal check failed: " #cond " at ", __FILE__, ":", __LINE__)); \
  } while (0)
