// The elementwise family's op names, result dtypes and argument checks (native/ops/elementwise.h),
// run by both backends before any kernel.
#include "elementwise.h"

namespace kiln::ops {

namespace {

struct OpInfo {
  const char* name;
  ew::DTypes dtypes;
  ew::Result result;
};

#define KILN_EW_INFO(NAME, KIND, RES, EXPR) {#NAME, ew::DTypes::KIND, ew::Result::RES},
const OpInfo kUnaryInfo[] = {KILN_UNARY_OPS(KILN_EW_INFO)};
const OpInfo kBinaryInfo[] = {KILN_BINARY_OPS(KILN_EW_INFO)};
#undef KILN_EW_INFO

DType result_dtype(const OpInfo& info, DType in) {
  if (!ew::takes(info.dtypes, in)) throw_dtype_unsupported(info.name, in);
  return info.result == ew::Result::BOOL ? DType::Bool : in;
}

void check_operand_shape(const char* name, const Tensor& t, const Tensor& out, const char* what) {
  KILN_CHECK(t.shape == out.shape, Shape, name, what, " has shape ", shape_str(t.shape), " but the output has shape ",
             shape_str(out.shape), " (operands must be broadcast first)");
}

void check_result(const char* name, DType want, const Tensor& out) {
  KILN_CHECK(out.dtype == want, DType, name, "output dtype ", dtype_name(out.dtype), " should be ", dtype_name(want));
}

}  // namespace

const char* unary_op_name(UnaryOp op) { return kUnaryInfo[int(op)].name; }
const char* binary_op_name(BinaryOp op) { return kBinaryInfo[int(op)].name; }
DType unary_result_dtype(UnaryOp op, DType in) { return result_dtype(kUnaryInfo[int(op)], in); }
DType binary_result_dtype(BinaryOp op, DType in) { return result_dtype(kBinaryInfo[int(op)], in); }

void check_unary(UnaryOp op, const Tensor& x, const Tensor& out) {
  const char* name = unary_op_name(op);
  check_operand_shape(name, x, out, "input");
  check_result(name, unary_result_dtype(op, x.dtype), out);
}

void check_binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const char* name = binary_op_name(op);
  check_operand_shape(name, a, out, "first operand");
  check_operand_shape(name, b, out, "second operand");
  KILN_CHECK(a.dtype == b.dtype, DType, name, "operands have dtypes ", dtype_name(a.dtype), " and ",
             dtype_name(b.dtype), " (promote them first)");
  check_result(name, binary_result_dtype(op, a.dtype), out);
}

void check_where(const Tensor& cond, const Tensor* a, const Tensor* b, const Tensor& out) {
  const char* name = "where";
  KILN_CHECK(cond.dtype == DType::Bool, DType, name, "condition must be bool, got ", dtype_name(cond.dtype));
  check_operand_shape(name, cond, out, "condition");
  for (const Tensor* t : {a, b}) {
    if (!t) continue;
    check_operand_shape(name, *t, out, "value");
    KILN_CHECK(t->dtype == out.dtype, DType, name, "values have dtype ", dtype_name(t->dtype), " but the output has ",
               dtype_name(out.dtype));
  }
}

}  // namespace kiln::ops
