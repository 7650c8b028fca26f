// The matmul family's argument checks and epilogue names (native/ops/matmul.h), run by both backends
// before any kernel.
#include "matmul.h"

namespace kiln::ops {

const char* epilogue_name(Epilogue e) {
  switch (e) {
    case Epilogue::None: return "none";
    case Epilogue::GeluTanh: return "gelu_tanh";
    default: return "?";
  }
}

BmmSizes check_bmm(const Tensor& a, const Tensor& b, const Tensor* bias, Epilogue epilogue, const Tensor& out,
                   const Tensor* pre) {
  const char* op = "matmul";
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
  if (bias) {
    KILN_CHECK(bias->dim() == 1 && bias->shape[0] == N, Shape, op, "bias of shape ", shape_str(bias->shape),
               " does not match ", N, " output columns");
    KILN_CHECK(bias->dtype == out.dtype, DType, op, "bias dtype ", dtype_name(bias->dtype), " differs from ",
               dtype_name(out.dtype));
  }
  if (pre) {
    KILN_CHECK(epilogue != Epilogue::None, Value, op, "the activation's input is saved only with an activation");
    KILN_CHECK(pre->shape == out.shape && pre->is_contiguous(), Shape, op, "the activation's input must be contiguous of shape ",
               shape_str(out.shape), ", got ", shape_str(pre->shape));
    KILN_CHECK(pre->dtype == out.dtype, DType, op, "the activation's input dtype ", dtype_name(pre->dtype),
               " differs from ", dtype_name(out.dtype));
  }
  return {batch, M, K, N};
}

}  // namespace kiln::ops
