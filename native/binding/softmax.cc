// Binding for the softmax op family (to be filled in).
#include "common.h"

namespace kiln::binding {
void register_softmax(Napi::Env, Napi::Object) {}
}  // namespace kiln::binding
