// Binding for the elementwise op family (to be filled in).
#include "common.h"

namespace kiln::binding {
void register_elementwise(Napi::Env, Napi::Object) {}
}  // namespace kiln::binding
