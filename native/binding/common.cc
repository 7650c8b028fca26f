// Handle wrapping, argument conversion and error translation for the binding.
#include "common.h"
#include <atomic>
#include <cmath>
#include <new>

namespace kiln::binding {

namespace {
const napi_type_tag kHandleTag = {0x6b696c6e2d74656eULL, 0x736f722d68616e64ULL};  // "kiln-tensor-hand"
std::atomic<int64_t> g_live_handles{0};
}  // namespace

int64_t live_handles() { return g_live_handles.load(); }

Napi::Value wrap(Napi::Env env, Tensor t) {
  auto* h = new Handle{std::move(t), false};
  g_live_handles++;
  auto ext = Napi::External<Handle>::New(env, h, [](Napi::Env, Handle* p) {
    if (!p->disposed) g_live_handles--;
    delete p;
  });
  ext.TypeTag(&kHandleTag);
  return ext;
}

Handle* handle_of(const Napi::Value& v) {
  if (!v.IsExternal()) return nullptr;
  auto ext = v.As<Napi::External<Handle>>();
  if (!ext.CheckTypeTag(&kHandleTag)) return nullptr;
  return ext.Data();
}

void dispose_handle(Handle* h) {
  if (h->disposed) return;
  h->disposed = true;
  h->t.storage.reset();
  g_live_handles--;
}

Tensor& tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  Handle* h = i < info.Length() ? handle_of(info[i]) : nullptr;
  KILN_CHECK(h != nullptr, Value, op, "argument '", name, "' is not a tensor handle");
  KILN_CHECK(!h->disposed, Disposed, op, "tensor argument '", name, "' was disposed");
  return h->t;
}

Tensor* optional_tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (i >= info.Length() || info[i].IsUndefined() || info[i].IsNull()) return nullptr;
  return &tensor_arg(info, i, op, name);
}

double number_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  KILN_CHECK(i < info.Length() && info[i].IsNumber(), Value, op, "argument '", name, "' must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  double d = number_arg(info, i, op, name);
  KILN_CHECK(std::isfinite(d) && d == std::floor(d) && std::fabs(d) <= 9007199254740991.0, Value, op, "argument '",
             name, "' must be an integer, got ", d);
  return int64_t(d);
}

bool bool_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  KILN_CHECK(i < info.Length() && info[i].IsBoolean(), Value, op, "argument '", name, "' must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

DType dtype_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  int64_t d = int_arg(info, i, op, name);
  KILN_CHECK(dtype_valid(int32_t(d)), DType, op, "argument '", name, "' is not a dtype code: ", d);
  return DType(d);
}

Shape shape_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  KILN_CHECK(i < info.Length() && info[i].IsArray(), Value, op, "argument '", name, "' must be an array of integers");
  auto arr = info[i].As<Napi::Array>();
  Shape s(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value v = arr.Get(k);
    KILN_CHECK(v.IsNumber(), Value, op, "argument '", name, "' must be an array of integers");
    double d = v.As<Napi::Number>().DoubleValue();
    KILN_CHECK(std::isfinite(d) && d == std::floor(d) && std::fabs(d) <= 9007199254740991.0, Value, op, "argument '",
               name, "' must be an array of integers");
    s[k] = int64_t(d);
  }
  return s;
}

void check_same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t) continue;
    if (!first) { first = t; continue; }
    if (t->device() != first->device()) {
      auto name = [](Device d) { return d.is_cpu() ? std::string("cpu") : str_cat("cuda:", d.index); };
      throw Error(ErrorCode::Device, op,
                  str_cat("expected all tensors on one device, got ", name(first->device()), " and ", name(t->device())));
    }
  }
}

void check_same_dtype(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t) continue;
    if (!first) { first = t; continue; }
    KILN_CHECK(t->dtype == first->dtype, DType, op, "expected one dtype, got ", dtype_name(first->dtype), " and ",
               dtype_name(t->dtype));
  }
}

// The factory (code, op, message) => Error is installed by lib/errors.ts through setErrorFactory.
struct InstanceData {
  Napi::FunctionReference error_factory;
  int64_t reported_bytes = 0;
};

InstanceData& instance(Napi::Env env) {
  auto* d = env.GetInstanceData<InstanceData>();
  if (!d) {
    d = new InstanceData();
    env.SetInstanceData(d);
  }
  return *d;
}

void set_error_factory(Napi::Env env, Napi::Function f) { instance(env).error_factory = Napi::Persistent(f); }

[[noreturn]] void rethrow_as_js(Napi::Env env) {
  ErrorCode code = ErrorCode::Internal;
  std::string op, msg;
  try {
    throw;
  } catch (const Error& e) {
    code = e.code();
    op = e.op();
    msg = e.detail();
  } catch (const std::bad_alloc&) {
    code = ErrorCode::OutOfMemory;
    msg = "native allocation failed";
  } catch (const std::exception& e) {
    msg = e.what();
  } catch (...) {
    msg = "unknown native exception";
  }
  auto& inst = instance(env);
  if (!inst.error_factory.IsEmpty()) {
    Napi::Value err = inst.error_factory.Call({Napi::Number::New(env, double(int32_t(code))), Napi::String::New(env, op),
                                               Napi::String::New(env, msg)});
    throw Napi::Error(env, err);
  }
  throw Napi::Error::New(env, str_cat(error_code_name(code), ": ", op, ": ", msg));
}

void report_external_memory(Napi::Env env) {
  auto& inst = instance(env);
  int64_t now = cpu_memory_counters().bytes;
  int64_t delta = now - inst.reported_bytes;
  if (delta > (1 << 20) || delta < -(1 << 20)) {
    Napi::MemoryManagement::AdjustExternalMemory(env, delta);
    inst.reported_bytes = now;
  }
}

}  // namespace kiln::binding
