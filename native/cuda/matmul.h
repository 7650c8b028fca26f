// CUDA matrix products (twin of native/cpu/matmul.h): the batched product every matmul and linear
// reduces to, through cuBLASLt.
#pragma once
#include "../core/tensor.h"

namespace kiln::cuda {
// out[i] = a[i] @ b[i] (+ bias on every row) for a [batch, M, K], b [batch, K, N] of any strides (a
// batch stride of 0 repeats one matrix), out [batch, M, N] contiguous, bias [N] of any stride or null.
// float32 (TF32 tensor cores only when allow_tf32()), float64, and bfloat16/float16 accumulated in float32.
void bmm(const Tensor& a, const Tensor& b, const Tensor* bias, const Tensor& out);
}  // namespace kiln::cuda
