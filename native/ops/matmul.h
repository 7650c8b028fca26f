// The matmul family's contract, shared by both backends: the batched product every matmul and linear
// reduce to, its kernel signature, the dtypes each backend takes and the argument checks every
// implementation runs first. native/cpu/matmul.cc and native/cuda/matmul.cu implement it;
// native/binding/matmul.cc exports it.
#pragma once
#include "../core/tensor.h"

namespace kiln::ops {

// bmm: out[i] = a[i] @ b[i] (+ bias on every row) for a [batch, M, K], b [batch, K, N] of any strides
// (a batch stride of 0 repeats one matrix), out [batch, M, N] contiguous, bias [N] of any stride or
// null; one dtype throughout.
using Bmm = void(const Tensor& a, const Tensor& b, const Tensor* bias, const Tensor& out);

// What each backend computes natively: the CPU's GEMM is float32/float64 (lib/ runs the half types
// through float32); CUDA also multiplies bfloat16/float16, accumulating in float32. float32 uses
// TF32 tensor cores only when allow_tf32().
inline constexpr DTypeSet kBmmCpuDTypes = kFloat32And64;
inline constexpr DTypeSet kBmmCudaDTypes = kFloatTypes;

struct BmmSizes {
  int64_t batch, M, K, N;
};
// Every check of bmm (ranks, shapes, out's contiguity, dtypes, the bias); returns the product's sizes.
BmmSizes check_bmm(const Tensor& a, const Tensor& b, const Tensor* bias, const Tensor& out);

}  // namespace kiln::ops

namespace kiln::cpu {
ops::Bmm bmm;
}  // namespace kiln::cpu

namespace kiln::cuda {
ops::Bmm bmm;
}  // namespace kiln::cuda
