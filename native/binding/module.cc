// Addon entry point: registers the core tensor functions and each op family's functions.
#include "common.h"

namespace kiln::binding {
void register_tensor(Napi::Env env, Napi::Object exports);
void register_elementwise(Napi::Env env, Napi::Object exports);
void register_reduce(Napi::Env env, Napi::Object exports);
void register_matmul(Napi::Env env, Napi::Object exports);
void register_softmax(Napi::Env env, Napi::Object exports);
void register_attention(Napi::Env env, Napi::Object exports);
void register_norm(Napi::Env env, Napi::Object exports);
void register_rnn(Napi::Env env, Napi::Object exports);
void register_index(Napi::Env env, Napi::Object exports);
void register_random(Napi::Env env, Napi::Object exports);
void register_optim(Napi::Env env, Napi::Object exports);
void register_cuda(Napi::Env env, Napi::Object exports);
void register_dist(Napi::Env env, Napi::Object exports);
void register_kernel_registry(Napi::Env env, Napi::Object exports);
}  // namespace kiln::binding

static Napi::Object init(Napi::Env env, Napi::Object exports) {
  using namespace kiln::binding;
  register_tensor(env, exports);
  register_elementwise(env, exports);
  register_reduce(env, exports);
  register_matmul(env, exports);
  register_softmax(env, exports);
  register_attention(env, exports);
  register_norm(env, exports);
  register_rnn(env, exports);
  register_index(env, exports);
  register_random(env, exports);
  register_optim(env, exports);
  register_cuda(env, exports);
  register_dist(env, exports);
  register_kernel_registry(env, exports);
  return exports;
}

NODE_API_MODULE(kiln, init)
