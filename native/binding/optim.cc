// Binding for fused optimizer kernels (to be filled in).
#include "common.h"

namespace kiln::binding {
void register_optim(Napi::Env, Napi::Object) {}
}  // namespace kiln::binding
