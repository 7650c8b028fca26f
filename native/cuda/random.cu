// CUDA random kernels (contract: native/ops/random.h): uniform/normal/integer fills and fused dropout
// (forward and backward), twins of native/cpu/random.cc. One thread computes one Philox block at a time (grid-stride) and stores
// the elements that block covers with one vector store, so element i draws exactly the words it
// draws on the CPU. The arithmetic after the draw is the CPU's too, with multiply and add rounded
// separately (no FMA contraction), so uniform values come out bit-identical.
#include "../ops/random.h"
#include <cmath>
#include <limits>
#include <type_traits>
#include "../core/philox.h"
#include "common.cuh"
#include "reduce.cuh"

namespace kiln::cuda {

namespace {

// E values of T stored with one instruction (E * sizeof(T) is 2 to 32 bytes, a power of two).
template <typename T, int E>
struct alignas(E * sizeof(T)) Pack {
  T v[E];
};

bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// Stores the E values of the Philox block starting at element i0 of an n-element tensor.
template <typename T, int E>
__device__ __forceinline__ void store_block(T* out, int64_t i0, int64_t n, const T (&v)[E], bool vec) {
  if (vec && i0 + E <= n) {
    Pack<T, E> p;
#pragma unroll
    for (int j = 0; j < E; j++) p.v[j] = v[j];
    *reinterpret_cast<Pack<T, E>*>(out + i0) = p;
  } else {
#pragma unroll
    for (int j = 0; j < E; j++)
      if (i0 + j < n) out[i0 + j] = v[j];
  }
}

// Elements per Philox block of the floating fills: one word each, two for float64's 53 bits.
template <typename T>
constexpr int kFloatsPerBlock = std::is_same_v<T, double> ? 2 : 4;

// Uniform in [lo, lo + range); values that round up to high become limit, the largest T below it.
template <typename T>
struct Uniform {
  static constexpr int E = kFloatsPerBlock<T>;
  using A = acc_t<T>;
  A lo, range;
  double high;
  T limit;

  __device__ T value(A u) const {
    const T v = dconvert<T, A>(add_rn(lo, mul_rn(range, u)));
    return double(dconvert<A, T>(v)) >= high ? limit : v;
  }
  __device__ void operator()(const PhiloxBlock& r, T (&v)[E]) const {
    if constexpr (E == 2) {
      v[0] = value(uniform_f64(r.w[0], r.w[1]));
      v[1] = value(uniform_f64(r.w[2], r.w[3]));
    } else {
#pragma unroll
      for (int j = 0; j < 4; j++) v[j] = value(uniform_f32(r.w[j]));
    }
  }
};

// mean + std * z, with elements 2k and 2k+1 the Box-Muller pair of words 2kW .. 2kW+2W-1.
template <typename T>
struct Normal {
  static constexpr int E = kFloatsPerBlock<T>;
  using A = acc_t<T>;
  A mean, std;

  __device__ void pair(A u1, A u2, T* v) const {
    A z0, z1;
    box_muller<A>(u1, u2, &z0, &z1);
    v[0] = dconvert<T, A>(add_rn(mean, mul_rn(std, z0)));
    v[1] = dconvert<T, A>(add_rn(mean, mul_rn(std, z1)));
  }
  __device__ void operator()(const PhiloxBlock& r, T (&v)[E]) const {
    if constexpr (E == 2) {
      pair(uniform_open_f64(r.w[0], r.w[1]), uniform_f64(r.w[2], r.w[3]), v);
    } else {
      pair(uniform_open_f32(r.w[0]), uniform_f32(r.w[1]), v);
      pair(uniform_open_f32(r.w[2]), uniform_f32(r.w[3]), v + 2);
    }
  }
};

// Integers in [low, low + range) from 64 bits (two words) each.
template <typename T>
struct Integer {
  static constexpr int E = 2;
  int64_t low;
  uint64_t range;

