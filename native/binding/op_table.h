// The one door from JavaScript to an op family's kernels. An entry names a kernel signature (a C++
// function type from native/ops/<family>.h), its CPU and CUDA implementations and its argument
// names; the template below unpacks the arguments by their C++ types, checks every tensor is on one
// device, runs the implementation for that device and converts the result. No family writes
// positional argument code by hand.
//
// Each entry also reports, through kernels(), its signature in the form lib/ops/dispatch.ts parses
// ("(x:T, weight:T?, eps:f) -> void") and the dtypes each backend takes, so lib/ checks at load that
// its typed signatures match and knows no backend's coverage by hand.
#pragma once
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include "common.h"

namespace kiln::binding {

// How one argument type crosses the boundary: its code in signatures and its conversion.
template <typename T, typename = void>
struct Codec;

template <>
struct Codec<const Tensor&> {
  static constexpr const char* code = "T";
  using Stored = const Tensor*;
  static Stored get(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
    return &tensor_arg(info, i, op, name);
  }
  static const Tensor& pass(Stored s) { return *s; }
  static const Tensor* tensor(Stored s) { return s; }
};
template <>
struct Codec<const Tensor*> {
  static constexpr const char* code = "T?";
  using Stored = const Tensor*;
  static Stored get(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
    return optional_tensor_arg(info, i, op, name);
  }
  static const Tensor* pass(Stored s) { return s; }
  static const Tensor* tensor(Stored s) { return s; }
};

// A list of tensors (e.g. every gradient a clipping pass reads), each checked like a T argument.
template <>
struct Codec<const std::vector<const Tensor*>&> {
  static constexpr const char* code = "T[]";
  using Stored = std::vector<const Tensor*>;
  static Stored get(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
    KILN_CHECK(i < info.Length() && info[i].IsArray(), Value, op, "argument '", name, "' must be an array of tensors");
    const auto arr = info[i].As<Napi::Array>();
    Stored out(arr.Length());
    for (uint32_t k = 0; k < arr.Length(); k++) out[k] = &tensor_of(arr.Get(k), op, str_cat(name, "[", k, "]"));
    return out;
  }
  static const Stored& pass(const Stored& s) { return s; }
  static const Stored& tensors(const Stored& s) { return s; }
};

// Plain values: no tensor to check.
template <typename T, const char* Code>
struct ValueCodec {
  static constexpr const char* code = Code;
  using Stored = T;
  static T pass(T v) { return v; }
  static const Tensor* tensor(const T&) { return nullptr; }
};
inline constexpr char kCodeInt[] = "i";
inline constexpr char kCodeFloat[] = "f";
inline constexpr char kCodeBool[] = "b";
inline constexpr char kCodeShape[] = "s";
inline constexpr char kCodeDType[] = "d";
inline constexpr char kCodeU64[] = "u64";
inline constexpr char kCodeEnum[] = "e";

template <>
struct Codec<int64_t> : ValueCodec<int64_t, kCodeInt> {
  static int64_t get(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
    return int_arg(info, i, op, name);
  }
};
template <>
struct Codec<double> : ValueCodec<double, kCodeFloat> {
  static double get(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
    return number_arg(info, i, op, name);
  }
};
template <>
struct Codec<bool> : ValueCodec<bool, kCodeBool> {
  static bool get(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
    return bool_arg(info, i, op, name);
  }
};
template <>
struct Codec<const Shape&> : ValueCodec<Shape, kCodeShape> {
  static Shape get(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
    return shape_arg(info, i, op, name);
  }
  static const Shape& pass(const Shape& v) { return v; }
};
template <>
struct Codec<DType> : ValueCodec<DType, kCodeDType> {
  static DType get(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
    return dtype_arg(info, i, op, name);
  }
};
// Seeds and offsets: BigInts in [0, 2^64).
template <>
struct Codec<uint64_t> : ValueCodec<uint64_t, kCodeU64> {
  static uint64_t get(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
    return u64_arg(info, i, op, name);
  }
};
// Op-code enums (with a kCount member): an integer in [0, kCount).
template <typename E>
struct Codec<E, std::enable_if_t<std::is_enum_v<E> && !std::is_same_v<E, DType>>> : ValueCodec<E, kCodeEnum> {
  static E get(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
    const int64_t code = int_arg(info, i, op, name);
    KILN_CHECK(code >= 0 && code < int64_t(E::kCount), Value, op, "argument '", name, "': unknown code ", code);
    return E(code);
  }
};

// Calls f on every tensor an argument holds: a list codec's tensors(), else its one tensor() (or null).
template <typename C, typename = void>
struct HasTensorList : std::false_type {};
template <typename C>
struct HasTensorList<C, std::void_t<decltype(C::tensors(std::declval<const typename C::Stored&>()))>> : std::true_type {};
template <typename C, typename F>
void each_tensor(const typename C::Stored& s, F& f) {
  if constexpr (HasTensorList<C>::value) {
    for (const Tensor* t : C::tensors(s)) f(t);
  } else {
    f(C::tensor(s));
  }
}

// Results: what a kernel returns, as JavaScript.
template <typename R>
struct Result;
template <>
struct Result<void> {
  static constexpr const char* code = "void";
};
template <>
struct Result<uint64_t> {
  static constexpr const char* code = "u64";
  static Napi::Value to_js(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }
};
template <>
struct Result<double> {
  static constexpr const char* code = "f";
  static Napi::Value to_js(Napi::Env env, double v) { return Napi::Number::New(env, v); }
};
template <>
struct Result<bool> {
  static constexpr const char* code = "b";
  static Napi::Value to_js(Napi::Env env, bool v) { return Napi::Boolean::New(env, v); }
};

// What kernels() reports for one entry.
// An entry's static data, reached through the N-API function's data pointer.
struct EntryData {
  const char* op;                // the name errors carry
  std::vector<std::string> args;  // one name per argument
};

// What kernels() reports for one entry, and the entry's data (one per process, shared by every
// environment: worker threads register the same entries).
struct KernelInfo {
  std::string name;       // the exported function, e.g. "layerNormForward"
  std::string signature;  // "(x:T, weight:T?, ...) -> void"
  DTypeSet cpu, cuda;     // the dtypes each backend's implementation takes
  std::unique_ptr<EntryData> data;
};
using SignatureFn = std::string (*)(const std::vector<std::string>& names);
// Finds or records the entry `name` (under a lock: environments initialize on their own threads);
// checks arg_names has one name per argument. Returns the entry's data.
const EntryData* register_entry(const char* name, const char* op, const char* arg_names, size_t arity,
                                SignatureFn signature, DTypeSet cpu_dtypes, DTypeSet cuda_dtypes);

// Splits "x weight bias" into names.
std::vector<std::string> split_names(const char* names);

template <typename Sig>
struct Kernel;

template <typename R, typename... A>
struct Kernel<R(A...)> {
  using Fn = R (*)(A...);
  static constexpr size_t arity = sizeof...(A);

