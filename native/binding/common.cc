// Handle wrapping, argument conversion and error translation for the binding.
#include "common.h"
#include <atomic>
#include <deque>
#include <cmath>
#include <new>

namespace kiln::binding {

namespace {
// Handles are plain numbers, slot index + generation * 2^32, into a per-environment table, so that
// no JavaScript object needs a native finalizer: N-API runs finalizers only when the event loop
// turns, and a synchronous training loop that made thousands of handles per step kept every one of
// them until then (RSS grew by ~370 bytes per handle). dispose() empties the slot at once for
// reuse under the next generation; a disposed number then reads as disposed, and a forged one as
// no handle at all, never as a dangling pointer. A slot whose generation runs out is retired
// rather than reused, so a number never comes back to life. The JavaScript side frees handles of
// tensors the garbage collector finds undisposed (a FinalizationRegistry, the safety net).
constexpr double kIndexSpan = 4294967296.0;        // 2^32
constexpr uint32_t kGenerationEnd = 1u << 21;      // handles stay below 2^53, exact as doubles

struct Slot {
  Tensor t;
  uint32_t generation = 1;
  bool live = false;
};

std::atomic<int64_t> g_live_handles{0};

struct HandleTable {
  std::deque<Slot> slots;  // a deque: references to slots stay valid while a call adds handles
  std::vector<uint32_t> free_slots;
  // An environment that ends (a worker thread exiting) takes its live handles with it.
  ~HandleTable() {
    for (const Slot& s : slots) g_live_handles -= s.live ? 1 : 0;
  }
};

enum class Lookup { Live, Disposed, Invalid };

HandleTable& handle_table(Napi::Env env);

// The slot behind v (and its index) and whether v is its live handle.
Lookup lookup(const Napi::Value& v, Slot** out, uint32_t* out_index = nullptr) {
  if (!v.IsNumber()) return Lookup::Invalid;
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d < double(kGenerationEnd) * kIndexSpan) || d != std::floor(d)) return Lookup::Invalid;
  const uint64_t bits = uint64_t(d);
  const uint64_t index = bits & 0xffffffffu;
  const uint32_t gen = uint32_t(bits >> 32);
  HandleTable& tab = handle_table(v.Env());
  if (index >= tab.slots.size() || gen == 0) return Lookup::Invalid;
  Slot& s = tab.slots[index];
  *out = &s;
  if (out_index) *out_index = uint32_t(index);
  if (gen == s.generation && s.live) return Lookup::Live;
  return gen <= s.generation ? Lookup::Disposed : Lookup::Invalid;
}
}  // namespace

int64_t live_handles() { return g_live_handles.load(); }

Napi::Value wrap(Napi::Env env, Tensor t) {
  HandleTable& tab = handle_table(env);
  uint32_t index;
  if (!tab.free_slots.empty()) {
    index = tab.free_slots.back();
    tab.free_slots.pop_back();
  } else {
    KILN_CHECK(tab.slots.size() < size_t(UINT32_MAX), OutOfMemory, "wrap", "more than 2^32 tensor handles");
    index = uint32_t(tab.slots.size());
    tab.slots.emplace_back();
  }
  Slot& s = tab.slots[index];
  s.t = std::move(t);
  s.live = true;
  g_live_handles++;
  return Napi::Number::New(env, double(index) + double(s.generation) * kIndexSpan);
}

bool dispose_handle(const Napi::Value& v) {
  Slot* s = nullptr;
  uint32_t index = 0;
  Lookup r = lookup(v, &s, &index);
  if (r != Lookup::Live) return r == Lookup::Disposed;
  s->t = Tensor();
  s->live = false;
  g_live_handles--;
  if (++s->generation < kGenerationEnd) handle_table(v.Env()).free_slots.push_back(index);
  return true;
}

bool is_disposed_handle(const Napi::Value& v, const char* op) {
  Slot* s = nullptr;
  Lookup r = lookup(v, &s);
  KILN_CHECK(r != Lookup::Invalid, Value, op, "argument is not a tensor handle");
  return r == Lookup::Disposed;
}

Tensor& tensor_of(const Napi::Value& v, const char* op, const std::string& what) {
  Slot* s = nullptr;
  Lookup r = lookup(v, &s);
  KILN_CHECK(r != Lookup::Invalid, Value, op, what, " is not a tensor handle");
  KILN_CHECK(r != Lookup::Disposed, Disposed, op, what, " was disposed");
  return s->t;
}

Tensor& tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  KILN_CHECK(i < info.Length(), Value, op, "argument '", name, "' is not a tensor handle");
  return tensor_of(info[i], op, str_cat("tensor argument '", name, "'"));
}

Tensor* optional_tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  if (i >= info.Length() || info[i].IsUndefined() || info[i].IsNull()) return nullptr;
  return &tensor_arg(info, i, op, name);
}

uint64_t u64_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  KILN_CHECK(i < info.Length() && info[i].IsBigInt(), Value, op, "argument '", name, "' must be a BigInt");
  bool lossless = false;
  uint64_t v = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
  KILN_CHECK(lossless, Value, op, "argument '", name, "' must be in [0, 2^64)");
  return v;
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
  HandleTable handles;
};

InstanceData& instance(Napi::Env env) {
  auto* d = env.GetInstanceData<InstanceData>();
  if (!d) {
    d = new InstanceData();
    env.SetInstanceData(d);
  }
  return *d;
}

namespace {
HandleTable& handle_table(Napi::Env env) { return instance(env).handles; }
}  // namespace

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
  throw Napi::Error(env, make_js_error(env, code, op, msg));
}

Napi::Value make_js_error(Napi::Env env, ErrorCode code, const std::string& op, const std::string& msg) {
  auto& inst = instance(env);
  if (!inst.error_factory.IsEmpty())
    return inst.error_factory.Call({Napi::Number::New(env, double(int32_t(code))), Napi::String::New(env, op),
                                    Napi::String::New(env, msg)});
  return Napi::Error::New(env, str_cat(error_code_name(code), ": ", op, ": ", msg)).Value();
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
