// Shared pieces of the CUDA kernels: device element types and conversion, dtype dispatch to CUDA
// types, strided indexing metadata passed to kernels by value, and launch sizing.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <array>
#include <type_traits>
#include "../core/strided.h"
#include "../core/tensor.h"
#include "runtime.h"

namespace kiln::cuda {

// Device-side conversion between element types; half types go through float, bool is (x != 0).
template <typename To, typename From>
__host__ __device__ __forceinline__ To dconvert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<From, __nv_bfloat16>) {
    return dconvert<To, float>(__bfloat162float(v));
  } else if constexpr (std::is_same_v<From, __half>) {
    return dconvert<To, float>(__half2float(v));
  } else if constexpr (std::is_same_v<To, __nv_bfloat16>) {
    return __float2bfloat16(float(v));
  } else if constexpr (std::is_same_v<To, __half>) {
    return __float2half(float(v));
  } else if constexpr (std::is_same_v<To, uint8_t>) {
    return v != From(0) ? 1 : 0;
  } else {
    return static_cast<To>(v);
  }
}

// Up to kMaxDims dims after merging contiguous runs (strided.h's plan_strided); more is a ShapeError.
constexpr int kMaxDims = 12;

template <int N>
struct StridedMeta {
  int ndim;
  int64_t numel;
  int64_t sizes[kMaxDims];
  int64_t strides[N][kMaxDims];
  bool contiguous;  // every operand is one dense run: offsets equal the linear index

  __device__ __forceinline__ void offsets(int64_t i, int64_t (&off)[N]) const {
    if (contiguous) {
#pragma unroll
      for (int k = 0; k < N; k++) off[k] = i;
      return;
    }
#pragma unroll
    for (int k = 0; k < N; k++) off[k] = 0;
    for (int d = ndim - 1; d >= 0; d--) {
      int64_t idx = i % sizes[d];
      i /= sizes[d];
#pragma unroll
      for (int k = 0; k < N; k++) off[k] += idx * strides[k][d];
    }
  }
};

template <int N>
StridedMeta<N> make_meta(const char* op, const Shape& shape, const std::array<const Shape*, N>& strides) {
  // Every operand dense and row-major over shape (the common case): one run, no plan to build.
  bool dense = true;
  int64_t expected = 1;
  for (size_t d = shape.size(); d-- > 0 && dense;) {
    if (shape[d] == 1) continue;
    for (int k = 0; k < N; k++) dense = dense && (*strides[k])[d] == expected;
    expected *= shape[d];
  }
  if (dense) {
    StridedMeta<N> m;
    m.ndim = 1;
    m.numel = shape_numel(shape);
    m.sizes[0] = m.numel;
    for (int k = 0; k < N; k++) m.strides[k][0] = 1;
    m.contiguous = true;
    return m;
  }
  StridedPlan<N> p = plan_strided<N>(shape, strides);
  KILN_CHECK(int(p.shape.size()) <= kMaxDims, Shape, op, "tensor layout needs ", p.shape.size(),
             " dims after merging; CUDA kernels take at most ", kMaxDims, " (call contiguous() first)");
  StridedMeta<N> m{};
  m.ndim = int(p.shape.size());
  m.numel = shape_numel(shape);
  m.contiguous = m.ndim == 1;
  for (int d = 0; d < m.ndim; d++) m.sizes[d] = p.shape[d];
  for (int k = 0; k < N; k++) {
    for (int d = 0; d < m.ndim; d++) m.strides[k][d] = p.strides[k][d];
    if (p.strides[k][m.ndim - 1] != 1) m.contiguous = false;
  }
  return m;
}

constexpr int kThreads = 256;

// Grid size for a grid-stride loop over n elements.
inline unsigned grid_for(int64_t n, Device d) {
  int64_t blocks = (n + kThreads - 1) / kThreads;
  int64_t cap = int64_t(sm_count(d)) * 32;
  return unsigned(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

}  // namespace kiln::cuda

// KILN_CUDA_DISPATCH_*(dtype, op, body): like the CPU dispatch macros, with `scalar_t` bound to the
// CUDA element type (__nv_bfloat16 and __half for the half types).
#define KILN_CUDA_DISPATCH_ALL(dt, op, ...)                  \
  switch (dt) {                                               \
    KILN_DTYPE_CASE(Float32, float, __VA_ARGS__)              \
    KILN_DTYPE_CASE(Float64, double, __VA_ARGS__)             \
    KILN_DTYPE_CASE(Int32, int32_t, __VA_ARGS__)              \
    KILN_DTYPE_CASE(Int64, int64_t, __VA_ARGS__)              \
    KILN_DTYPE_CASE(Bool, uint8_t, __VA_ARGS__)               \
    KILN_DTYPE_CASE(BFloat16, __nv_bfloat16, __VA_ARGS__)     \
    KILN_DTYPE_CASE(Float16, __half, __VA_ARGS__)             \
    KILN_DTYPE_FAIL(dt, op);                                  \
  }

// Every floating dtype, with the CUDA half types.
#define KILN_CUDA_DISPATCH_FLOATING(dt, op, ...)             \
  switch (dt) {                                               \
    KILN_DTYPE_CASE(Float32, float, __VA_ARGS__)              \
    KILN_DTYPE_CASE(Float64, double, __VA_ARGS__)             \
    KILN_DTYPE_CASE(BFloat16, __nv_bfloat16, __VA_ARGS__)     \
    KILN_DTYPE_CASE(Float16, __half, __VA_ARGS__)             \
    KILN_DTYPE_FAIL(dt, op);                                  \
  }

#define KILN_CUDA_DISPATCH_FLOAT(dt, op, ...)                \
  switch (dt) {                                               \
    KILN_DTYPE_CASE(Float32, float, __VA_ARGS__)              \
    KILN_DTYPE_CASE(Float64, double, __VA_ARGS__)             \
    KILN_DTYPE_CASE(BFloat16, __nv_bfloat16, __VA_ARGS__)     \
    KILN_DTYPE_FAIL(dt, op);                                  \
  }
