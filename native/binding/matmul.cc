// Binding for the matmul op family (to be filled in).
#include "common.h"

namespace kiln::binding {
void register_matmul(Napi::Env, Napi::Object) {}
}  // namespace kiln::binding
