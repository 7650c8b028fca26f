// Core tensor functions: create, view, copy, fill, read back, dispose, memory and build info.
#include <cstring>
#include "../core/parallel.h"
#include "../cpu/copy.h"
#include "../cpu/simd.h"
#include "common.h"
#ifdef KILN_CUDA
#include "../cuda/copy.h"
#include "../cuda/runtime.h"
#endif

namespace kiln::binding {

static void check_shape(const char* op, const Shape& shape) {
  KILN_CHECK(shape.size() <= 64, Shape, op, "at most 64 dimensions, got ", shape.size());
  checked_numel(shape, op);
}

static Device device_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t d = int_arg(info, i, op, "device");
  KILN_CHECK(d >= -1 && d < 1024, Device, op, "invalid device code ", d);
  return Device{int32_t(d)};
}

// empty(shape, dtype, device) -> handle with uninitialized contents.
static Napi::Value empty(const Napi::CallbackInfo& info) {
  Shape shape = shape_arg(info, 0, "empty", "shape");
  check_shape("empty", shape);
  Napi::Value h = wrap(info.Env(), Tensor::empty(shape, dtype_arg(info, 1, "empty", "dtype"), device_arg(info, 2, "empty")));
  report_external_memory(info.Env());
  return h;
}

// fromBytes(bytes: ArrayBufferView | ArrayBuffer, shape, dtype, device) -> handle holding a copy.
static Napi::Value from_bytes(const Napi::CallbackInfo& info) {
  const char* op = "fromBytes";
  const uint8_t* src = nullptr;
  size_t len = 0;
  if (info.Length() > 0 && info[0].IsTypedArray()) {
    auto ta = info[0].As<Napi::TypedArray>();
    auto buf = ta.ArrayBuffer();
    src = static_cast<const uint8_t*>(buf.Data()) + ta.ByteOffset();
    len = ta.ByteLength();
  } else if (info.Length() > 0 && info[0].IsArrayBuffer()) {
    auto buf = info[0].As<Napi::ArrayBuffer>();
    src = static_cast<const uint8_t*>(buf.Data());
    len = buf.ByteLength();
  } else {
    throw Error(ErrorCode::Value, op, "argument 'bytes' must be a TypedArray or ArrayBuffer");
  }
  Shape shape = shape_arg(info, 1, op, "shape");
  check_shape(op, shape);
  DType dt = dtype_arg(info, 2, op, "dtype");
  Device dev = device_arg(info, 3, op);
  size_t need = size_t(shape_numel(shape)) * dtype_size(dt);
  KILN_CHECK(len == need, Value, op, "got ", len, " bytes for shape ", shape_str(shape), " of ", dtype_name(dt), " (",
             need, " bytes)");
  Tensor t = Tensor::empty(shape, dt, dev);
  KILN_ON_DEVICE(op, dev, if (need) std::memcpy(t.data_ptr(), src, need), cuda::copy_to_device(t.data_ptr(), src, need, dev));
  Napi::Value h = wrap(info.Env(), std::move(t));
  report_external_memory(info.Env());
  return h;
}

// A contiguous tensor with t's values in dtype dt on t's device (t itself when it already is one).
static Tensor contiguous_as(const Tensor& t, DType dt) {
  if (t.is_contiguous() && t.dtype == dt) return t;
  Tensor c = Tensor::empty(t.shape, dt, t.device());
  KILN_ON_DEVICE("copy", t.device(), cpu::copy(t, c), cuda::copy(t, c));
  return c;
}

// readBytes(handle, out: ArrayBuffer): copies t's elements, row-major, into `out` (exactly their
// size, in t's dtype; reading from a GPU synchronizes with its stream). JavaScript allocates `out`:
// V8 aborts the process when a native ArrayBuffer allocation fails, where `new ArrayBuffer` throws.
static Napi::Value read_bytes(const Napi::CallbackInfo& info) {
  const char* op = "readBytes";
  Tensor& t = tensor_arg(info, 0, op, "tensor");
  KILN_CHECK(info.Length() > 1 && info[1].IsArrayBuffer(), Value, op, "argument 'out' must be an ArrayBuffer");
  auto buf = info[1].As<Napi::ArrayBuffer>();
  size_t n = size_t(t.numel()) * t.itemsize();
  KILN_CHECK(buf.ByteLength() == n, Value, op, "got a buffer of ", buf.ByteLength(), " bytes for a tensor of shape ",
             shape_str(t.shape), " (", dtype_name(t.dtype), ", ", n, " bytes)");
  if (n == 0) return info.Env().Undefined();
  Tensor c = contiguous_as(t, t.dtype);
  KILN_ON_DEVICE(op, c.device(), std::memcpy(buf.Data(), c.data_ptr(), n),
                 cuda::copy_to_host(buf.Data(), c.data_ptr(), n, c.device()));
  return info.Env().Undefined();
}

