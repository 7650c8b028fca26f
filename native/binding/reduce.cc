// Binding for the reduce op family (to be filled in).
#include "common.h"

namespace kiln::binding {
void register_reduce(Napi::Env, Napi::Object) {}
}  // namespace kiln::binding
