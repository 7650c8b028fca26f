// Value conversion between element types, used by copy/cast kernels on every backend:
// half types go through float32, bool is (x != 0), float to int truncates toward zero.
#pragma once
#include <cstdint>
#include <type_traits>
#include "half.h"

namespace kiln {

template <typename T> struct is_half : std::false_type {};
template <> struct is_half<bf16> : std::true_type {};
template <> struct is_half<fp16> : std::true_type {};

// uint8_t is kiln's bool storage.
template <typename To, typename From>
inline To convert_value(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (is_half<From>::value) {
    return convert_value<To, float>(float(v));
  } else if constexpr (is_half<To>::value) {
    return To(float(v));
  } else if constexpr (std::is_same_v<To, uint8_t>) {
    return v != From(0) ? 1 : 0;
  } else {
    return static_cast<To>(v);
  }
}

}  // namespace kiln
