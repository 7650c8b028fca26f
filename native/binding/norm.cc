// Binding for the norm family (native/ops/norm.h): layer normalization forward and backward, and the
// forward with a residual add fused in front.
// Outputs are allocated by lib/ops/norm.ts and passed in (null for gradients not wanted).
#include "../ops/norm.h"
#include "op_table.h"

namespace kiln::binding {

void register_norm(Napi::Env env, Napi::Object exports) {
  KILN_KERNEL(env, exports, "layerNormForward", "layerNorm", ops::LayerNormForward, layer_norm_forward,
              "x weight bias normDims eps y mean rstd", ops::kNormCpuDTypes, ops::kNormCudaDTypes);
  KILN_KERNEL(env, exports, "addLayerNormForward", "addLayerNorm", ops::AddLayerNormForward, add_layer_norm_forward,
              "x delta weight bias eps sum y mean rstd", ops::kNormCpuDTypes, ops::kNormCudaDTypes);
  KILN_KERNEL(env, exports, "layerNormBackward", "layerNorm backward", ops::LayerNormBackward, layer_norm_backward,
              "gy x mean rstd weight normDims gx gweight gbias", ops::kNormCpuDTypes, ops::kNormCudaDTypes);
}

}  // namespace kiln::binding