  static std::string signature(const std::vector<std::string>& names) {
    const char* codes[] = {Codec<A>::code..., ""};
    std::string s = "(";
    for (size_t i = 0; i < sizeof...(A); i++) s += str_cat(i ? ", " : "", names[i], ":", codes[i]);
    return s + ") -> " + Result<R>::code;
  }

  template <Fn Cpu, Fn Cuda>
  static Napi::Value call(const Napi::CallbackInfo& info) {
    try {
      const auto* e = static_cast<const EntryData*>(info.Data());
      return invoke<Cpu, Cuda>(info, *e, std::index_sequence_for<A...>{});
    } catch (const Napi::Error&) {
      throw;
    } catch (...) {
      rethrow_as_js(info.Env());
    }
  }

 private:
  template <Fn Cpu, Fn Cuda, size_t... I>
  static Napi::Value invoke(const Napi::CallbackInfo& info, const EntryData& e, std::index_sequence<I...>) {
    KILN_CHECK(info.Length() == sizeof...(A), Value, e.op, "expects ", sizeof...(A), " arguments, got ",
               info.Length());
    // Braced initialization evaluates the conversions left to right.
    std::tuple<typename Codec<A>::Stored...> args{Codec<A>::get(info, I, e.op, e.args[I].c_str())...};
    const Tensor* first = nullptr;
    auto see = [&](const Tensor* t) {
      if (!t) return;
      if (!first) first = t;
      else check_same_device(e.op, {first, t});
    };
    (each_tensor<Codec<A>>(std::get<I>(args), see), ...);
    KILN_CHECK(first, Internal, e.op, "kernel has no tensor argument to choose a device by");
    Fn f = Cpu;
    if (!first->device().is_cpu()) {
#ifdef KILN_CUDA
      KILN_CHECK(Cuda != nullptr, Device, e.op, "runs on CPU tensors only");
#else
      KILN_CHECK(Cuda != nullptr, Device, e.op, "kiln was built without CUDA");
#endif
      f = Cuda;
    }
    if constexpr (std::is_void_v<R>) {
      f(Codec<A>::pass(std::get<I>(args))...);
      return info.Env().Undefined();
    } else {
      return Result<R>::to_js(info.Env(), f(Codec<A>::pass(std::get<I>(args))...));
    }
  }
};

// Exports one kernel as exports[name] and records it for kernels().
template <typename Sig, typename Kernel<Sig>::Fn Cpu, typename Kernel<Sig>::Fn Cuda>
void export_kernel(Napi::Env env, Napi::Object exports, const char* name, const char* op, const char* arg_names,
                   DTypeSet cpu_dtypes, DTypeSet cuda_dtypes) {
  const EntryData* data =
      register_entry(name, op, arg_names, Kernel<Sig>::arity, &Kernel<Sig>::signature, cpu_dtypes, cuda_dtypes);
  exports.Set(name, Napi::Function::New(env, Kernel<Sig>::template call<Cpu, Cuda>, name,
                                        const_cast<EntryData*>(data)));
}

// Exports an op-code enum (with a kCount member) as exports[name] = { [opName]: code }, for lib/'s
// dispatch.ts opCodes; the kernels take the codes as 'e' arguments.
template <typename E>
void export_enum(Napi::Env env, Napi::Object exports, const char* name, const char* (*names)(E)) {
  auto o = Napi::Object::New(env);
  for (int32_t i = 0; i < int32_t(E::kCount); i++) o.Set(names(E(i)), Napi::Number::New(env, i));
  exports.Set(name, o);
}

}  // namespace kiln::binding

