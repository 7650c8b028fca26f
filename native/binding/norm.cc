// Binding for the norm op family (to be filled in).
#include "common.h"

namespace kiln::binding {
void register_norm(Napi::Env, Napi::Object) {}
}  // namespace kiln::binding
