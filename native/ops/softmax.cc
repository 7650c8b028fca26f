// The softmax family's reduction names and argument checks (native/ops/softmax.h), run by both
// backends before any kernel.
#include "softmax.h"
#include <algorithm>
#include <utility>

namespace kiln::ops {

const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::None: return "none";
    case Reduction::Sum: return "sum";
    case Reduction::Mean: return "mean";
    case Reduction::kCount: break;
  }
  return "reduction";
}

namespace {

void check_same_shape(const char* op, const Tensor& a, const char* an, const Tensor& b, const char* bn) {
  KILN_CHECK(a.shape == b.shape, Shape, op, an, " shape ", shape_str(a.shape), " does not match ", bn, " shape ",
             shape_str(b.shape));
}

int64_t normalize_dim(const char* op, int64_t dim, int64_t ndim) {
  const int64_t n = std::max<int64_t>(ndim, 1);
  KILN_CHECK(dim >= -n && dim < n, Index, op, "dim ", dim, " out of range for a tensor of ", ndim, " dimensions");
  return ndim == 0 ? -1 : (dim < 0 ? dim + n : dim);
}

// What forward and backward share; returns the class dim. `loss` is the loss (forward) or its
// gradient (backward): shaped like target for None, a scalar otherwise.
int64_t check_cross_entropy(const char* op, const Tensor& logits, const Tensor& target, const Tensor& lse,
                            const Tensor& loss, const Tensor& total_weight, double smoothing, Reduction reduction) {
  KILN_CHECK(logits.dim() >= 1, Shape, op, "logits must have at least 1 dimension, got shape ",
             shape_str(logits.shape));
  KILN_CHECK(is_floating(logits.dtype), DType, op, "logits must be floating point, got ", dtype_name(logits.dtype));
  KILN_CHECK(is_integral(target.dtype), DType, op, "target must be int32 or int64 class indices, got ",
             dtype_name(target.dtype));
  KILN_CHECK(smoothing >= 0 && smoothing <= 1, Value, op, "labelSmoothing must be in [0, 1], got ", smoothing);
  const int64_t cdim = logits.dim() == 1 ? 0 : 1;
  Shape rows = logits.shape;
  rows.erase(rows.begin() + cdim);
  KILN_CHECK(target.shape == rows, Shape, op, "target shape ", shape_str(target.shape), " does not match logits shape ",
             shape_str(logits.shape), " (expected ", shape_str(rows), ")");
  const Shape scalar;
  const std::pair<const Tensor*, const Shape*> expect[] = {
      {&lse, &rows}, {&loss, reduction == Reduction::None ? &rows : &scalar}, {&total_weight, &scalar}};
  const DType results = cross_entropy_result_dtype(logits.dtype, lse.dtype);
  for (auto [t, shape] : expect) {
    KILN_CHECK(t->shape == *shape, Shape, op, "expected a tensor of shape ", shape_str(*shape), " for logits ",
               shape_str(logits.shape), ", got ", shape_str(t->shape));
    KILN_CHECK(t->dtype == results, DType, op, "expected ", dtype_name(results), " for ", dtype_name(logits.dtype),
               " logits, got ", dtype_name(t->dtype));
  }
  return cdim;
}

}  // namespace

int64_t check_softmax_forward(const Tensor& x, int64_t dim, bool log, const Tensor& y) {
  const char* op = log ? "logSoftmax" : "softmax";
  check_same_shape(op, x, "input", y, "output");
  KILN_CHECK(x.dtype == y.dtype, DType, op, "output dtype ", dtype_name(y.dtype), " differs from input dtype ",
             dtype_name(x.dtype));
  return normalize_dim(op, dim, x.dim());
}

int64_t check_softmax_backward(const Tensor& y, const Tensor& gy, int64_t dim, bool log, const Tensor& gx) {
  const char* op = log ? "logSoftmax backward" : "softmax backward";
  check_same_shape(op, y, "output", gy, "gradient");
  check_same_shape(op, y, "output", gx, "input gradient");
  KILN_CHECK(y.dtype == gy.dtype && y.dtype == gx.dtype, DType, op, "expected one dtype, got ", dtype_name(y.dtype),
             ", ", dtype_name(gy.dtype), " and ", dtype_name(gx.dtype));
  return normalize_dim(op, dim, y.dim());
}

int64_t check_cross_entropy_forward(const Tensor& logits, const Tensor& target, double smoothing,
                                    Reduction reduction, const Tensor& loss, const Tensor& lse,
                                    const Tensor& total_weight) {
  return check_cross_entropy("crossEntropy", logits, target, lse, loss, total_weight, smoothing, reduction);
}

int64_t check_cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse,
                                     const Tensor& total_weight, const Tensor& grad_loss, double smoothing,
                                     Reduction reduction, const Tensor& grad_logits) {
  const char* op = "crossEntropy backward";
  const int64_t cdim = check_cross_entropy(op, logits, target, lse, grad_loss, total_weight, smoothing, reduction);
  check_same_shape(op, logits, "logits", grad_logits, "logits gradient");
  KILN_CHECK(grad_logits.dtype == logits.dtype, DType, op, "logits gradient dtype ", dtype_name(grad_logits.dtype),
             " differs from logits dtype ", dtype_name(logits.dtype));
  return cdim;
}

DType cross_entropy_result_dtype(DType logits, DType requested) {
  const bool half = logits == DType::BFloat16 || logits == DType::Float16;
  return half && requested == DType::Float32 ? DType::Float32 : logits;
}

Shape with_class_dim(const Shape& strides, int64_t cdim) {
  Shape s = strides;
  s.insert(s.begin() + cdim, 0);
  return s;
}

}  // namespace kiln::ops
