// Binding for the reduce family (native/ops/reduce.h): reduce(op, x, out, dims, param) and the
// op-code table exports.reduceOps built from the op list.
#include "../ops/reduce.h"
#include "op_table.h"

namespace kiln::binding {

void register_reduce(Napi::Env env, Napi::Object exports) {
  export_enum(env, exports, "reduceOps", ops::reduce_op_name);
  KILN_KERNEL(env, exports, "reduce", "reduce", ops::Reduce, reduce, "op x out dims param", ops::kReduceCpuDTypes,
              ops::kReduceCudaDTypes);
}

}  // namespace kiln::binding
