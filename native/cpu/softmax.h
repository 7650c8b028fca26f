// CPU softmax family: softmax / log-softmax along any dim, and cross-entropy fused with
// log-softmax, each with its fused backward. Inputs may have any strides; outputs are written
// through their own strides. Shapes, dims and targets are checked here (errors name the op).
#pragma once
#include "../core/tensor.h"

namespace kiln::cpu {

// y = softmax(x) (or log_softmax when `log`) along dim; y has x's shape and dtype.
void softmax_forward(const Tensor& x, int64_t dim, bool log, const Tensor& y);
// gx = y * (gy - sum(gy * y)) for softmax, gx = gy - exp(y) * sum(gy) for log-softmax, where y is
// the forward output; sums run along dim.
void softmax_backward(const Tensor& y, const Tensor& gy, int64_t dim, bool log, const Tensor& gx);

// How cross-entropy reduces its per-row losses (same codes in lib/ops/softmax.ts).
enum class Reduction : int32_t { None = 0, Sum = 1, Mean = 2 };

// Cross-entropy of logits (class dim 1, or dim 0 of 1-D logits) against class indices `target`
// (logits' shape without the class dim, int32/int64). Writes the loss (target's shape for None, a
// scalar otherwise), the per-row log-sum-exp `lse` (target's shape) and `total_weight` (a scalar:
// the number of non-ignored targets, which Mean divides by). Targets outside [0, C) other than
// ignore_index throw IndexError.
void cross_entropy_forward(const Tensor& logits, const Tensor& target, int64_t ignore_index, double smoothing,
                           Reduction reduction, const Tensor& loss, const Tensor& lse, const Tensor& total_weight);
// grad_logits = (softmax(logits) - onehot_smoothed(target)) * g[row], with g[row] taken from
// grad_loss (per row for None; the scalar, divided by total_weight for Mean); 0 for ignored rows.
void cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse, const Tensor& total_weight,
                            const Tensor& grad_loss, int64_t ignore_index, double smoothing, Reduction reduction,
                            const Tensor& grad_logits);

// Argument checks shared by the CPU kernels and their CUDA twins.
void check_same_shape(const char* op, const Tensor& a, const char* an, const Tensor& b, const char* bn);
Shape with_class_dim(const Shape& strides, int64_t cdim);
int64_t check_cross_entropy(const char* op, const Tensor& logits, const Tensor& target, const Tensor& lse,
                            const Tensor& loss, const Tensor& total_weight, double smoothing, Reduction reduction);

}  // namespace kiln::cpu
