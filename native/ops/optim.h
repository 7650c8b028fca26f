// The optim family's contract, shared by both backends: the fused optimizer updates (SGD, Adam/AdamW)
// and the three passes gradient clipping is built from (a reducible norm partial, the clip
// coefficient, an in-place scale of every gradient), their dtypes, the dtype optimizer state is kept
// in, and the argument checks every implementation runs first. native/cpu and native/cuda implement
// the kernels; native/binding/optim.cc exports them.
#pragma once
#include <cmath>
#include <vector>
#include "../core/tensor.h"

namespace kiln::ops {

// sgdStep, in place: param (and momentum_buf when momentum != 0) take one SGD step with gradient grad:
// g = grad (+ weight_decay * param), buf = momentum * buf + (1 - dampening) * g (buf = g when
// first_step: PyTorch initializes the buffer to the first gradient), param -= lr * (nesterov ?
// g + momentum * buf : buf). maximize negates grad.
using SgdStep = void(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, double lr, double momentum,
                     double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step);
// adamStep, in place: param, exp_avg, exp_avg_sq (and max_exp_avg_sq for AMSGrad) take one Adam step;
// decoupled (AdamW) shrinks param by 1 - lr * weight_decay instead of adding the decay to the
// gradient. bias_correction1 = 1 - beta1^t and bias_correction2_sqrt = sqrt(1 - beta2^t) come from
// the caller, computed once per step in float64.
using AdamStep = void(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                      const Tensor* max_exp_avg_sq, double lr, double beta1, double beta2, double eps,
                      double weight_decay, double bias_correction1, double bias_correction2_sqrt, bool decoupled,
                      bool maximize);
// gradNormPartial: out = sum over all grads of |g|^p (p = 2: the squared norm), or max |g| for
// p = infinity, accumulated in float64 in a fixed order (the same for any thread count). Partials of
// disjoint sets of gradients combine by sum (max for infinity): shards all-reduce them.
using GradNormPartial = void(const std::vector<const Tensor*>& grads, double norm_type, const Tensor& out);
// clipCoefficient: from a (combined) partial, norm = partial^(1/p) and coef = max_norm / (norm + 1e-6)
// where that is below 1, else exactly 1; a NaN norm gives a NaN coef (the failure shows in the
// parameters instead of hiding, as in PyTorch). Read and written on the device: the host never waits.
using ClipCoefficient = void(const Tensor& partial, double norm_type, double max_norm, const Tensor& norm,
                             const Tensor& coef);
// scaleGrads, in place: every grad *= scale, a one-element tensor read on the device (grads are left
// untouched when it is exactly 1).
using ScaleGrads = void(const std::vector<const Tensor*>& grads, const Tensor& scale);

// Parameters and gradients of every floating dtype, on both backends.
inline constexpr DTypeSet kOptimDTypes = kFloatTypes;

// The dtype of a parameter's optimizer state (momentum, moments): float32 for bfloat16 and float16
// parameters, whose update is computed in float32 and only its result rounded to the parameter's
// dtype; the parameter's own dtype otherwise.
inline DType state_dtype(DType param) {
  return param == DType::BFloat16 || param == DType::Float16 ? DType::Float32 : param;
}

// The coefficients of one SGD step, as the kernels use them.
struct SgdOptions {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize, first_step;
};
// The coefficients of one Adam step, as the kernels use them.
struct AdamOptions {
  double lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2_sqrt;
  bool decoupled, maximize;
};

// Every check of sgdStep / adamStep (coefficients; operands contiguous, shaped like param, on its
// device, not overlapping; grad in param's dtype, state in state_dtype); returns the coefficients.
SgdOptions check_sgd_step(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, double lr,
                          double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
                          bool first_step);
AdamOptions check_adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                            const Tensor* max_exp_avg_sq, double lr, double beta1, double beta2, double eps,
                            double weight_decay, double bias_correction1, double bias_correction2_sqrt,
                            bool decoupled, bool maximize);
// The checks of the clipping passes: gradients contiguous and floating, scalars float32/float64 with
// one element, norm_type > 0, max_norm >= 0, and for scaleGrads no two gradients sharing memory.
void check_grad_norm_partial(const std::vector<const Tensor*>& grads, double norm_type, const Tensor& out);
void check_clip_coefficient(const Tensor& partial, double norm_type, double max_norm, const Tensor& norm,
                            const Tensor& coef);
void check_scale_grads(const std::vector<const Tensor*>& grads, const Tensor& scale);

// The kinds of norm the passes compute, picked once on the host.
enum class NormKind { Inf, L1, L2, Lp };
inline NormKind norm_kind(double p) {
  return std::isinf(p) ? NormKind::Inf : p == 1 ? NormKind::L1 : p == 2 ? NormKind::L2 : NormKind::Lp;
}

}  // namespace kiln::ops

namespace kiln::cpu {
ops::SgdStep sgd_step;
ops::AdamStep adam_step;
ops::GradNormPartial grad_norm_partial;
ops::ClipCoefficient clip_coefficient;
ops::ScaleGrads scale_grads;
}  // namespace kiln::cpu

namespace kiln::cuda {
ops::SgdStep sgd_step;
ops::AdamStep adam_step;
ops::GradNormPartial grad_norm_partial;
ops::ClipCoefficient clip_coefficient;
ops::ScaleGrads scale_grads;
}  // namespace kiln::cuda
