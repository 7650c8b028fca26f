// CUDA fused optimizer kernels (twins of native/cpu/optim.h, same option structs and checks): SGD and
// Adam/AdamW steps in one pass per parameter, and global-norm gradient clipping on the device.
#pragma once
#include <vector>
#include "../cpu/optim.h"

namespace kiln::cuda {

void sgd_step(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, const SgdOptions& o);

void adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
               const Tensor* max_exp_avg_sq, const AdamOptions& o);

// Leaves the norm in total (on the device) and scales the grads there without waiting for it; only
// error_if_nonfinite makes the host wait, to read the norm before deciding to throw.
void clip_grad_norm(const std::vector<const Tensor*>& grads, double max_norm, double norm_type, const Tensor& total,
                    bool error_if_nonfinite);

}  // namespace kiln::cuda
