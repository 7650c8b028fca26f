// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the
// counter-based generator behind kiln's random ops, and the conversions from its 32-bit words to
// uniform, normal and bounded integer values. Header-only and free of CPU-only calls so that the
// CUDA kernels include it unchanged and draw the same numbers as the CPU for the same seed.
//
// The stream of a (seed, offset) pair is a sequence of 128-bit blocks: block b is
// philox4x32_10(counter = offset + b as a 64-bit number in words 0..1, words 2..3 zero;
// key = seed as two 32-bit words). A kernel that needs W words per element takes element i's words
// from positions i*W .. i*W+W-1 of that stream, so an element's value depends only on
// (seed, offset, i), never on how the work is split between threads or GPU blocks.
#pragma once
#include <cstdint>
#include <cmath>
#include "host_device.h"

namespace kiln {

struct PhiloxBlock {
  uint32_t w[4];
};

namespace philox_detail {
constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // key schedule (golden ratio, sqrt(3) - 1)

KILN_HOST_DEVICE void round(uint32_t c[4], uint32_t k0, uint32_t k1) {
  const uint64_t p0 = uint64_t(kM0) * c[0];
  const uint64_t p1 = uint64_t(kM1) * c[2];
  const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
  const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
  c[0] = hi1 ^ c[1] ^ k0;
  c[1] = lo1;
  c[2] = hi0 ^ c[3] ^ k1;
  c[3] = lo0;
}
}  // namespace philox_detail

// Ten rounds of Philox4x32 on counter c with key (k0, k1).
KILN_HOST_DEVICE PhiloxBlock philox4x32_10(PhiloxBlock c, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; r++) {
    if (r > 0) {
      k0 += philox_detail::kW0;
      k1 += philox_detail::kW1;
    }
    philox_detail::round(c.w, k0, k1);
  }
  return c;
}

// Block b of the stream of (seed, offset).
KILN_HOST_DEVICE PhiloxBlock philox_block(uint64_t seed, uint64_t offset, uint64_t b) {
  const uint64_t n = offset + b;
  PhiloxBlock c = {{uint32_t(n), uint32_t(n >> 32), 0u, 0u}};
  return philox4x32_10(c, uint32_t(seed), uint32_t(seed >> 32));
}

// Number of blocks a kernel drawing words_per_element words for each of n elements consumes.
KILN_HOST_DEVICE uint64_t philox_blocks(int64_t n, int words_per_element) {
  return (uint64_t(n) * uint64_t(words_per_element) + 3) / 4;
}

// [0, 1) with 24 random bits: every value is a float32 exactly.
KILN_HOST_DEVICE float uniform_f32(uint32_t w) { return float(w >> 8) * (1.0f / 16777216.0f); }
// (0, 1] with 24 random bits: safe to take the log of (Box-Muller).
KILN_HOST_DEVICE float uniform_open_f32(uint32_t w) { return float((w >> 8) + 1u) * (1.0f / 16777216.0f); }
// [0, 1) with 53 random bits from two words: every value is a float64 exactly.
KILN_HOST_DEVICE double uniform_f64(uint32_t hi, uint32_t lo) {
  return double(((uint64_t(hi) << 32) | lo) >> 11) * (1.0 / 9007199254740992.0);
}
// (0, 1] with 53 random bits.
KILN_HOST_DEVICE double uniform_open_f64(uint32_t hi, uint32_t lo) {
  return double((((uint64_t(hi) << 32) | lo) >> 11) + 1u) * (1.0 / 9007199254740992.0);
}

// An integer in [0, range) from 64 random bits by multiply-shift: floor(x * range / 2^64).
// No rejection loop (so every element costs the same on a GPU); each value gets floor or ceil of
// 2^64 / range of the inputs, a relative bias of at most range / 2^64 (below 2^-11 for every range
// a JavaScript number can express, below 2^-32 for ranges up to 2^32).
KILN_HOST_DEVICE uint64_t bounded_u64(uint32_t hi, uint32_t lo, uint64_t range) {
  const uint64_t x = (uint64_t(hi) << 32) | lo;
#if defined(__CUDA_ARCH__)
  return __umul64hi(x, range);
#else
  return uint64_t((unsigned __int128)x * range >> 64);
#endif
}

// Box-Muller: two independent standard normals from u1 in (0, 1] and u2 in [0, 1).
template <typename T>
KILN_HOST_DEVICE void box_muller(T u1, T u2, T* z0, T* z1) {
  const T r = std::sqrt(T(-2) * std::log(u1));
  const T theta = T(6.283185307179586476925286766559) * u2;
  *z0 = r * std::cos(theta);
  *z1 = r * std::sin(theta);
}

}  // namespace kiln
