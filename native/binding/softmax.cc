// Binding for the softmax family (native/ops/softmax.h): softmax / log-softmax and cross-entropy,
// forward and backward, plus the reduction codes exports.reductions. Outputs are allocated by
// lib/ops/softmax.ts and passed in; the kernels check every shape.
#include "../ops/softmax.h"
#include "op_table.h"

namespace kiln::binding {

void register_softmax(Napi::Env env, Napi::Object exports) {
  export_enum(env, exports, "reductions", ops::reduction_name);
  KILN_KERNEL(env, exports, "softmaxForward", "softmax", ops::SoftmaxForward, softmax_forward, "x dim log y",
              ops::kSoftmaxCpuDTypes, ops::kSoftmaxCudaDTypes);
  KILN_KERNEL(env, exports, "softmaxBackward", "softmax backward", ops::SoftmaxBackward, softmax_backward,
              "y gy dim log gx", ops::kSoftmaxCpuDTypes, ops::kSoftmaxCudaDTypes);
  KILN_KERNEL(env, exports, "crossEntropyForward", "crossEntropy", ops::CrossEntropyForward, cross_entropy_forward,
              "logits target ignoreIndex labelSmoothing reduction loss lse totalWeight", ops::kSoftmaxCpuDTypes,
              ops::kSoftmaxCudaDTypes);
  KILN_KERNEL(env, exports, "crossEntropyBackward", "crossEntropy backward", ops::CrossEntropyBackward,
              cross_entropy_backward, "logits target lse totalWeight gradLoss ignoreIndex labelSmoothing reduction gradLogits",
              ops::kSoftmaxCpuDTypes, ops::kSoftmaxCudaDTypes);
}

}  // namespace kiln::binding
