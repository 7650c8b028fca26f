// CPU matrix products over tensors: the batched product every matmul and linear reduces to.
#pragma once
#include "../core/tensor.h"

namespace kiln::cpu {
// out[i] = a[i] @ b[i] (+ bias on every row) for a [batch, M, K], b [batch, K, N] of any strides (a
// batch stride of 0 repeats one matrix), out [batch, M, N] contiguous, bias [N] of any stride or null.
// Inner matrices laid out row- or column-major go to gemm in place; others are copied first.
void bmm(const Tensor& a, const Tensor& b, const Tensor* bias, const Tensor& out);

// bmm's argument checks, shared with the CUDA twin: check_bmm checks the operands' ranks and
// shapes, out's contiguity and the dtypes, and returns the product's sizes; check_bmm_bias checks
// a bias against out's N columns.
struct BmmSizes {
  int64_t batch, M, K, N;
};
BmmSizes check_bmm(const char* op, const Tensor& a, const Tensor& b, const Tensor& out);
void check_bmm_bias(const char* op, const Tensor& bias, const Tensor& out, int64_t N);
}  // namespace kiln::cpu
