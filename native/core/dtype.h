// Element types: the enum shared with TypeScript (same numbering), sizes, names, and the
// dispatch macros that turn a runtime dtype into a C++ type for templated kernels.
#pragma once
#include <cstdint>
#include <cstddef>
#include <initializer_list>
#include <string>
#include "half.h"

namespace kiln {

enum class DType : int32_t {
  Float32 = 0,
  Float64 = 1,
  BFloat16 = 2,
  Float16 = 3,
  Int32 = 4,
  Int64 = 5,
  Bool = 6,
};
constexpr int kNumDTypes = 7;

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::Float32: return 4;
    case DType::Float64: return 8;
    case DType::BFloat16: return 2;
    case DType::Float16: return 2;
    case DType::Int32: return 4;
    case DType::Int64: return 8;
    case DType::Bool: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::BFloat16: return "bfloat16";
    case DType::Float16: return "float16";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::Bool: return "bool";
  }
  return "unknown";
}

// A set of dtypes (bit i = DType i): what one backend's kernel takes.
struct DTypeSet {
  uint32_t bits = 0;
  constexpr DTypeSet() = default;
  constexpr DTypeSet(std::initializer_list<DType> ts) {
    for (DType t : ts) bits |= 1u << int32_t(t);
  }
  constexpr bool has(DType t) const { return bits >> int32_t(t) & 1u; }
};
// Shorthands for the usual coverages.
inline constexpr DTypeSet kFloat32And64{DType::Float32, DType::Float64};
inline constexpr DTypeSet kFloatTypes{DType::Float32, DType::Float64, DType::BFloat16, DType::Float16};
inline constexpr DTypeSet kAllDTypes{DType::Float32, DType::Float64, DType::BFloat16, DType::Float16,
                                     DType::Int32,   DType::Int64,   DType::Bool};

inline bool dtype_valid(int32_t t) { return t >= 0 && t < kNumDTypes; }
inline bool is_floating(DType t) { return t == DType::Float32 || t == DType::Float64 || t == DType::BFloat16 || t == DType::Float16; }
inline bool is_integral(DType t) { return t == DType::Int32 || t == DType::Int64; }

}  // namespace kiln

// KILN_DISPATCH_*(dtype, op_name, body): runs body with `scalar_t` bound to the C++ type of dtype;
// any other dtype throws a DTypeError naming op_name.
#define KILN_DTYPE_CASE(ENUM, TYPE, ...) \
  case ::kiln::DType::ENUM: {            \
    using scalar_t = TYPE;               \
    __VA_ARGS__;                         \
    break;                               \
  }

#define KILN_DTYPE_FAIL(dt, op) \
  default: ::kiln::throw_dtype_unsupported(op, dt)

#define KILN_DISPATCH_FLOAT(dt, op, ...)                      \
  switch (dt) {                                                \
    KILN_DTYPE_CASE(Float32, float, __VA_ARGS__)               \
    KILN_DTYPE_CASE(Float64, double, __VA_ARGS__)              \
    KILN_DTYPE_FAIL(dt, op);                                   \
  }

// Every floating dtype; bfloat16 and float16 bind their storage types (kernels compute them in float32).
#define KILN_DISPATCH_FLOATING(dt, op, ...)                  \
  switch (dt) {                                              \
    KILN_DTYPE_CASE(Float32, float, __VA_ARGS__)             \
    KILN_DTYPE_CASE(Float64, double, __VA_ARGS__)            \
    KILN_DTYPE_CASE(BFloat16, ::kiln::bf16, __VA_ARGS__)     \
    KILN_DTYPE_CASE(Float16, ::kiln::fp16, __VA_ARGS__)      \
    KILN_DTYPE_FAIL(dt, op);                                 \
  }

#define KILN_DISPATCH_NUMERIC(dt, op, ...)                    \
  switch (dt) {                                                \
    KILN_DTYPE_CASE(Float32, float, __VA_ARGS__)               \
    KILN_DTYPE_CASE(Float64, double, __VA_ARGS__)              \
    KILN_DTYPE_CASE(Int32, int32_t, __VA_ARGS__)               \
    KILN_DTYPE_CASE(Int64, int64_t, __VA_ARGS__)               \
    KILN_DTYPE_FAIL(dt, op);                                   \
  }

#define KILN_DISPATCH_ALL(dt, op, ...)                        \
  switch (dt) {                                                \
    KILN_DTYPE_CASE(Float32, float, __VA_ARGS__)               \
    KILN_DTYPE_CASE(Float64, double, __VA_ARGS__)              \
    KILN_DTYPE_CASE(Int32, int32_t, __VA_ARGS__)               \
    KILN_DTYPE_CASE(Int64, int64_t, __VA_ARGS__)               \
    KILN_DTYPE_CASE(Bool, uint8_t, __VA_ARGS__)                \
    KILN_DTYPE_CASE(BFloat16, ::kiln::bf16, __VA_ARGS__)       \
    KILN_DTYPE_CASE(Float16, ::kiln::fp16, __VA_ARGS__)        \
    KILN_DTYPE_FAIL(dt, op);                                   \
  }

#define KILN_DISPATCH_INDEX(dt, op, ...)                      \
  switch (dt) {                                                \
    KILN_DTYPE_CASE(Int32, int32_t, __VA_ARGS__)               \
    KILN_DTYPE_CASE(Int64, int64_t, __VA_ARGS__)               \
    KILN_DTYPE_FAIL(dt, op);                                   \
  }
