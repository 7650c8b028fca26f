// CPU layer normalization: fused forward (y, per-row mean and rstd) and fused backward (grad_x,
// grad_weight and grad_bias in one call). Shapes are checked here; errors name the op.
#pragma once
#include "../core/tensor.h"

namespace kiln::cpu {

// Normalizes x over its last `norm_dims` dims (a row of M elements each): y = (x - mean) * rstd *
// weight + bias, rstd = 1 / sqrt(var + eps) with the biased variance. weight and bias (optional,
// shaped like those trailing dims) may be null. mean and rstd get one value per row.
void layer_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias, int64_t norm_dims, double eps,
                        const Tensor& y, const Tensor& mean, const Tensor& rstd);
// Gradients from gy and what the forward saved; each output may be null when not wanted.
void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                         const Tensor* weight, int64_t norm_dims, const Tensor* gx, const Tensor* gweight,
                         const Tensor* gbias);

// Argument checks shared by the CPU kernels and their CUDA twins: layerNorm works on R rows of M
// normalized elements.
struct Rows {
  int64_t R, M;
};
Rows check_layer_norm(const char* op, const Tensor& x, const Tensor* weight, const Tensor* bias, int64_t norm_dims);
void check_out(const char* op, const Tensor& t, const char* name, int64_t numel, DType dtype);
// Every check of layer_norm_forward / layer_norm_backward (the two above and the outputs' and
// saved statistics' shapes and dtypes).
Rows check_layer_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias, int64_t norm_dims,
                              const Tensor& y, const Tensor& mean, const Tensor& rstd);
Rows check_layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                               const Tensor* weight, int64_t norm_dims, const Tensor* gx, const Tensor* gweight,
                               const Tensor* gbias);

}  // namespace kiln::cpu
