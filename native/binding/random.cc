// Binding for the random op family (to be filled in).
#include "common.h"

namespace kiln::binding {
void register_random(Napi::Env, Napi::Object) {}
}  // namespace kiln::binding
