// CUDA layer normalization (twins of native/cpu/norm.h): fused forward (y, per-row mean and rstd)
// and fused backward (grad_x, grad_weight and grad_bias in one call). float32, float64 and
// bfloat16 (computed in float32). Same checks and semantics as the CPU kernels.
#pragma once
#include "../core/tensor.h"

namespace kiln::cuda {

void layer_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias, int64_t norm_dims, double eps,
                        const Tensor& y, const Tensor& mean, const Tensor& rstd);
void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                         const Tensor* weight, int64_t norm_dims, const Tensor* gx, const Tensor* gweight,
                         const Tensor* gbias);

}  // namespace kiln::cuda
