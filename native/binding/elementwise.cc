// Binding for the elementwise family: unary (with scalar parameters), binary and where, plus the
// op-code tables exports.unaryOps / exports.binaryOps built from the lists in cpu/elementwise.h.
#include "../cpu/elementwise.h"
#include "common.h"
#ifdef KILN_CUDA
#include "../cuda/elementwise.h"
#endif

namespace kiln::binding {

template <typename Op>
static Op op_arg(const Napi::CallbackInfo& info, const char* fn) {
  int64_t code = int_arg(info, 0, fn, "op");
  KILN_CHECK(code >= 0 && code < int64_t(Op::kCount), Value, fn, "unknown op code ", code);
  return Op(code);
}

// unary(op, x, out, s0, s1)
static Napi::Value unary(const Napi::CallbackInfo& info) {
  UnaryOp op = op_arg<UnaryOp>(info, "unary");
  const char* name = unary_op_name(op);
  Tensor& x = tensor_arg(info, 1, name, "x");
  Tensor& out = tensor_arg(info, 2, name, "out");
  double s0 = number_arg(info, 3, name, "s0"), s1 = number_arg(info, 4, name, "s1");
  check_same_device(name, {&x, &out});
  KILN_ON_DEVICE(name, out.device(), cpu::unary(op, x, out, s0, s1), cuda::unary(op, x, out, s0, s1));
  return info.Env().Undefined();
}

// binary(op, a, b, out, s0, s1)
static Napi::Value binary(const Napi::CallbackInfo& info) {
  BinaryOp op = op_arg<BinaryOp>(info, "binary");
  const char* name = binary_op_name(op);
  Tensor& a = tensor_arg(info, 1, name, "a");
  Tensor& b = tensor_arg(info, 2, name, "b");
  Tensor& out = tensor_arg(info, 3, name, "out");
  double s0 = number_arg(info, 4, name, "s0"), s1 = number_arg(info, 5, name, "s1");
  check_same_device(name, {&a, &b, &out});
  KILN_ON_DEVICE(name, out.device(), cpu::binary(op, a, b, out, s0, s1), cuda::binary(op, a, b, out, s0, s1));
  return info.Env().Undefined();
}

// where(cond, a | null, b | null, out, sa, sb): a null value operand is the matching scalar.
static Napi::Value where(const Napi::CallbackInfo& info) {
  const char* name = "where";
  Tensor& cond = tensor_arg(info, 0, name, "cond");
  Tensor* a = optional_tensor_arg(info, 1, name, "a");
  Tensor* b = optional_tensor_arg(info, 2, name, "b");
  Tensor& out = tensor_arg(info, 3, name, "out");
  double sa = number_arg(info, 4, name, "sa"), sb = number_arg(info, 5, name, "sb");
  check_same_device(name, {&cond, &out});
  if (a) check_same_device(name, {a, &out});
  if (b) check_same_device(name, {b, &out});
  KILN_ON_DEVICE(name, out.device(), cpu::where(cond, a, b, sa, sb, out), cuda::where(cond, a, b, sa, sb, out));
  return info.Env().Undefined();
}

template <typename Op>
static Napi::Object op_table(Napi::Env env, const char* (*name)(Op)) {
  auto o = Napi::Object::New(env);
  for (int32_t i = 0; i < int32_t(Op::kCount); i++) o.Set(name(Op(i)), Napi::Number::New(env, i));
  return o;
}

void register_elementwise(Napi::Env env, Napi::Object exports) {
  exports.Set("unaryOps", op_table<UnaryOp>(env, unary_op_name));
  exports.Set("binaryOps", op_table<BinaryOp>(env, binary_op_name));
  KILN_EXPORT(env, exports, "unary", unary);
  KILN_EXPORT(env, exports, "binary", binary);
  KILN_EXPORT(env, exports, "where", where);
}

}  // namespace kiln::binding
