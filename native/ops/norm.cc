// The norm family's argument checks (native/ops/norm.h), run by both backends before any kernel.
#include "norm.h"

namespace kiln::ops {

// Checks the normalized dims against x and the optional affine parameters; returns rows x M.
static Rows check_layer_norm(const char* op, const Tensor& x, const Tensor* weight, const Tensor* bias, int64_t norm_dims) {
  KILN_CHECK(norm_dims >= 0 && norm_dims <= x.dim(), Shape, op, "cannot normalize the last ", norm_dims,
             " dims of a tensor of shape ", shape_str(x.shape));
  const Shape norm(x.shape.end() - norm_dims, x.shape.end());
  for (const Tensor* p : {weight, bias}) {
    if (!p) continue;
    KILN_CHECK(p->shape == norm, Shape, op, p == weight ? "weight" : "bias", " shape ", shape_str(p->shape),
               " does not match the normalized shape ", shape_str(norm), " of input ", shape_str(x.shape));
    KILN_CHECK(p->dtype == x.dtype, DType, op, p == weight ? "weight" : "bias", " dtype ", dtype_name(p->dtype),
               " differs from input dtype ", dtype_name(x.dtype));
  }
  const int64_t M = shape_numel(norm);
  return {M ? x.numel() / M : shape_numel(Shape(x.shape.begin(), x.shape.end() - norm_dims)), M};
}

// Outputs are written through raw row-major pointers: they must be fresh contiguous tensors.
static void check_out(const char* op, const Tensor& t, const char* name, int64_t numel, DType dtype) {
  KILN_CHECK(t.numel() == numel && t.is_contiguous(), Value, op, name, " must be a contiguous tensor of ", numel,
             " elements, got shape ", shape_str(t.shape));
  KILN_CHECK(t.dtype == dtype, DType, op, name, " dtype ", dtype_name(t.dtype), " differs from input dtype ",
             dtype_name(dtype));
}

// The forward's checks under op's name: inputs, then outputs y, mean and rstd.
static Rows check_forward(const char* op, const Tensor& x, const Tensor* weight, const Tensor* bias, int64_t norm_dims,
                          const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  const Rows rows = check_layer_norm(op, x, weight, bias, norm_dims);
  KILN_CHECK(y.shape == x.shape, Shape, op, "output shape ", shape_str(y.shape), " does not match input shape ",
             shape_str(x.shape));
  check_out(op, y, "output", x.numel(), x.dtype);
  check_out(op, mean, "mean", rows.R, x.dtype);
  check_out(op, rstd, "rstd", rows.R, x.dtype);
  return rows;
}

// All of layer_norm_forward's checks; returns rows x M.
Rows check_layer_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias, int64_t norm_dims,
                              const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  return check_forward("layerNorm", x, weight, bias, norm_dims, y, mean, rstd);
}

// All of add_layer_norm_forward's checks (x at least 1-D, normalized over its last dim); returns rows x M.
Rows check_add_layer_norm_forward(const Tensor& x, const Tensor& delta, const Tensor* weight, const Tensor* bias,
                                 const Tensor& sum, const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  const char* op = "addLayerNorm";
  KILN_CHECK(x.dim() >= 1, Shape, op, "expects an input of at least one dim, got ", shape_str(x.shape));
  KILN_CHECK(delta.shape == x.shape, Shape, op, "delta shape ", shape_str(delta.shape), " does not match input shape ",
             shape_str(x.shape));
  KILN_CHECK(delta.dtype == x.dtype, DType, op, "delta dtype ", dtype_name(delta.dtype), " differs from input dtype ",
             dtype_name(x.dtype));
  KILN_CHECK(sum.shape == x.shape, Shape, op, "sum shape ", shape_str(sum.shape), " does not match input shape ",
             shape_str(x.shape));
  check_out(op, sum, "sum", x.numel(), x.dtype);
  return check_forward(op, x, weight, bias, 1, y, mean, rstd);
}

// All of layer_norm_backward's checks; returns rows x M.
Rows check_layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                               const Tensor* weight, int64_t norm_dims, const Tensor* gx, const Tensor* gweight,
                               const Tensor* gbias) {
  const char* op = "layerNorm backward";
  const Rows rows = check_layer_norm(op, x, weight, nullptr, norm_dims);
  const int64_t R = rows.R, M = rows.M;
  KILN_CHECK(gy.shape == x.shape, Shape, op, "gradient shape ", shape_str(gy.shape),
             " does not match input shape ", shape_str(x.shape));
  KILN_CHECK(gy.dtype == x.dtype, DType, op, "gradient dtype ", dtype_name(gy.dtype),
             " differs from input dtype ", dtype_name(x.dtype));
  for (const Tensor* t : {&mean, &rstd}) {
    KILN_CHECK(t->numel() == R, Shape, op, "saved statistics of shape ", shape_str(t->shape), " do not have one value for each of ",
               R, " rows");
    KILN_CHECK(t->dtype == x.dtype, DType, op, "saved statistics dtype ", dtype_name(t->dtype),
               " differs from input dtype ", dtype_name(x.dtype));
  }
  if (gx) check_out(op, *gx, "input gradient", x.numel(), x.dtype);
  if (gweight) check_out(op, *gweight, "weight gradient", M, x.dtype);
  if (gbias) check_out(op, *gbias, "bias gradient", M, x.dtype);
  return rows;
}

}  // namespace kiln::ops
