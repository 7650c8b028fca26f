// Warp and block reductions for CUDA kernels (sum, max, min over a block's threads) and the
// accumulation type of each element type (float for the half types and float, double for double).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cfloat>
#include <type_traits>

namespace kiln::cuda {

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename T> using acc_t = typename AccOf<T>::type;

template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return -INFINITY; }
template <> __device__ __forceinline__ double neg_inf<double>() { return -HUGE_VAL; }

struct SumOp { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; } };
struct MaxOp { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a > b || a != a ? a : b; } };
struct MinOp { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a < b || a != a ? a : b; } };

template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Reduces v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `shared` needs 32 elements. Contains __syncthreads(): call from all threads of the block.
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, Op op, T identity, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_reduce(v, op);
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = lane < warps ? shared[lane] : identity;
  return warp_reduce(v, op);
}

}  // namespace kiln::cuda