// KILN_KERNEL(env, exports, "layerNormForward", "layerNorm", ops::LayerNormForward, layer_norm_forward,
//             "x weight bias normDims eps y mean rstd", cpu_dtypes, cuda_dtypes)
// exports cpu::FN and (in a CUDA build) cuda::FN, both declared with the signature type SIG.
#ifdef KILN_CUDA
#define KILN_KERNEL(env, exports, NAME, OP, SIG, FN, ARGS, CPU_DTYPES, CUDA_DTYPES)                    \
  ::kiln::binding::export_kernel<SIG, &::kiln::cpu::FN, &::kiln::cuda::FN>(env, exports, NAME, OP, ARGS, \
                                                                          CPU_DTYPES, CUDA_DTYPES)
#else
#define KILN_KERNEL(env, exports, NAME, OP, SIG, FN, ARGS, CPU_DTYPES, CUDA_DTYPES) \
  ::kiln::binding::export_kernel<SIG, &::kiln::cpu::FN, nullptr>(env, exports, NAME, OP, ARGS, CPU_DTYPES, {})
#endif
// KILN_CPU_KERNEL(env, exports, NAME, OP, SIG, FN, ARGS, CPU_DTYPES): an entry with no CUDA twin (a
// CPU test or benchmark entry); it reports no CUDA dtypes and refuses CUDA tensors.
#define KILN_CPU_KERNEL(env, exports, NAME, OP, SIG, FN, ARGS, CPU_DTYPES) \
  ::kiln::binding::export_kernel<SIG, &::kiln::cpu::FN, nullptr>(env, exports, NAME, OP, ARGS, CPU_DTYPES, {})
