// The optim family's contract, shared by both backends: the fused optimizer updates (SGD, Adam/AdamW),
// one parameter per call or many ("multi-tensor": every parameter of a group in one call), the
// per-element update formulas both backends run, the three passes gradient clipping is built from (a
// reducible norm partial, the clip coefficient, an in-place scale of every gradient), their dtypes,
// the dtype optimizer state is kept in, and the argument checks every implementation runs first.
// native/cpu and native/cuda implement the kernels; native/binding/optim.cc exports them.
#pragma once
#include <cmath>
#include <vector>
#include "../core/host_device.h"
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
// The multi-tensor updates take parallel lists (element i of each list belongs to parameter i); every
// parameter has one dtype and one device (callers group them), and each parameter's operands are
// checked as the one-parameter kernel checks them. An empty list stands for an absent optional state
// (momentum buffers without momentum, maxExpAvgSq without AMSGrad).
using TensorList = std::vector<const Tensor*>;

// sgdStepMulti: sgdStep on every parameter of the lists. lr_device, when given (capturable: a 0-d
// float32/float64 tensor on the parameters' device), is read on the device and lr is ignored, so
// that a step replayed from a CUDA graph uses the learning rate last written into it.
using SgdStepMulti = void(const TensorList& params, const TensorList& grads, const TensorList& momentum_bufs,
                          const Tensor* lr_device, double lr, double momentum, double dampening, double weight_decay,
                          bool nesterov, bool maximize, bool first_step);
// adamStepMulti: adamStep on every parameter of the lists, with one of two sources of lr and bias
// corrections. Host (lr_device null, steps empty): lr, bias_correction1 and bias_correction2_sqrt as
// adamStep takes them. Device (capturable: lr_device a 0-d float32/float64 tensor, steps one 0-d
// float64 tensor per parameter holding the steps it has taken): the kernel reads lr and step t, takes
// step t + 1 with bias corrections computed from it in float64 (adam_bias_corrections), and writes
// t + 1 back after every parameter's update; the host values are ignored. Nothing the host passes
// then changes from step to step, so the step can be captured into a CUDA graph and replayed.
using AdamStepMulti = void(const TensorList& params, const TensorList& grads, const TensorList& exp_avgs,
                           const TensorList& exp_avg_sqs, const TensorList& max_exp_avg_sqs, const TensorList& steps,
                           const Tensor* lr_device, double lr, double beta1, double beta2, double eps,
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

// ---------------------------------------------------------------------------------------------
// The per-element updates, the one formula of each optimizer: both backends' one-parameter and
// multi-tensor kernels call them, so the paths agree bit for bit where the compiler contracts
// nothing (the CPU build targets x86-64-v2: no FMA). C is the compute type (float for bfloat16,
// float16 and float32 parameters, double for float64). The flags are compile-time constants in the
// CPU loops (the branches fold away and the loop vectorizes) and uniform runtime values on CUDA.

// The coefficients of one SGD step in C.
template <typename C>
struct SgdCoefs {
  C lr, wd, mom, keep, sign;
  bool first;
};
template <typename C>
KILN_HOST_DEVICE SgdCoefs<C> sgd_coefs(double lr, const SgdOptions& o) {
  return {C(lr), C(o.weight_decay), C(o.momentum), C(1 - o.dampening), o.maximize ? C(-1) : C(1), o.first_step};
}
// The new value of parameter p from gradient g; buf (the momentum buffer, untouched without
// momentum) is updated in place.
template <typename C>
KILN_HOST_DEVICE C sgd_element(C p, C g, C& buf, const SgdCoefs<C>& c, bool decay, bool momentum, bool nesterov) {
  g = c.sign * g;
  if (decay) g += c.wd * p;
  if (momentum) {
    const C b = c.first ? g : c.mom * buf + c.keep * g;
    buf = b;
    g = nesterov ? g + c.mom * b : b;
  }
  return p - c.lr * g;
}

// The coefficients of one Adam step in C, from the float64 lr and bias corrections.
template <typename C>
struct AdamCoefs {
  C b1, b2, one_b1, one_b2, eps, step_size, bc2, sign, wd, shrink;
};
template <typename C>
KILN_HOST_DEVICE AdamCoefs<C> adam_coefs(double lr, double bias_correction1, double bias_correction2_sqrt,
                                         const AdamOptions& o) {
  // AdamW multiplies by exactly 1 when there is no decay, which leaves every value unchanged.
  return {C(o.beta1), C(o.beta2), C(1 - o.beta1), C(1 - o.beta2), C(o.eps), C(lr / bias_correction1),
          C(bias_correction2_sqrt), o.maximize ? C(-1) : C(1), C(o.weight_decay),
          o.decoupled ? C(1 - lr * o.weight_decay) : C(1)};
}
// The bias corrections of step t (counted from 1), in float64 as the host computes them for adamStep:
// 1 - beta1^t and sqrt(1 - beta2^t).
KILN_HOST_DEVICE void adam_bias_corrections(double beta1, double beta2, double t, double& bc1, double& bc2_sqrt) {
  bc1 = 1 - std::pow(beta1, t);
  bc2_sqrt = std::sqrt(1 - std::pow(beta2, t));
}
// The new value of parameter p from gradient g; the moments m, v (and vmax with AMSGrad, untouched
// otherwise) are updated in place. l2: Adam's weight decay added to the gradient (AdamW's decoupled
// decay is coefs.shrink).
template <typename C>
KILN_HOST_DEVICE C adam_element(C p, C g, C& m, C& v, C& vmax, const AdamCoefs<C>& c, bool l2, bool amsgrad) {
  g = c.sign * g;
  if (l2) g += c.wd * p;
  const C mi = c.b1 * m + c.one_b1 * g;
  C vi = c.b2 * v + c.one_b2 * g * g;
  m = mi;
  v = vi;
  if (amsgrad) {
    vi = vmax > vi ? vmax : vi;
    vmax = vi;
  }
  return p * c.shrink - c.step_size * (mi / (std::sqrt(vi) / c.bc2 + c.eps));
}

// Every check of sgdStep / adamStep (coefficients; operands contiguous, shaped like param, on its
// device, not overlapping; grad in param's dtype, state in state_dtype); returns the coefficients.
SgdOptions check_sgd_step(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, double lr,
                          double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
                          bool first_step);
AdamOptions check_adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                            const Tensor* max_exp_avg_sq, double lr, double beta1, double beta2, double eps,
                            double weight_decay, double bias_correction1, double bias_correction2_sqrt,
                            bool decoupled, bool maximize);
