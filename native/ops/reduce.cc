// The reduce family's op names, result dtypes, argument checks and walk plan (native/ops/reduce.h),
// run by both backends before any kernel.
#include "reduce.h"
#include <vector>

namespace kiln::ops {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
#define KILN_REDUCE_NAME(NAME, ...) \
  case ReduceOp::NAME: return #NAME;
    KILN_REDUCE_OPS(KILN_REDUCE_NAME)
#undef KILN_REDUCE_NAME
    case ReduceOp::kCount: break;
  }
  return "reduce";
}

DType reduce_result_dtype(ReduceOp op, DType in) {
  switch (op) {
#define KILN_REDUCE_TAKES(NAME, KIND) \
  case ReduceOp::NAME:                \
    if (!ew::takes(ew::DTypes::KIND, in)) throw_dtype_unsupported(#NAME, in); \
    break;
    KILN_REDUCE_OPS(KILN_REDUCE_TAKES)
#undef KILN_REDUCE_TAKES
    case ReduceOp::kCount: break;
  }
  switch (op) {
    case ReduceOp::sum: return is_floating(in) ? in : DType::Int64;
    case ReduceOp::argmax:
    case ReduceOp::argmin: return DType::Int64;
    case ReduceOp::all:
    case ReduceOp::any: return DType::Bool;
    default: return in;
  }
}

namespace {

void push_dim(Shape& shape, Shape& stride, int64_t size, int64_t st) {
  if (!shape.empty() && stride.back() == st * size) {
    shape.back() *= size;
    stride.back() = st;
  } else {
    shape.push_back(size);
    stride.push_back(st);
  }
}

ReducePlan make_plan(const Tensor& x, const std::vector<bool>& reduced) {
  ReducePlan p;
  for (size_t d = 0; d < x.shape.size(); d++) {
    if (reduced[d]) p.count *= x.shape[d];
    else p.outputs *= x.shape[d];
    if (x.shape[d] == 1) continue;
    if (reduced[d]) push_dim(p.rshape, p.rstride, x.shape[d], x.strides[d]);
    else push_dim(p.kshape, p.kstride, x.shape[d], x.strides[d]);
  }
  p.columns = !p.kshape.empty() && (p.rshape.empty() || p.kstride.back() < p.rstride.back());
  if (p.rshape.empty()) {
    p.rshape.push_back(1);
    p.rstride.push_back(0);
  }
  return p;
}

}  // namespace

ReducePlan check_reduce(ReduceOp op, const Tensor& x, const Tensor& out, const Shape& dims) {
  const char* name = reduce_op_name(op);
  const DType want = reduce_result_dtype(op, x.dtype);
  KILN_CHECK(out.dtype == want, DType, name, "output dtype ", dtype_name(out.dtype), " should be ", dtype_name(want));
  std::vector<bool> reduced(x.shape.size(), false);
  for (int64_t d : dims) {
    KILN_CHECK(d >= 0 && d < x.dim(), Index, name, "dim ", d, " out of range for a tensor of shape ", shape_str(x.shape));
    KILN_CHECK(!reduced[size_t(d)], Index, name, "dim ", d, " is repeated");
    reduced[size_t(d)] = true;
  }
  const ReducePlan p = make_plan(x, reduced);
  KILN_CHECK(out.is_contiguous() && out.numel() == p.outputs, Shape, name, "output of shape ", shape_str(out.shape),
             " does not hold the ", p.outputs, " results of reducing ", shape_str(x.shape));
  const bool needs_elements = op == ReduceOp::max || op == ReduceOp::min || op == ReduceOp::argmax || op == ReduceOp::argmin;
  KILN_CHECK(!needs_elements || p.count > 0 || p.outputs == 0, Index, name, "cannot reduce over a zero-size dimension of ",
             shape_str(x.shape));
  return p;
}

}  // namespace kiln::ops
