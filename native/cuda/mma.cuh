// Warp-level bfloat16 tensor-core helpers for the attention kernels: mma.sync.aligned.m16n8k16 with
// float32 accumulation, packing float32 results into bfloat16 operands, and cp.async staging into
// shared memory. The fragment layout and the loads are in mma_layout.h. test/fixtures/mma/emulate.cc
// emulates these on the host (keep the two in step).
#pragma once
#include <cuda_bf16.h>
#include <cstdint>
#include "mma_layout.h"

namespace kiln::cuda::mma {

using bf16 = __nv_bfloat16;

// Two floats rounded to bfloat16 as one register, lo in the low half.
__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return pack_bits(__bfloat16_as_ushort(h.x), __bfloat16_as_ushort(h.y));
}

// a_from_c with rounding to bfloat16.
__device__ __forceinline__ void pack_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a_from_c(a, lo, hi, [](float x, float y) { return pack(x, y); });
}

// d += a b for a 16 x 16 A and a 16 x 8 B, float32 accumulation.
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// The block's dynamic shared memory (16-byte aligned) as T.
template <typename T>
__device__ __forceinline__ T* dynamic_shared() {
  extern __shared__ uint4 kiln_dynamic_shared[];
  return reinterpret_cast<T*>(kiln_dynamic_shared);
}

// 16 bytes global -> shared without passing through registers; zeros when !valid (src-size 0 reads
// nothing, so src need only be some valid address).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  const unsigned s = unsigned(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(valid ? 16 : 0) : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most N of this thread's committed groups are pending (a __syncthreads after it
// makes every thread's copies visible).
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace kiln::cuda::mma
