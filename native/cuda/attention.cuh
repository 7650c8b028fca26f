// Pieces shared by the CUDA fused attention kernels: the SIMT ones (attention.cu, float32 and any
// head dim up to 128) and the bfloat16 tensor-core ones for head dims 64 and 128 (attention_mma.cu),
// which attention.cu's entry points dispatch to.
#pragma once
#include <cuda_runtime.h>
#include "../core/tensor.h"

namespace kiln::cuda {

// Sizes and the causal cut, as the CPU twin's Dims.
struct Dims {
  int64_t H, L, S, D;
  bool causal;
  // Keys query i sees (end-aligned causal mask: keys 0..S-L+i).
  __host__ __device__ int64_t keys(int64_t i) const { return causal ? (S - L + i + 1 < S ? S - L + i + 1 : S) : S; }
  // The first query that sees key j.
  __host__ __device__ int64_t first_query(int64_t j) const { return causal && j > S - L ? j - (S - L) : 0; }
  // Whether query i sees key j (j < S).
  __host__ __device__ bool sees(int64_t i, int64_t j) const { return !causal || j <= S - L + i; }
};

// Element offsets of one head's rows: base + row * rs.
struct Layout {
  int64_t sb, sh, rs;
  __host__ __device__ int64_t base(int64_t bh, int64_t H) const { return (bh / H) * sb + (bh % H) * sh; }
};

inline Layout layout_of(const Tensor& t) { return {t.strides[0], t.strides[1], t.strides[2]}; }

// Whether the tensor-core kernels take inputs of dtype dt and head dim D (bfloat16, D 64 or 128).
bool attention_mma_applies(DType dt, int64_t D);

// The forward on tensor cores: q, k, v [B, H, L or S, D] with unit last stride (B * H = BH), out and
// lse fresh contiguous.
void attention_forward_mma(const Tensor& q, const Tensor& k, const Tensor& v, const Dims& n, int64_t BH,
                           float scale, const Tensor& out, const Tensor& lse, cudaStream_t s);

// The backward's two passes on tensor cores, given delta = rowsum(dout * out) (float32 [B * H * L]).
void attention_backward_mma(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                            const Tensor& lse, const Tensor& delta, const Dims& n, int64_t BH, float scale,
                            const Tensor& dq, const Tensor& dk, const Tensor& dv, cudaStream_t s);

}  // namespace kiln::cuda
