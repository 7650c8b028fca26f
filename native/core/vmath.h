// vm::exp and vm::tanh: float32 exp and tanh written so that GCC vectorizes loops that call them:
// straight-line arithmetic, bit moves and selects, no calls and no branches (libm's expf/tanhf are
// calls, which keep a loop scalar). exp: Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2,
// e^r by a degree-7 polynomial (Taylor coefficients; truncation error below 1e-8 relative), times
// 2^n applied as two factors 2^(n/2) so that every exponent field stays normal; a few ulp across
// the range (subnormal results included), 0 below -103.98 (so exp(-inf) = 0), inf above 88.73,
// NaN for NaN. Other types (double) keep libm. Host code only: the elementwise formulas
// (native/ops/elementwise.h) use them on the host and the CUDA math library on the device.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace kiln {

namespace vm {

inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

inline float exp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  // Selects rather than fmin/fmax (which do not vectorize); NaN becomes -104 here and is put back last.
  float xc = x > -104.0f ? x : -104.0f;
  xc = xc < 88.8f ? xc : 88.8f;
  const float n = (xc * kLog2e + kRound) - kRound;
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t n1 = int32_t(n) >> 1, n2 = int32_t(n) - n1;
  float y = p * bits_to_float((n1 + 127) << 23) * bits_to_float((n2 + 127) << 23);
  y = x > 88.72284f ? INFINITY : y;
  y = x < -103.97208f ? 0.0f : y;
  return x != x ? x : y;
}

// tanh(x) = sign(x) (1 - 2 / (e^{2|x|} + 1)); below |x| = 0.3 the odd Taylor series to x^11 keeps
// the relative error small where that subtraction would cancel.
inline float tanh(float x) {
  const float a = std::fabs(x);
  const float big = 1.0f - 2.0f / (vm::exp(2.0f * a) + 1.0f);
  const float x2 = x * x;
  float p = -1382.0f / 155925;
  p = p * x2 + 62.0f / 2835;
  p = p * x2 - 17.0f / 315;
  p = p * x2 + 2.0f / 15;
  p = p * x2 - 1.0f / 3;
  const float small = x * (1.0f + x2 * p);
  const float r = a < 0.3f ? small : std::copysign(big, x);
  return x != x ? x : r;
}

// Other compute types (double) use libm; overload resolution picks the float versions for float.
template <typename C> inline C exp(C x) { return std::exp(x); }
template <typename C> inline C tanh(C x) { return std::tanh(x); }

}  // namespace vm
}  // namespace kiln