// Every check of sgdStepMulti / adamStepMulti: the lists' lengths, one dtype across the parameters,
// each parameter's operands as the one-parameter checks do (errors name the parameter's index), no
// two operands of the call sharing memory, and the device scalars (lr_device; steps one float64
// element each, present exactly when lr_device is). Returns the coefficients (lr, bias corrections:
// the host values, used only without lr_device).
SgdOptions check_sgd_step_multi(const TensorList& params, const TensorList& grads, const TensorList& momentum_bufs,
                                const Tensor* lr_device, double lr, double momentum, double dampening,
                                double weight_decay, bool nesterov, bool maximize, bool first_step);
AdamOptions check_adam_step_multi(const TensorList& params, const TensorList& grads, const TensorList& exp_avgs,
                                  const TensorList& exp_avg_sqs, const TensorList& max_exp_avg_sqs,
                                  const TensorList& steps, const Tensor* lr_device, double lr, double beta1,
                                  double beta2, double eps, double weight_decay, double bias_correction1,
                                  double bias_correction2_sqrt, bool decoupled, bool maximize);
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
ops::SgdStepMulti sgd_step_multi;
ops::AdamStepMulti adam_step_multi;
ops::GradNormPartial grad_norm_partial;
ops::ClipCoefficient clip_coefficient;
ops::ScaleGrads scale_grads;
}  // namespace kiln::cpu

namespace kiln::cuda {
ops::SgdStep sgd_step;
ops::AdamStep adam_step;
ops::SgdStepMulti sgd_step_multi;
ops::AdamStepMulti adam_step_multi;
ops::GradNormPartial grad_norm_partial;
ops::ClipCoefficient clip_coefficient;
ops::ScaleGrads scale_grads;
}  // namespace kiln::cuda
