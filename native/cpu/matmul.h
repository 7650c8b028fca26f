// CPU matrix products over tensors: the batched product every matmul and linear reduces to.
#pragma once
#include "../core/tensor.h"

namespace kiln::cpu {
// out[i] = a[i] @ b[i] (+ bias on every row) for a [batch, M, K], b [batch, K, N] of any strides (a
// batch stride of 0 repeats one matrix), out [batch, M, N] contiguous, bias [N] of any stride or null.
// Inner matrices laid out row- or column-major go to gemm in place; others are copied first.
void bmm(const Tensor& a, const Tensor& b, const Tensor* bias, const Tensor& out);
}  // namespace kiln::cpu
