// Binding for the elementwise family (native/ops/elementwise.h): unary (with scalar parameters),
// binary and where, plus the op-code tables exports.unaryOps / exports.binaryOps built from the op
// lists. Outputs are allocated by lib/ops/elementwise.ts and passed in.
#include "../ops/elementwise.h"
#include "op_table.h"

namespace kiln::binding {

void register_elementwise(Napi::Env env, Napi::Object exports) {
  export_enum(env, exports, "unaryOps", ops::unary_op_name);
  export_enum(env, exports, "binaryOps", ops::binary_op_name);
  KILN_KERNEL(env, exports, "unary", "unary", ops::Unary, unary, "op x out s0 s1", ops::kElementwiseCpuDTypes,
              ops::kElementwiseCudaDTypes);
  KILN_KERNEL(env, exports, "binary", "binary", ops::Binary, binary, "op a b out s0 s1", ops::kElementwiseCpuDTypes,
              ops::kElementwiseCudaDTypes);
  KILN_KERNEL(env, exports, "where", "where", ops::Where, where, "cond a b sa sb out", ops::kElementwiseCpuDTypes,
              ops::kElementwiseCudaDTypes);
}

}  // namespace kiln::binding
