// kiln.cuda: device count and names, synchronize, allocator stats and cache control, TF32, and the
// host-synchronization counter. Without a CUDA build the device count is 0 and the rest throw.
#include "common.h"
#ifdef KILN_CUDA
#include "../cuda/runtime.h"
#endif

namespace kiln::binding {

#ifdef KILN_CUDA
static Device cuda_device_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t d = info.Length() > i && !info[i].IsUndefined() ? int_arg(info, i, op, "device") : 0;
  KILN_CHECK(d >= 0 && d < cuda::device_count(), Device, op, "cuda:", d, " does not exist (", cuda::device_count(),
             " visible)");
  return Device{int32_t(d)};
}

static Napi::Value device_count(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cuda::device_count());
}

static Napi::Value device_name(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), cuda::device_name(cuda_device_arg(info, 0, "getDeviceName").index));
}

static Napi::Value synchronize(const Napi::CallbackInfo& info) {
  cuda::synchronize(cuda_device_arg(info, 0, "synchronize"));
  return info.Env().Undefined();
}

static Napi::Value memory_stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto s = cuda::alloc_stats(cuda_device_arg(info, 0, "memoryStats").index);
  auto o = Napi::Object::New(env);
  o.Set("allocated", Napi::Number::New(env, double(s.allocated)));
  o.Set("reserved", Napi::Number::New(env, double(s.reserved)));
  o.Set("peakAllocated", Napi::Number::New(env, double(s.peak_allocated)));
  o.Set("mallocs", Napi::Number::New(env, double(s.mallocs)));
  o.Set("frees", Napi::Number::New(env, double(s.frees)));
  o.Set("ooms", Napi::Number::New(env, double(s.ooms)));
  return o;
}

static Napi::Value reset_peak(const Napi::CallbackInfo& info) {
  cuda::reset_peak(cuda_device_arg(info, 0, "resetPeakMemoryStats").index);
  return info.Env().Undefined();
}

static Napi::Value empty_cache(const Napi::CallbackInfo& info) {
  cuda::empty_cache();
  return info.Env().Undefined();
}

static Napi::Value sync_count(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(cuda::sync_count()));
}

static Napi::Value set_allow_tf32(const Napi::CallbackInfo& info) {
  cuda::set_allow_tf32(bool_arg(info, 0, "setAllowTF32", "on"));
  return info.Env().Undefined();
}

static Napi::Value allow_tf32(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), cuda::allow_tf32());
}

void register_cuda(Napi::Env env, Napi::Object exports) {
  cuda::init();
  KILN_EXPORT(env, exports, "cudaDeviceCount", device_count);
  KILN_EXPORT(env, exports, "cudaDeviceName", device_name);
  KILN_EXPORT(env, exports, "cudaSynchronize", synchronize);
  KILN_EXPORT(env, exports, "cudaMemoryStats", memory_stats);
  KILN_EXPORT(env, exports, "cudaResetPeakMemoryStats", reset_peak);
  KILN_EXPORT(env, exports, "cudaEmptyCache", empty_cache);
  KILN_EXPORT(env, exports, "cudaSyncCount", sync_count);
  KILN_EXPORT(env, exports, "cudaSetAllowTF32", set_allow_tf32);
  KILN_EXPORT(env, exports, "cudaAllowTF32", allow_tf32);
}
#else
static Napi::Value no_devices(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), 0); }

void register_cuda(Napi::Env env, Napi::Object exports) { KILN_EXPORT(env, exports, "cudaDeviceCount", no_devices); }
#endif

}  // namespace kiln::binding