  __device__ T value(uint32_t hi, uint32_t lo) const {
    return dconvert<T, int64_t>(int64_t(uint64_t(low) + bounded_u64(hi, lo, range)));
  }
  __device__ void operator()(const PhiloxBlock& r, T (&v)[E]) const {
    v[0] = value(r.w[0], r.w[1]);
    v[1] = value(r.w[2], r.w[3]);
  }
};

template <typename T, typename Gen>
__global__ void fill_kernel(T* __restrict__ out, int64_t n, int64_t blocks, uint64_t seed, uint64_t offset, bool vec,
                            Gen gen) {
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks; b += int64_t(gridDim.x) * blockDim.x) {
    T v[Gen::E];
    gen(philox_block(seed, offset, uint64_t(b)), v);
    store_block<T, Gen::E>(out, b * Gen::E, n, v, vec);
  }
}

template <typename T, typename Gen>
uint64_t draw(const Tensor& out, uint64_t seed, uint64_t offset, const Gen& gen, const char* op) {
  refuse_during_capture(op, "replays would draw the same numbers every time (draw them outside the graph)");
  const int64_t n = out.numel();
  const int64_t blocks = int64_t(philox_blocks(n, 4 / Gen::E));
  if (blocks == 0) return 0;
  const Device d = out.device();
  const bool vec = aligned_to(out.data_ptr(), sizeof(Pack<T, Gen::E>));
  fill_kernel<T, Gen><<<grid_for(blocks, d), kThreads, 0, stream(d)>>>(out.data<T>(), n, blocks, seed, offset, vec, gen);
  KILN_CUDA_LAUNCH_CHECK(op);
  return uint64_t(blocks);
}

// The largest T below high; the half types step down by their sign-magnitude bits like float.
template <typename T>
T largest_below(double high) {
  using A = acc_t<T>;
  T v = dconvert<T, A>(A(high));
  while (double(dconvert<A, T>(v)) >= high) {
    if constexpr (std::is_floating_point_v<T>) {
      v = std::nextafter(v, -std::numeric_limits<T>::infinity());
    } else {
      using Raw = std::conditional_t<std::is_same_v<T, __half>, __half_raw, __nv_bfloat16_raw>;
      Raw r = v;
      r.x = (r.x & 0x7fffu) == 0 ? 0x8001u : (r.x & 0x8000u) ? r.x + 1 : r.x - 1;
      v = T(r);
    }
  }
  return v;
}

// Keeps element i iff its word is below threshold; kept values are scaled by 1 / (1 - p).
template <typename T>
__global__ void dropout_kernel(const T* __restrict__ x, StridedMeta<1> xm, bool vec_x, T* __restrict__ out,
                               uint8_t* __restrict__ mask, bool vec_out, int64_t n, int64_t blocks, uint64_t seed,
                               uint64_t offset, uint64_t threshold, acc_t<T> scale) {
  using A = acc_t<T>;
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks; b += int64_t(gridDim.x) * blockDim.x) {
    const PhiloxBlock r = philox_block(seed, offset, uint64_t(b));
    const int64_t i0 = b * 4;
    T xv[4];
    if (vec_x && i0 + 4 <= n) {
      const Pack<T, 4> p = *reinterpret_cast<const Pack<T, 4>*>(x + i0);
#pragma unroll
      for (int j = 0; j < 4; j++) xv[j] = p.v[j];
    } else {
#pragma unroll
      for (int j = 0; j < 4; j++) {
        int64_t off[1] = {0};
        if (i0 + j < n) xm.offsets(i0 + j, off);
        xv[j] = x[off[0]];
      }
    }
    T y[4];
    uint8_t keep[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
      keep[j] = uint64_t(r.w[j]) < threshold;
      y[j] = keep[j] ? dconvert<T, A>(mul_rn(dconvert<A, T>(xv[j]), scale)) : dconvert<T, float>(0.0f);
    }
    store_block<T, 4>(out, i0, n, y, vec_out);
    store_block<uint8_t, 4>(mask, i0, n, keep, vec_out);
  }
}

// out = grad * scale where mask is set, else 0. vec: every operand contiguous and 4-element aligned.
template <typename T>
__global__ void dropout_backward_kernel(const T* __restrict__ grad, const uint8_t* __restrict__ mask,
                                        T* __restrict__ out, StridedMeta<3> m, bool vec, acc_t<T> scale) {
  using A = acc_t<T>;
  auto value = [scale](T g, uint8_t k) {
    return k ? dconvert<T, A>(mul_rn(dconvert<A, T>(g), scale)) : dconvert<T, float>(0.0f);
  };
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  if (vec) {
    for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q * 4 < m.numel; q += stride) {
      const int64_t i0 = q * 4;
      if (i0 + 4 <= m.numel) {
        const Pack<T, 4> g = *reinterpret_cast<const Pack<T, 4>*>(grad + i0);
        const Pack<uint8_t, 4> k = *reinterpret_cast<const Pack<uint8_t, 4>*>(mask + i0);
        Pack<T, 4> o;
#pragma unroll
        for (int j = 0; j < 4; j++) o.v[j] = value(g.v[j], k.v[j]);
        *reinterpret_cast<Pack<T, 4>*>(out + i0) = o;
      } else {
        for (int64_t i = i0; i < m.numel; i++) out[i] = value(grad[i], mask[i]);
      }
    }
  } else {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m.numel; i += stride) {
      int64_t off[3];
      m.offsets(i, off);
      out[off[0]] = value(grad[off[1]], mask[off[2]]);
    }
  }
}

}  // namespace

