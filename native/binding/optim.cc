// Binding for the optim family (native/ops/optim.h): the fused SGD and Adam/AdamW updates (one
// parameter or a list per call) and the gradient-clipping passes. lib/ops/optim.ts passes every coefficient by position, named in the
// signatures kernels() reports.
#include "../ops/optim.h"
#include "op_table.h"

namespace kiln::binding {

void register_optim(Napi::Env env, Napi::Object exports) {
  KILN_KERNEL(env, exports, "sgdStep", "sgdStep", ops::SgdStep, sgd_step,
              "param grad momentumBuffer lr momentum dampening weightDecay nesterov maximize firstStep",
              ops::kOptimDTypes, ops::kOptimDTypes);
  KILN_KERNEL(env, exports, "adamStep", "adamStep", ops::AdamStep, adam_step,
              "param grad expAvg expAvgSq maxExpAvgSq lr beta1 beta2 eps weightDecay biasCorrection1 "
              "biasCorrection2Sqrt decoupled maximize",
              ops::kOptimDTypes, ops::kOptimDTypes);
  KILN_KERNEL(env, exports, "sgdStepMulti", "sgdStepMulti", ops::SgdStepMulti, sgd_step_multi,
              "params grads momentumBuffers lrTensor lr momentum dampening weightDecay nesterov maximize firstStep",
              ops::kOptimDTypes, ops::kOptimDTypes);
  KILN_KERNEL(env, exports, "adamStepMulti", "adamStepMulti", ops::AdamStepMulti, adam_step_multi,
              "params grads expAvgs expAvgSqs maxExpAvgSqs steps lrTensor lr beta1 beta2 eps weightDecay "
              "biasCorrection1 biasCorrection2Sqrt decoupled maximize",
              ops::kOptimDTypes, ops::kOptimDTypes);
  KILN_KERNEL(env, exports, "gradNormPartial", "gradNormPartial", ops::GradNormPartial, grad_norm_partial,
              "grads normType out", ops::kOptimDTypes, ops::kOptimDTypes);
  KILN_KERNEL(env, exports, "clipCoefficient", "clipCoefficient", ops::ClipCoefficient, clip_coefficient,
              "partial normType maxNorm norm coef", kFloat32And64, kFloat32And64);
  KILN_KERNEL(env, exports, "scaleGrads", "scaleGrads", ops::ScaleGrads, scale_grads, "grads scale",
              ops::kOptimDTypes, ops::kOptimDTypes);
}

}  // namespace kiln::binding
