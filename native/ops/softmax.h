// The softmax family's contract, shared by both backends: softmax / log-softmax along any dim and
// cross-entropy fused with log-softmax, forward and backward. Kernel signatures, the dtypes each
// backend takes, the reduction codes (exported to JavaScript by name) and the argument checks every
// implementation runs first. Inputs may have any strides; outputs are written through their own
// strides. native/cpu and native/cuda implement the kernels; native/binding/softmax.cc exports them.
#pragma once
#include "../core/tensor.h"

namespace kiln::ops {

// softmaxForward: y = softmax(x) (or log_softmax when `log`) along dim; y has x's shape and dtype.
using SoftmaxForward = void(const Tensor& x, int64_t dim, bool log, const Tensor& y);
// softmaxBackward: gx = y * (gy - sum(gy * y)) for softmax, gx = gy - exp(y) * sum(gy) for
// log-softmax, where y is the forward output; sums run along dim.
using SoftmaxBackward = void(const Tensor& y, const Tensor& gy, int64_t dim, bool log, const Tensor& gx);

// How cross-entropy reduces its per-row losses.
enum class Reduction : int32_t { None, Sum, Mean, kCount };
// "none", "sum", "mean": the names lib/ops/softmax.ts looks the codes up by.
const char* reduction_name(Reduction r);

// crossEntropyForward: cross-entropy of logits (class dim 1, or dim 0 of 1-D logits) against class
// indices `target` (logits' shape without the class dim, int32/int64). Writes the loss (target's
// shape for None, a scalar otherwise), the per-row log-sum-exp `lse` (target's shape) and
// `total_weight` (a scalar: the number of non-ignored targets, which Mean divides by), all three in
// the logits' dtype, or all in float32 for bfloat16/float16 logits (autocast's float32 loss without
// a widened copy of the logits: the kernels compute in float32 either way). On the CPU
// targets outside [0, C) other than ignore_index throw IndexError; CUDA cannot check them without
// reading device memory on the host, so such a row gives a NaN loss and NaN gradients instead.
using CrossEntropyForward = void(const Tensor& logits, const Tensor& target, int64_t ignore_index, double smoothing,
                                 Reduction reduction, const Tensor& loss, const Tensor& lse,
                                 const Tensor& total_weight);
// crossEntropyBackward: grad_logits = (softmax(logits) - onehot_smoothed(target)) * g[row], with
// g[row] taken from grad_loss (per row for None; the scalar, divided by total_weight for Mean); 0 for
// ignored rows. grad_logits is in the logits' dtype; lse, total_weight and grad_loss in the forward's
// result dtype.
using CrossEntropyBackward = void(const Tensor& logits, const Tensor& target, const Tensor& lse,
                                  const Tensor& total_weight, const Tensor& grad_loss, int64_t ignore_index,
                                  double smoothing, Reduction reduction, const Tensor& grad_logits);

// What each backend computes natively (lib/ runs other floating dtypes through float32).
inline constexpr DTypeSet kSoftmaxCpuDTypes = kFloat32And64;
inline constexpr DTypeSet kSoftmaxCudaDTypes{DType::Float32, DType::Float64, DType::BFloat16};

// Every check of softmaxForward / softmaxBackward (shapes, dtypes, dim); returns the dim made
// non-negative (-1 for a 0-d tensor: a single element).
int64_t check_softmax_forward(const Tensor& x, int64_t dim, bool log, const Tensor& y);
int64_t check_softmax_backward(const Tensor& y, const Tensor& gy, int64_t dim, bool log, const Tensor& gx);

// Every check of crossEntropyForward / crossEntropyBackward except the target range (the kernels
// read targets anyway); returns the class dim.
int64_t check_cross_entropy_forward(const Tensor& logits, const Tensor& target, double smoothing,
                                    Reduction reduction, const Tensor& loss, const Tensor& lse,
                                    const Tensor& total_weight);
int64_t check_cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse,
                                     const Tensor& total_weight, const Tensor& grad_loss, double smoothing,
                                     Reduction reduction, const Tensor& grad_logits);
// The dtype of cross-entropy's loss, lse and total_weight for these logits, given the one the caller
// chose (requested): float32 when the logits are half and float32 was asked for, the logits' otherwise.
DType cross_entropy_result_dtype(DType logits, DType requested);
// Strides of a tensor shaped like logits without the class dim, with a 0 stride put back there (so
// it walks alongside logits).
Shape with_class_dim(const Shape& strides, int64_t cdim);

}  // namespace kiln::ops

namespace kiln::cpu {
ops::SoftmaxForward softmax_forward;
ops::SoftmaxBackward softmax_backward;
ops::CrossEntropyForward cross_entropy_forward;
ops::CrossEntropyBackward cross_entropy_backward;
}  // namespace kiln::cpu

namespace kiln::cuda {
ops::SoftmaxForward softmax_forward;
ops::SoftmaxBackward softmax_backward;
ops::CrossEntropyForward cross_entropy_forward;
ops::CrossEntropyBackward cross_entropy_backward;
}  // namespace kiln::cuda