uint64_t rand_uniform(const Tensor& out, uint64_t seed, uint64_t offset, double low, double high) {
  ops::check_rand_uniform(out, low, high);
  KILN_CUDA_DISPATCH_FLOATING(out.dtype, "rand", {
    using A = acc_t<scalar_t>;
    const A lo = A(low), range = A(high - low);
    return draw<scalar_t>(out, seed, offset, Uniform<scalar_t>{lo, range, high, largest_below<scalar_t>(high)}, "rand");
  });
  return 0;
}

uint64_t rand_normal(const Tensor& out, uint64_t seed, uint64_t offset, double mean, double std) {
  ops::check_rand_normal(out, mean, std);
  KILN_CUDA_DISPATCH_FLOATING(out.dtype, "randn", {
    using A = acc_t<scalar_t>;
    return draw<scalar_t>(out, seed, offset, Normal<scalar_t>{A(mean), A(std)}, "randn");
  });
  return 0;
}

uint64_t rand_int(const Tensor& out, uint64_t seed, uint64_t offset, int64_t low, int64_t high) {
  const uint64_t range = ops::check_rand_int(out, low, high);
  KILN_DISPATCH_NUMERIC(out.dtype, "randint", {
    return draw<scalar_t>(out, seed, offset, Integer<scalar_t>{low, range}, "randint");
  });
  return 0;
}

uint64_t dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out, const Tensor& mask) {
  const char* op = "dropout";
  ops::check_dropout(x, p, out, mask);
  refuse_during_capture(op, "replays would draw the same numbers every time (draw them outside the graph)");
  const int64_t n = x.numel();
  const int64_t blocks = int64_t(philox_blocks(n, 1));
  if (blocks == 0) return 0;
  const uint64_t threshold = uint64_t((1.0 - p) * 4294967296.0);
  const Device d = x.device();
  const StridedMeta<1> xm = make_meta<1>(op, x.shape, {&x.strides});
  KILN_CUDA_DISPATCH_FLOATING(x.dtype, op, {
    using T = scalar_t;
    const bool vec_x = xm.contiguous && aligned_to(x.data_ptr(), sizeof(Pack<T, 4>));
    const bool vec_out = aligned_to(out.data_ptr(), sizeof(Pack<T, 4>)) && aligned_to(mask.data_ptr(), 4);
    dropout_kernel<T><<<grid_for(blocks, d), kThreads, 0, stream(d)>>>(
        x.data<T>(), xm, vec_x, out.data<T>(), mask.data<uint8_t>(), vec_out, n, blocks, seed, offset, threshold,
        acc_t<T>(1.0 / (1.0 - p)));
  });
  KILN_CUDA_LAUNCH_CHECK(op);
  return uint64_t(blocks);
}

void dropout_backward(const Tensor& grad, const Tensor& mask, double scale, const Tensor& out) {
  const char* op = "dropout_backward";
  ops::check_dropout_backward(grad, mask, out);
  const int64_t n = out.numel();
  if (n == 0) return;
  const Device d = out.device();
  const StridedMeta<3> m = make_meta<3>(op, out.shape, {&out.strides, &grad.strides, &mask.strides});
  KILN_CUDA_DISPATCH_FLOATING(grad.dtype, op, {
    using T = scalar_t;
    const size_t vb = sizeof(Pack<T, 4>);
    const bool vec = m.contiguous && aligned_to(out.data_ptr(), vb) && aligned_to(grad.data_ptr(), vb) &&
                     aligned_to(mask.data_ptr(), 4);
    dropout_backward_kernel<T><<<grid_for(vec ? (n + 3) / 4 : n, d), kThreads, 0, stream(d)>>>(
        grad.data<T>(), mask.data<uint8_t>(), out.data<T>(), m, vec, acc_t<T>(scale));
  });
  KILN_CUDA_LAUNCH_CHECK(op);
}

}  // namespace kiln::cuda