// dst = src across devices: convert and compact on the source side, move the bytes, then scatter
// into dst's layout on the destination side when dst is not contiguous.
static void copy_between_devices(const Tensor& src, const Tensor& dst) {
#ifdef KILN_CUDA
  Tensor packed = contiguous_as(src, dst.dtype);
  Tensor landing = dst.is_contiguous() ? dst : Tensor::empty(dst.shape, dst.dtype, dst.device());
  size_t n = size_t(dst.numel()) * dst.itemsize();
  if (dst.device().is_cpu())
    cuda::copy_to_host(landing.data_ptr(), packed.data_ptr(), n, src.device());
  else if (src.device().is_cpu())
    cuda::copy_to_device(landing.data_ptr(), packed.data_ptr(), n, dst.device());
  else
    throw Error(ErrorCode::Device, "copy", "copies between two GPUs are not supported");
  if (landing.storage != dst.storage) KILN_ON_DEVICE("copy", dst.device(), cpu::copy(landing, dst), cuda::copy(landing, dst));
#else
  (void)src;
  (void)dst;
  throw Error(ErrorCode::Device, "copy", "kiln was built without CUDA");
#endif
}

// view(handle, shape, strides, offset) -> handle sharing storage; checked to stay inside it.
static Napi::Value view(const Napi::CallbackInfo& info) {
  const char* op = "view";
  Tensor& base = tensor_arg(info, 0, op, "tensor");
  Tensor v;
  v.storage = base.storage;
  v.dtype = base.dtype;
  v.shape = shape_arg(info, 1, op, "shape");
  v.strides = shape_arg(info, 2, op, "strides");
  v.offset = int_arg(info, 3, op, "offset");
  check_shape(op, v.shape);
  KILN_CHECK(v.shape.size() == v.strides.size(), Shape, op, "shape ", shape_str(v.shape), " and strides ",
             shape_str(v.strides), " differ in length");
  KILN_CHECK(v.offset >= 0, Index, op, "negative offset ", v.offset);
  int64_t capacity = int64_t(base.storage->nbytes / base.itemsize());
  if (v.numel() > 0) {
    // Overflow-checked: a wrapped product would pass the bound and let kernels read anywhere.
    int64_t last = v.offset, reach = 0;
    bool overflow = false;
    for (size_t d = 0; d < v.shape.size(); d++) {
      KILN_CHECK(v.strides[d] >= 0, Shape, op, "negative stride in ", shape_str(v.strides));
      overflow |= __builtin_mul_overflow(v.shape[d] - 1, v.strides[d], &reach) || __builtin_add_overflow(last, reach, &last);
    }
    KILN_CHECK(!overflow && last < capacity, Index, op, "view of shape ", shape_str(v.shape), " strides ", shape_str(v.strides),
               " offset ", v.offset, " reaches element ", last, " of a storage of ", capacity);
  }
  return wrap(info.Env(), std::move(v));
}

// alias(handle) -> a second handle to the same view (autograd keeps these for saved tensors).
static Napi::Value alias(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), tensor_arg(info, 0, "alias", "tensor"));
}

static Napi::Value dispose(const Napi::CallbackInfo& info) {
  KILN_CHECK(info.Length() > 0 && dispose_handle(info[0]), Value, "dispose", "argument is not a tensor handle");
  report_external_memory(info.Env());
  return info.Env().Undefined();
}

static Napi::Value is_disposed(const Napi::CallbackInfo& info) {
  KILN_CHECK(info.Length() > 0, Value, "isDisposed", "argument is not a tensor handle");
  return Napi::Boolean::New(info.Env(), is_disposed_handle(info[0], "isDisposed"));
}

// copy(src, dst): dst[...] = src[...] converted to dst's dtype; shapes must match.
static Napi::Value copy(const Napi::CallbackInfo& info) {
  Tensor& src = tensor_arg(info, 0, "copy", "src");
  Tensor& dst = tensor_arg(info, 1, "copy", "dst");
  KILN_CHECK(src.shape == dst.shape, Shape, "copy", "source shape ", shape_str(src.shape),
             " does not match destination shape ", shape_str(dst.shape));
  if (src.device() != dst.device())
    copy_between_devices(src, dst);
  else
    KILN_ON_DEVICE("copy", dst.device(), cpu::copy(src, dst), cuda::copy(src, dst));
  return info.Env().Undefined();
}

