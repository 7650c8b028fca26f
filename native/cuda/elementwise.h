// CUDA elementwise kernels (twins of native/cpu/elementwise.h): unary with scalar parameters,
// binary, where. Under nvcc this header also gives the CUDA half types their compute type
// (float), so the shared formulas and compute_t work on device element types.
#pragma once
#include "../cpu/elementwise.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
namespace kiln {
template <> struct compute_type<__nv_bfloat16> { using type = float; };
template <> struct compute_type<__half> { using type = float; };
}  // namespace kiln
#endif

namespace kiln::cuda {
void unary(UnaryOp op, const Tensor& x, const Tensor& out, double s0, double s1);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double s0, double s1);
void where(const Tensor& cond, const Tensor* a, const Tensor* b, double sa, double sb, const Tensor& out);
}  // namespace kiln::cuda
