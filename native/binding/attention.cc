// Binding for the fused attention family (native/ops/attention.h): attentionForward and
// attentionBackward, and the largest head dim the CUDA kernels take. Outputs are allocated by
// lib/ops/attention.ts and passed in; the kernels check every shape.
#include "../ops/attention.h"
#include "op_table.h"

namespace kiln::binding {

void register_attention(Napi::Env env, Napi::Object exports) {
  KILN_KERNEL(env, exports, "attentionForward", "flashAttention", ops::AttentionForward, attention_forward,
              "q k v causal scale out lse", ops::kAttentionCpuDTypes, ops::kAttentionCudaDTypes);
  KILN_KERNEL(env, exports, "attentionBackward", "flashAttention backward", ops::AttentionBackward,
              attention_backward, "q k v out dout lse causal scale dq dk dv", ops::kAttentionCpuDTypes,
              ops::kAttentionCudaDTypes);
  exports.Set("attentionCudaMaxHeadDim", Napi::Number::New(env, double(ops::kAttentionCudaMaxHeadDim)));
}

}  // namespace kiln::binding
