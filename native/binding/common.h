// Binding helpers shared by every op family: tensor handles (type-tagged N-API externals),
// argument conversion with errors that name the op, the error translation to the JavaScript
// classes, device checks and the per-device dispatch. Op families register through KILN_EXPORT.
#pragma once
#define NAPI_VERSION 8
#include <napi.h>
#include <string>
#include <vector>
#include "../core/error.h"
#include "../core/tensor.h"

namespace kiln::binding {

// Tensor handles are numbers into a per-environment table (see common.cc). Creates a handle for t
// (counted in memoryStats().tensors).
Napi::Value wrap(Napi::Env env, Tensor t);
// The tensor behind handle v; throws ValueError when v is no handle, DisposedError when it was
// disposed, naming op and `what`.
Tensor& tensor_of(const Napi::Value& v, const char* op, const std::string& what);
// Frees handle v's slot and its storage reference; false when v is no handle (a disposed handle is
// a no-op).
bool dispose_handle(const Napi::Value& v);
// Whether v is a disposed handle; ValueError when it is no handle.
bool is_disposed_handle(const Napi::Value& v, const char* op);
// Handles not yet disposed (counting those of tensors the garbage collector has yet to report).
int64_t live_handles();
void set_error_factory(Napi::Env env, Napi::Function f);
// The tensor behind argument i of op; throws DisposedError / ValueError naming op and argument.
Tensor& tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
// Same, but undefined or null gives nullptr (optional inputs such as a missing bias).
Tensor* optional_tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
Shape shape_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
double number_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
// A BigInt in [0, 2^64) (seeds and offsets).
uint64_t u64_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
bool bool_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
DType dtype_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);

// The object behind argument i when it is an external tagged `tag` (streams, events, stores);
// ValueError naming op and `what` otherwise, so one kind of external never passes for another.
template <typename T>
T* external_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* what, const napi_type_tag* tag) {
  Napi::Value v = info.Length() > i ? info[i] : info.Env().Undefined();
  KILN_CHECK(v.IsExternal() && v.As<Napi::External<T>>().CheckTypeTag(tag), Value, op, "argument ", i, " is not a ",
             what);
  return v.As<Napi::External<T>>().Data();
}

// Throws DeviceError unless every tensor is on the same device as the first.
void check_same_device(const char* op, std::initializer_list<const Tensor*> ts);
// Throws DTypeError unless every tensor has the dtype of the first.
void check_same_dtype(const char* op, std::initializer_list<const Tensor*> ts);

// Converts a C++ exception into the JavaScript error made by the factory lib/errors.ts installs.
[[noreturn]] void rethrow_as_js(Napi::Env env);
// The JavaScript error for a native failure, not thrown (async work rejects its promise with it).
Napi::Value make_js_error(Napi::Env env, ErrorCode code, const std::string& op, const std::string& msg);

// Tells V8 how much native memory tensors hold now (called after allocations and frees).
void report_external_memory(Napi::Env env);

using BindingFn = Napi::Value (*)(const Napi::CallbackInfo&);

template <BindingFn F>
Napi::Value guarded(const Napi::CallbackInfo& info) {
  try {
    return F(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    rethrow_as_js(info.Env());
  }
}

}  // namespace kiln::binding

// Registers C++ function FN as exports[NAME] with exceptions translated to kiln's error classes.
#define KILN_EXPORT(env, exports, NAME, FN) \
  (exports).Set(NAME, ::Napi::Function::New<::kiln::binding::guarded<FN>>(env, NAME))

// KILN_ON_DEVICE(device, cpu_call, cuda_call): runs the CPU or the CUDA call for the device;
// without a CUDA build a CUDA device is a DeviceError.
#ifdef KILN_CUDA
#define KILN_ON_DEVICE(op, dev, CPU_CALL, CUDA_CALL) \
  do {                                               \
    if ((dev).is_cpu()) { CPU_CALL; } else { CUDA_CALL; } \
  } while (0)
#else
#define KILN_ON_DEVICE(op, dev, CPU_CALL, CUDA_CALL)                                             \
  do {                                                                                           \
    if ((dev).is_cpu()) { CPU_CALL; }                                                            \
    else throw ::kiln::Error(::kiln::ErrorCode::Device, op, "kiln was built without CUDA");      \
  } while (0)
#endif
