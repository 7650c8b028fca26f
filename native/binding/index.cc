// Binding for the index op family (to be filled in).
#include "common.h"

namespace kiln::binding {
void register_index(Napi::Env, Napi::Object) {}
}  // namespace kiln::binding
