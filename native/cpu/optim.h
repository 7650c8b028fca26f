// Fused optimizer kernels: one pass per parameter for SGD (momentum, Nesterov, weight decay) and
// Adam/AdamW (optional AMSGrad), and the global-norm gradient clipping over a list of gradients.
// The option structs and argument checks are shared with the CUDA twins (same signatures).
#pragma once
#include <vector>
#include "../core/tensor.h"

namespace kiln {

struct SgdOptions {
  double lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, maximize = false;
  // The momentum buffer is initialized to the first gradient (no dampening), as PyTorch does.
  bool first_step = false;
};

struct AdamOptions {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  // 1 - beta1^step and sqrt(1 - beta2^step), computed once per step by the caller in float64.
  double bias_correction1 = 1, bias_correction2_sqrt = 1;
  // AdamW: weight decay shrinks the parameter instead of being added to the gradient.
  bool decoupled = false, maximize = false;
};

// Throws unless every tensor in `ts` is contiguous, float32/float64 like `param`, has param's shape
// and device, and no two of them overlap in memory (the update reads and writes each in one pass).
void check_optimizer_operands(const char* op, const Tensor& param, const std::vector<const Tensor*>& ts);

// Throws unless grads are contiguous float32/float64 tensors on one device and `total` is a
// float32/float64 scalar there.
void check_clip_operands(const char* op, const std::vector<const Tensor*>& grads, const Tensor& total);

// Every argument check of sgd_step, adam_step and clip_grad_norm (options, then the operands
// through the two checks above), shared by the CPU kernels and their CUDA twins.
void check_sgd_step(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, const SgdOptions& o);
void check_adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                     const Tensor* max_exp_avg_sq, const AdamOptions& o);
void check_clip_grad_norm(const std::vector<const Tensor*>& grads, double max_norm, double norm_type,
                          const Tensor& total);

namespace cpu {

// In place: param (and momentum_buf when momentum != 0) take one SGD step with gradient grad.
void sgd_step(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, const SgdOptions& o);

// In place: param, exp_avg, exp_avg_sq (and max_exp_avg_sq for AMSGrad) take one Adam/AdamW step.
void adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
               const Tensor* max_exp_avg_sq, const AdamOptions& o);

// Writes the norm_type-norm of all grads taken together into total (a scalar) and, when it exceeds
// max_norm, scales every grad by max_norm / (total + 1e-6). norm_type may be +infinity.
// error_if_nonfinite: throw a ValueError (before scaling) when the total is NaN or infinite.
void clip_grad_norm(const std::vector<const Tensor*>& grads, double max_norm, double norm_type, const Tensor& total,
                    bool error_if_nonfinite);

}  // namespace cpu
}  // namespace kiln
