// The kernel registry behind op_table.h and exports.kernels(): each entry's signature and the dtypes
// each backend takes, read by lib/ops/dispatch.ts at load.
#include "op_table.h"
#include <mutex>
#include <sstream>

namespace kiln::binding {

namespace {
std::mutex registry_mutex;
std::vector<KernelInfo>& kernel_registry() {
  static std::vector<KernelInfo> registry;
  return registry;
}
}  // namespace

const EntryData* register_entry(const char* name, const char* op, const char* arg_names, size_t arity,
                                SignatureFn signature, DTypeSet cpu_dtypes, DTypeSet cuda_dtypes) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto& reg = kernel_registry();
  for (const KernelInfo& k : reg)
    if (k.name == name) return k.data.get();
  auto data = std::make_unique<EntryData>(EntryData{op, split_names(arg_names)});
  KILN_CHECK(data->args.size() == arity, Internal, op, "kernel '", name, "' has ", arity, " arguments but ",
             data->args.size(), " names");
  std::string sig = signature(data->args);
  reg.push_back({name, std::move(sig), cpu_dtypes, cuda_dtypes, std::move(data)});
  return reg.back().data.get();
}

std::vector<std::string> split_names(const char* names) {
  std::vector<std::string> out;
  std::istringstream in(names);
  for (std::string n; in >> n;) out.push_back(n);
  return out;
}

static Napi::Array dtype_names(Napi::Env env, DTypeSet set) {
  auto a = Napi::Array::New(env);
  uint32_t n = 0;
  for (int32_t t = 0; t < kNumDTypes; t++)
    if (set.has(DType(t))) a.Set(n++, Napi::String::New(env, dtype_name(DType(t))));
  return a;
}

// kernels() -> { [name]: { signature, cpu: dtype[], cuda: dtype[] } }
static Napi::Value kernels(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto out = Napi::Object::New(env);
  std::lock_guard<std::mutex> lock(registry_mutex);
  for (const KernelInfo& k : kernel_registry()) {
    auto o = Napi::Object::New(env);
    o.Set("signature", Napi::String::New(env, k.signature));
    o.Set("cpu", dtype_names(env, k.cpu));
    o.Set("cuda", dtype_names(env, k.cuda));
    out.Set(k.name, o);
  }
  return out;
}

void register_kernel_registry(Napi::Env env, Napi::Object exports) { KILN_EXPORT(env, exports, "kernels", kernels); }

}  // namespace kiln::binding
