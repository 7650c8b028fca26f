// bfloat16 and float16 storage types with conversion to and from float32 (round to nearest even).
// Arithmetic happens in float32; these types only hold bits.
#pragma once
#include <cstdint>
#include <cstring>

namespace kiln {

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

struct bf16 {
  uint16_t bits;
  bf16() = default;
  explicit bf16(float f) : bits(from_float(f)) {}
  operator float() const { return bits_f32(uint32_t(bits) << 16); }
  static uint16_t from_float(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return uint16_t(u >> 16);
  }
};

struct fp16 {
  uint16_t bits;
  fp16() = default;
  explicit fp16(float f) : bits(from_float(f)) {}
  operator float() const { return to_float(bits); }

  static uint16_t from_float(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return uint16_t(sign | 0x7e00u);           // NaN
    if (absx >= 0x477ff000u) return uint16_t(sign | 0x7c00u);          // overflow to inf (incl. rounding)
    if (absx < 0x38800000u) {                                          // subnormal or zero in half
      if (absx < 0x33000000u) return uint16_t(sign);                   // underflows to zero
      uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
      int shift = 113 - int(absx >> 23) + 13;                          // 126 - exp + 13 - 13 ... total shift
      uint32_t half_mant = mant >> shift;
      uint32_t rem = mant & ((1u << shift) - 1u);
      uint32_t halfway = 1u << (shift - 1);
      if (rem > halfway || (rem == halfway && (half_mant & 1u))) half_mant++;
      return uint16_t(sign | half_mant);
    }
    uint32_t r = absx + 0xfffu + ((absx >> 13) & 1u);                 // round to nearest even
    r -= 0x38000000u;                                                   // rebias exponent 127 -> 15
    return uint16_t(sign | (r >> 13));
  }

  static float to_float(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
      if (mant == 0) return bits_f32(sign);
      float v = float(mant) * (1.0f / 16777216.0f);  // mant * 2^-24
      return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
  }
};

}  // namespace kiln
