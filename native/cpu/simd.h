// Vectorization helpers for CPU kernels.
//
// run_simd(f) runs f compiled for AVX2+FMA when the CPU has them (and KILN_SIMD is not
// "baseline") and for the build's baseline (x86-64-v2) otherwise: f's body is inlined into two
// clones (flatten), so a kernel's hot loop is written once and picks its instruction set at run
// time (the AVX2 clone is about 3x faster on exp, core/vmath.h). lane_sum and lane_max: row sums
// and maxima in lanes that vectorize.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string_view>

namespace kiln {

#if defined(__x86_64__) && defined(__GNUC__)
// KILN_SIMD=baseline in the environment forces the baseline clones (for tests and comparisons).
inline bool cpu_has_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          !(std::getenv("KILN_SIMD") && std::string_view(std::getenv("KILN_SIMD")) == "baseline");
  return yes;
}
template <typename F> __attribute__((target("avx2,fma"), flatten)) void run_avx2_fma(const F& f) { f(); }
template <typename F> __attribute__((flatten)) void run_baseline(const F& f) { f(); }
template <typename F> inline void run_simd(const F& f) {
  if (cpu_has_avx2_fma()) run_avx2_fma(f);
  else run_baseline(f);
}
#else
inline bool cpu_has_avx2_fma() { return false; }
template <typename F> inline void run_simd(const F& f) { f(); }
#endif

// Sum of v[0..n) in lanes of C (so that it vectorizes), folded into a double every kBlock elements so
// that long rows keep double-like accuracy.
template <typename C> double lane_sum(const C* __restrict v, int64_t n) {
  constexpr int L = 16;
  constexpr int64_t kBlock = 1024;
  double total = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    C acc[L] = {};
    int64_t i = b;
    for (; i + L <= e; i += L)
      for (int l = 0; l < L; l++) acc[l] += v[i + l];
    double s = 0;
    for (; i < e; i++) s += double(v[i]);
    for (int l = 0; l < L; l++) s += double(acc[l]);
    total += s;
  }
  return total;
}

// max(v[0..n)) in lanes (-inf for n = 0); NaNs are skipped like std::max skips them.
template <typename C> C lane_max(const C* __restrict v, int64_t n) {
  constexpr int L = 16;
  C acc[L];
  for (int l = 0; l < L; l++) acc[l] = -std::numeric_limits<C>::infinity();
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int l = 0; l < L; l++) acc[l] = v[i + l] > acc[l] ? v[i + l] : acc[l];
  C m = -std::numeric_limits<C>::infinity();
  for (int l = 0; l < L; l++) m = std::max(m, acc[l]);
  for (; i < n; i++) m = std::max(m, v[i]);
  return m;
}

}  // namespace kiln
