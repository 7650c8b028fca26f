// CPU random kernels (contract: native/ops/random.h): uniform/normal/integer fills and fused dropout
// (forward and backward) over the Philox stream of core/philox.h. Work is split over Philox blocks; an
// element's value depends only on (seed, offset, element index), so results are the same for every
// thread count.
#include "../ops/random.h"
#include <cmath>
#include <limits>
#include <type_traits>
#include "../core/convert.h"
#include "../core/philox.h"
#include "../core/strided.h"

namespace kiln::cpu {

namespace {

constexpr int64_t kBlockGrain = 2048;  // Philox blocks per thread at least

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Words each element of T draws: 53-bit float64 values need two, the others one.
template <typename T>
constexpr int words_per_element() { return std::is_same_v<T, double> ? 2 : 1; }

// The largest T below v, by bits for the half types (sign-magnitude like float).
template <typename T>
T next_down(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    return std::nextafter(v, -std::numeric_limits<T>::infinity());
  } else {
    T r = v;
    if ((r.bits & 0x7fffu) == 0) r.bits = 0x8001u;
    else if (r.bits & 0x8000u) r.bits++;
    else r.bits--;
    return r;
  }
}

template <typename T>
double as_double(T v) { return double(acc_t<T>(v)); }

// Runs f(block_index, block, first_element) for every block covering n elements of E per block.
template <int E, typename F>
uint64_t for_blocks(int64_t n, uint64_t seed, uint64_t offset, F f) {
  const int64_t nb = int64_t(philox_blocks(n, 4 / E));
  parallel_for(nb, kBlockGrain, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; blk++) f(philox_block(seed, offset, uint64_t(blk)), blk * E);
  });
  return uint64_t(nb);
}

template <typename T>
uint64_t uniform_typed(const Tensor& out, uint64_t seed, uint64_t offset, double low, double high) {
  using A = acc_t<T>;
  T* d = out.data<T>();
  const int64_t n = out.numel();
  const A lo = A(low), range = A(high - low);
  // Rounding of lo + range * u (and of the half types) can reach high; such values become the
  // largest T below high, so the interval stays half-open.
  T limit = convert_value<T, A>(A(high));
  while (as_double(limit) >= high) limit = next_down(limit);
  auto put = [&](int64_t i, A u) {
    T v = convert_value<T, A>(lo + range * u);
    d[i] = as_double(v) >= high ? limit : v;
  };
  if constexpr (words_per_element<T>() == 2) {
    return for_blocks<2>(n, seed, offset, [&](const PhiloxBlock& r, int64_t i0) {
      put(i0, uniform_f64(r.w[0], r.w[1]));
      if (i0 + 1 < n) put(i0 + 1, uniform_f64(r.w[2], r.w[3]));
    });
  } else {
    return for_blocks<4>(n, seed, offset, [&](const PhiloxBlock& r, int64_t i0) {
      for (int j = 0; j < 4 && i0 + j < n; j++) put(i0 + j, uniform_f32(r.w[j]));
    });
  }
}

template <typename T>
uint64_t normal_typed(const Tensor& out, uint64_t seed, uint64_t offset, double mean, double std) {
  using A = acc_t<T>;
  T* d = out.data<T>();
  const int64_t n = out.numel();
  const A m = A(mean), s = A(std);
  // Elements 2k and 2k+1 are the Box-Muller pair of words 2k*W .. 2k*W+2W-1.
  auto put_pair = [&](int64_t i, A u1, A u2) {
    A z0, z1;
    box_muller<A>(u1, u2, &z0, &z1);
    d[i] = convert_value<T, A>(m + s * z0);
    if (i + 1 < n) d[i + 1] = convert_value<T, A>(m + s * z1);
  };
  if constexpr (words_per_element<T>() == 2) {
    return for_blocks<2>(n, seed, offset, [&](const PhiloxBlock& r, int64_t i0) {
      put_pair(i0, uniform_open_f64(r.w[0], r.w[1]), uniform_f64(r.w[2], r.w[3]));
    });
  } else {
    return for_blocks<4>(n, seed, offset, [&](const PhiloxBlock& r, int64_t i0) {
      put_pair(i0, uniform_open_f32(r.w[0]), uniform_f32(r.w[1]));
      if (i0 + 2 < n) put_pair(i0 + 2, uniform_open_f32(r.w[2]), uniform_f32(r.w[3]));
    });
  }
}

}  // namespace