static Napi::Value fill(const Napi::CallbackInfo& info) {
  Tensor& dst = tensor_arg(info, 0, "fill", "dst");
  double v = number_arg(info, 1, "fill", "value");
  KILN_ON_DEVICE("fill", dst.device(), cpu::fill(dst, v), cuda::fill(dst, v));
  return info.Env().Undefined();
}

// True when both handles view the same storage (for tests of views and in-place ops).
static Napi::Value same_storage(const Napi::CallbackInfo& info) {
  Tensor& a = tensor_arg(info, 0, "sameStorage", "a");
  Tensor& b = tensor_arg(info, 1, "sameStorage", "b");
  return Napi::Boolean::New(info.Env(), a.storage == b.storage);
}

static Napi::Value version(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(tensor_arg(info, 0, "version", "tensor").storage->version));
}

static Napi::Value bump_version(const Napi::CallbackInfo& info) {
  tensor_arg(info, 0, "bumpVersion", "tensor").storage->version++;
  return info.Env().Undefined();
}

static Napi::Value memory_stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto c = cpu_memory_counters();
  auto o = Napi::Object::New(env);
  o.Set("tensors", Napi::Number::New(env, double(live_handles())));
  o.Set("storages", Napi::Number::New(env, double(c.storages)));
  o.Set("bytes", Napi::Number::New(env, double(c.bytes)));
  o.Set("peakBytes", Napi::Number::New(env, double(c.peak_bytes)));
  o.Set("cachedBytes", Napi::Number::New(env, double(c.cached_bytes)));
  return o;
}

static Napi::Value reset_peak_memory(const Napi::CallbackInfo& info) {
  cpu_reset_peak();
  return info.Env().Undefined();
}

static Napi::Value empty_cache(const Napi::CallbackInfo& info) {
  cpu_empty_cache();
  return info.Env().Undefined();
}

static Napi::Value build_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = Napi::Object::New(env);
  o.Set("openmp", Napi::Boolean::New(env, have_openmp()));
#ifdef KILN_OPENBLAS
  o.Set("blas", Napi::String::New(env, "openblas"));
#else
  o.Set("blas", Napi::String::New(env, "builtin"));
#endif
#ifdef KILN_CUDA
  o.Set("cuda", Napi::Boolean::New(env, true));
#else
  o.Set("cuda", Napi::Boolean::New(env, false));
#endif
  o.Set("threads", Napi::Number::New(env, num_threads()));
  o.Set("simd", Napi::String::New(env, cpu_has_avx2_fma() ? "avx2" : "baseline"));
  return o;
}

static Napi::Value set_threads(const Napi::CallbackInfo& info) {
  int64_t n = int_arg(info, 0, "setNumThreads", "n");
  KILN_CHECK(n >= 1 && n <= 1024, Value, "setNumThreads", "thread count must be in [1, 1024], got ", n);
  set_num_threads(int(n));
  return info.Env().Undefined();
}

static Napi::Value set_error_factory_fn(const Napi::CallbackInfo& info) {
  KILN_CHECK(info.Length() > 0 && info[0].IsFunction(), Value, "setErrorFactory", "argument must be a function");
  set_error_factory(info.Env(), info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

void register_tensor(Napi::Env env, Napi::Object exports) {
  KILN_EXPORT(env, exports, "empty", empty);
  KILN_EXPORT(env, exports, "fromBytes", from_bytes);
  KILN_EXPORT(env, exports, "readBytes", read_bytes);
  KILN_EXPORT(env, exports, "view", view);
  KILN_EXPORT(env, exports, "alias", alias);
  KILN_EXPORT(env, exports, "dispose", dispose);
  KILN_EXPORT(env, exports, "isDisposed", is_disposed);
  KILN_EXPORT(env, exports, "copy", copy);
  KILN_EXPORT(env, exports, "fill", fill);
  KILN_EXPORT(env, exports, "sameStorage", same_storage);
  KILN_EXPORT(env, exports, "version", version);
  KILN_EXPORT(env, exports, "bumpVersion", bump_version);
  KILN_EXPORT(env, exports, "memoryStats", memory_stats);
  KILN_EXPORT(env, exports, "emptyCache", empty_cache);
  KILN_EXPORT(env, exports, "resetPeakMemory", reset_peak_memory);
  KILN_EXPORT(env, exports, "buildInfo", build_info);
  KILN_EXPORT(env, exports, "setNumThreads", set_threads);
  KILN_EXPORT(env, exports, "setErrorFactory", set_error_factory_fn);
}

}  // namespace kiln::binding
