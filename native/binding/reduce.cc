// Binding for the reduce family: reduce(op, x, out, dims, param) and the op-code table
// exports.reduceOps built from the list in cpu/reduce.h.
#include "../cpu/reduce.h"
#include "common.h"
#ifdef KILN_CUDA
#include "../cuda/reduce_ops.h"
#endif

namespace kiln::binding {

// reduce(op, x, out, dims, param)
static Napi::Value reduce(const Napi::CallbackInfo& info) {
  int64_t code = int_arg(info, 0, "reduce", "op");
  KILN_CHECK(code >= 0 && code < int64_t(ReduceOp::kCount), Value, "reduce", "unknown op code ", code);
  const ReduceOp op = ReduceOp(code);
  const char* name = reduce_op_name(op);
  Tensor& x = tensor_arg(info, 1, name, "x");
  Tensor& out = tensor_arg(info, 2, name, "out");
  Shape dims = shape_arg(info, 3, name, "dims");
  double param = number_arg(info, 4, name, "param");
  check_same_device(name, {&x, &out});
  KILN_ON_DEVICE(name, out.device(), cpu::reduce(op, x, out, dims, param), cuda::reduce(op, x, out, dims, param));
  return info.Env().Undefined();
}

void register_reduce(Napi::Env env, Napi::Object exports) {
  auto ops = Napi::Object::New(env);
  for (int32_t i = 0; i < int32_t(ReduceOp::kCount); i++) ops.Set(reduce_op_name(ReduceOp(i)), Napi::Number::New(env, i));
  exports.Set("reduceOps", ops);
  KILN_EXPORT(env, exports, "reduce", reduce);
}

}  // namespace kiln::binding
