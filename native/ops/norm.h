// The norm family's contract, shared by both backends: layer normalization's kernel signatures (and
// the residual add fused in front of it), the dtypes each backend takes, and the argument checks
// every implementation runs first. native/cpu and
// native/cuda implement the kernels; native/binding/norm.cc exports them.
#pragma once
#include "../core/tensor.h"

namespace kiln::ops {

// layerNormForward: normalizes x over its last `norm_dims` dims (rows of M elements):
// y = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps) with the biased variance.
// weight and bias (optional, shaped like those trailing dims) may be null; mean and rstd get one
// value per row. Outputs are fresh contiguous tensors of x's dtype.
using LayerNormForward = void(const Tensor& x, const Tensor* weight, const Tensor* bias, int64_t norm_dims,
                              double eps, const Tensor& y, const Tensor& mean, const Tensor& rstd);
// addLayerNormForward: sum = x + delta (same shape, one dtype, the sum rounded to it), then
// layerNormForward of sum over its last dim into y, mean and rstd: one pass that reads x and delta
// once (a pre-norm Transformer's residual add and the next block's norm). sum is a fresh contiguous
// tensor like y. Its backward is layerNormBackward on sum (lib/ops/norm.ts records the add apart).
using AddLayerNormForward = void(const Tensor& x, const Tensor& delta, const Tensor* weight, const Tensor* bias,
                                 double eps, const Tensor& sum, const Tensor& y, const Tensor& mean,
                                 const Tensor& rstd);
// layerNormBackward: gradients from gy and what the forward saved; each output may be null.
using LayerNormBackward = void(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                               const Tensor* weight, int64_t norm_dims, const Tensor* gx, const Tensor* gweight,
                               const Tensor* gbias);

// What each backend computes natively (lib/ runs other floating dtypes through float32).
inline constexpr DTypeSet kNormCpuDTypes = kFloat32And64;
inline constexpr DTypeSet kNormCudaDTypes{DType::Float32, DType::Float64, DType::BFloat16};

// Rows x M: the shape every layerNorm kernel works on.
struct Rows {
  int64_t R, M;
};
// Every check of layerNormForward / layerNormBackward (shapes and dtypes of inputs, outputs and
// saved statistics); returns the rows.
Rows check_layer_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias, int64_t norm_dims,
                              const Tensor& y, const Tensor& mean, const Tensor& rstd);
Rows check_add_layer_norm_forward(const Tensor& x, const Tensor& delta, const Tensor* weight, const Tensor* bias,
                                 const Tensor& sum, const Tensor& y, const Tensor& mean, const Tensor& rstd);
Rows check_layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                               const Tensor* weight, int64_t norm_dims, const Tensor* gx, const Tensor* gweight,
                               const Tensor* gbias);

}  // namespace kiln::ops

namespace kiln::cpu {
ops::LayerNormForward layer_norm_forward;
ops::AddLayerNormForward add_layer_norm_forward;
ops::LayerNormBackward layer_norm_backward;
}  // namespace kiln::cpu

namespace kiln::cuda {
ops::LayerNormForward layer_norm_forward;
ops::AddLayerNormForward add_layer_norm_forward;
ops::LayerNormBackward layer_norm_backward;
}  // namespace kiln::cuda
