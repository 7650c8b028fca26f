// The fused attention family's contract, shared by both backends: causal or full softmax attention
// out = softmax(q k^T * scale) v computed tile by tile over the keys with an online softmax, so the
// [L, S] score matrix is never held (FlashAttention-2). The forward saves each query row's
// log-sum-exp of the scaled scores; the backward recomputes the probabilities tile by tile from q, k,
// v, out, dout and that log-sum-exp. Kernel signatures, the dtypes each backend takes and the
// argument checks every implementation runs first. native/cpu and native/cuda implement the kernels;
// native/binding/attention.cc exports them.
#pragma once
#include "../core/tensor.h"

namespace kiln::ops {

// attentionForward: q [B, H, L, D], k and v [B, H, S, D] (any strides) with L <= S when causal;
// writes out [B, H, L, D] and lse [B, H, L] (fresh contiguous tensors). causal masks the
// end-aligned upper triangle: query i sits at position S - L + i and sees keys 0..S-L+i. lse holds
// log(sum_j exp(q_i . k_j * scale)) over the keys a row sees, in lse_dtype(q.dtype).
using AttentionForward = void(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale,
                              const Tensor& out, const Tensor& lse);
// attentionBackward: given the forward's q, k, v, out and lse and the output gradient dout
// [B, H, L, D], writes dq, dk and dv (fresh contiguous tensors shaped like q, k and v).
using AttentionBackward = void(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                               const Tensor& dout, const Tensor& lse, bool causal, double scale, const Tensor& dq,
                               const Tensor& dk, const Tensor& dv);

// What each backend computes natively (lib/ takes the unfused path for other dtypes). CUDA takes
// head dims up to kAttentionCudaMaxHeadDim (lib/ops/attention.ts falls back above it).
inline constexpr DTypeSet kAttentionCpuDTypes = kFloat32And64;
inline constexpr DTypeSet kAttentionCudaDTypes{DType::Float32, DType::BFloat16};
inline constexpr int64_t kAttentionCudaMaxHeadDim = 128;

// The dtype of the saved log-sum-exp: float64 for float64 inputs, float32 otherwise (half inputs
// accumulate in float32).
DType lse_dtype(DType input);

// Every check of attentionForward / attentionBackward (shapes, dtypes, causal with L > S, scale).
void check_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale,
                             const Tensor& out, const Tensor& lse);
void check_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                              const Tensor& dout, const Tensor& lse, bool causal, double scale, const Tensor& dq,
                              const Tensor& dk, const Tensor& dv);

}  // namespace kiln::ops

namespace kiln::cpu {
ops::AttentionForward attention_forward;
ops::AttentionBackward attention_backward;
}  // namespace kiln::cpu

namespace kiln::cuda {
ops::AttentionForward attention_forward;
ops::AttentionBackward attention_backward;
}  // namespace kiln::cuda