uint64_t rand_uniform(const Tensor& out, uint64_t seed, uint64_t offset, double low, double high) {
  ops::check_rand_uniform(out, low, high);
  KILN_DISPATCH_FLOATING(out.dtype, "rand", { return uniform_typed<scalar_t>(out, seed, offset, low, high); });
  return 0;
}

uint64_t rand_normal(const Tensor& out, uint64_t seed, uint64_t offset, double mean, double std) {
  ops::check_rand_normal(out, mean, std);
  KILN_DISPATCH_FLOATING(out.dtype, "randn", { return normal_typed<scalar_t>(out, seed, offset, mean, std); });
  return 0;
}

uint64_t rand_int(const Tensor& out, uint64_t seed, uint64_t offset, int64_t low, int64_t high) {
  const uint64_t range = ops::check_rand_int(out, low, high);
  const int64_t n = out.numel();
  KILN_DISPATCH_NUMERIC(out.dtype, "randint", {
    scalar_t* d = out.data<scalar_t>();
    auto value = [&](uint32_t hi, uint32_t lo) {
      return scalar_t(int64_t(uint64_t(low) + bounded_u64(hi, lo, range)));
    };
    return for_blocks<2>(n, seed, offset, [&](const PhiloxBlock& r, int64_t i0) {
      d[i0] = value(r.w[0], r.w[1]);
      if (i0 + 1 < n) d[i0 + 1] = value(r.w[2], r.w[3]);
    });
  });
  return 0;
}

uint64_t dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out, const Tensor& mask) {
  const char* op = "dropout";
  ops::check_dropout(x, p, out, mask);
  // keep iff word < threshold: probability threshold / 2^32 = 1 - p to within 2^-32.
  const uint64_t threshold = uint64_t((1.0 - p) * 4294967296.0);
  KILN_DISPATCH_FLOATING(x.dtype, op, {
    using A = acc_t<scalar_t>;
    const A scale = A(1.0 / (1.0 - p));
    const scalar_t* xs = x.data<scalar_t>();
    scalar_t* ys = out.data<scalar_t>();
    uint8_t* ms = mask.data<uint8_t>();
    // out is contiguous, so its element offset is the element's row-major index.
    strided_for<3>(out.shape, {&out.strides, &x.strides, &mask.strides},
                   [&](int64_t n, const std::array<int64_t, 3>& off, const std::array<int64_t, 3>& st) {
                     uint64_t cur = ~uint64_t(0);
                     PhiloxBlock r{};
                     for (int64_t k = 0; k < n; k++) {
                       const int64_t i = off[0] + k * st[0];
                       if (uint64_t(i >> 2) != cur) {
                         cur = uint64_t(i >> 2);
                         r = philox_block(seed, offset, cur);
                       }
                       const bool keep = r.w[i & 3] < threshold;
                       ys[i] = keep ? convert_value<scalar_t, A>(A(xs[off[1] + k * st[1]]) * scale) : scalar_t(0.0f);
                       ms[off[2] + k * st[2]] = keep;
                     }
                   });
  });
  return philox_blocks(x.numel(), 1);
}

void dropout_backward(const Tensor& grad, const Tensor& mask, double scale, const Tensor& out) {
  const char* op = "dropout_backward";
  ops::check_dropout_backward(grad, mask, out);
  KILN_DISPATCH_FLOATING(grad.dtype, op, {
    using A = acc_t<scalar_t>;
    const A s = A(scale);
    const scalar_t* gs = grad.data<scalar_t>();
    const uint8_t* ms = mask.data<uint8_t>();
    scalar_t* os = out.data<scalar_t>();
    strided_for<3>(out.shape, {&out.strides, &grad.strides, &mask.strides},
                   [&](int64_t n, const std::array<int64_t, 3>& off, const std::array<int64_t, 3>& st) {
                     for (int64_t k = 0; k < n; k++) {
                       const bool keep = ms[off[2] + k * st[2]] != 0;
                       os[off[0] + k * st[0]] =
                           keep ? convert_value<scalar_t, A>(A(gs[off[1] + k * st[1]]) * s) : scalar_t(0.0f);
                     }
                   });
  });
}

}  // namespace kiln::cpu
