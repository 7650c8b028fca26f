// CPU batched matrix product on strided 3-D operands: picks gemm's transpose flags and row strides
// from each operand's layout (copying only operands that are neither row- nor column-major), fills
// the output with the bias first when there is one, then runs gemm over the batch.
#include "matmul.h"
#include <algorithm>
#include "../core/parallel.h"
#include "copy.h"
#include "gemm.h"

namespace kiln::cpu {
namespace {

// How gemm reads the [R, C] matrices of a 3-D operand.
struct GemmOperand {
  const void* data;
  int64_t batch_stride;
  bool trans;  // stored as [C, R] row-major
  int64_t ld;
  Tensor copy;  // owns the data when the operand had to be copied
};

GemmOperand gemm_operand(const Tensor& x) {
  const int64_t R = x.shape[1], C = x.shape[2], s0 = x.strides[1], s1 = x.strides[2];
  if ((s1 == 1 || C <= 1) && (R <= 1 || s0 >= std::max<int64_t>(C, 1)))
    return {x.data_ptr(), x.strides[0], false, R <= 1 ? std::max<int64_t>(C, 1) : s0, {}};
  if ((s0 == 1 || R <= 1) && (C <= 1 || s1 >= std::max<int64_t>(R, 1)))
    return {x.data_ptr(), x.strides[0], true, C <= 1 ? std::max<int64_t>(R, 1) : s1, {}};
  // A broadcast batch (stride 0) copies one matrix, not all of them.
  Tensor src = x;
  const bool repeated = x.strides[0] == 0;
  if (repeated) src.shape[0] = std::min<int64_t>(x.shape[0], 1);
  Tensor c = Tensor::empty(src.shape, x.dtype, x.device());
  copy(src, c);
  GemmOperand op{c.data_ptr(), repeated ? 0 : R * C, false, std::max<int64_t>(C, 1), {}};
  op.copy = std::move(c);
  return op;
}

template <typename T>
void fill_bias(const Tensor& bias, const Tensor& out) {
  const int64_t rows = out.shape[0] * out.shape[1], N = out.shape[2], sb = bias.strides[0];
  const T* b = bias.data<T>();
  T* o = out.data<T>();
  parallel_for(rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(N, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++)
      for (int64_t j = 0; j < N; j++) o[r * N + j] = b[j * sb];
  });
}

}  // namespace

// Shared with the CUDA twin (declared in the header).

BmmSizes check_bmm(const char* op, const Tensor& a, const Tensor& b, const Tensor& out) {
  KILN_CHECK(a.dim() == 3 && b.dim() == 3 && out.dim() == 3, Shape, op, "expects 3-D operands, got ",
             shape_str(a.shape), ", ", shape_str(b.shape), " and output ", shape_str(out.shape));
  const int64_t batch = a.shape[0], M = a.shape[1], K = a.shape[2], N = b.shape[2];
  KILN_CHECK(b.shape[0] == batch && b.shape[1] == K, Shape, op, "shapes ", shape_str(a.shape), " and ",
             shape_str(b.shape), " cannot be multiplied");
  KILN_CHECK(out.shape == Shape({batch, M, N}), Shape, op, "output shape ", shape_str(out.shape), " should be [",
             batch, ", ", M, ", ", N, "]");
  KILN_CHECK(out.is_contiguous(), Value, op, "the output must be contiguous");
  KILN_CHECK(a.dtype == b.dtype && a.dtype == out.dtype, DType, op, "dtypes differ: ", dtype_name(a.dtype), ", ",
             dtype_name(b.dtype), " and output ", dtype_name(out.dtype));
  return {batch, M, K, N};
}

void check_bmm_bias(const char* op, const Tensor& bias, const Tensor& out, int64_t N) {
  KILN_CHECK(bias.dim() == 1 && bias.shape[0] == N, Shape, op, "bias of shape ", shape_str(bias.shape),
             " does not match ", N, " output columns");
  KILN_CHECK(bias.dtype == out.dtype, DType, op, "bias dtype ", dtype_name(bias.dtype), " differs from ",
             dtype_name(out.dtype));
}

void bmm(const Tensor& a, const Tensor& b, const Tensor* bias, const Tensor& out) {
  const char* op = "matmul";
  const BmmSizes z = check_bmm(op, a, b, out);
  const int64_t batch = z.batch, M = z.M, K = z.K, N = z.N;
  if (bias) check_bmm_bias(op, *bias, out, N);
  if (out.numel() == 0) return;
  KILN_DISPATCH_FLOAT(out.dtype, op, {
    if (bias) fill_bias<scalar_t>(*bias, out);
    const GemmOperand A = gemm_operand(a), B = gemm_operand(b);
    gemm_batched<scalar_t>(A.trans, B.trans, batch, M, N, K, scalar_t(1), static_cast<const scalar_t*>(A.data),
                           A.batch_stride, A.ld, static_cast<const scalar_t*>(B.data), B.batch_stride, B.ld,
                           scalar_t(bias ? 1 : 0), out.data<scalar_t>(), M * N, N);
  });
}

}  // namespace kiln::cpu
