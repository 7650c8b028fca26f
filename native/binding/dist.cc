// kiln's TCPStore for JavaScript (lib/ops/dist_runtime.ts types these): the server and the client
// cross as type-tagged N-API externals whose finalizers stop the server thread / close the
// sockets. Calls that wait (connect with retries, get, wait) run on a libuv worker and return a
// Promise so the event loop keeps turning; set/add/check/deleteKey/numKeys answer at once from a
// live server and are synchronous, as in torch. A pending get/wait holds one libuv pool thread
// (UV_THREADPOOL_SIZE, 4 by default) until it is answered or times out.
#include <functional>
#include <memory>

#include "../dist/store.h"
#include "common.h"

namespace kiln::binding {

static const napi_type_tag kServerTag = {0x6b696c6e73746f72ull, 0x6573657276657201ull};
static const napi_type_tag kClientTag = {0x6b696c6e73746f72ull, 0x65636c69656e7401ull};

using ClientRef = std::shared_ptr<dist::StoreClient>;

static std::string string_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  KILN_CHECK(info.Length() > i && info[i].IsString(), Value, op, name, " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

static std::vector<std::string> strings_arg(const Napi::CallbackInfo& info, size_t i, const char* op,
                                            const char* name) {
  KILN_CHECK(info.Length() > i && info[i].IsArray(), Value, op, name, " must be an array of strings");
  auto a = info[i].As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Value v = a.Get(k);
    KILN_CHECK(v.IsString(), Value, op, name, "[", k, "] must be a string");
    out.push_back(v.As<Napi::String>().Utf8Value());
  }
  return out;
}

static dist::StoreServer* server_arg(const Napi::CallbackInfo& info, const char* op) {
  return external_arg<dist::StoreServer>(info, 0, op, "TCPStore server", &kServerTag);
}

static ClientRef client_arg(const Napi::CallbackInfo& info, const char* op) {
  return *external_arg<ClientRef>(info, 0, op, "TCPStore client", &kClientTag);
}

// Runs fn on a libuv worker; the promise resolves with to_js(result) or rejects with kiln's error.
template <typename R>
class StoreWork : public Napi::AsyncWorker {
 public:
  using Fn = std::function<R()>;
  using ToJs = std::function<Napi::Value(Napi::Env, R&)>;
  StoreWork(Napi::Env env, Fn fn, ToJs to_js)
      : Napi::AsyncWorker(env, "kiln.TCPStore"), deferred_(Napi::Promise::Deferred::New(env)), fn_(std::move(fn)),
        to_js_(std::move(to_js)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      result_ = fn_();
    } catch (const Error& e) {
      failed_ = true;
      code_ = e.code();
      op_ = e.op();
      msg_ = e.detail();
    } catch (const std::exception& e) {
      failed_ = true;
      msg_ = e.what();
    } catch (...) {
      failed_ = true;
      msg_ = "unknown native exception";
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (failed_) {
      deferred_.Reject(make_js_error(env, code_, op_, msg_));
      return;
    }
    try {
      deferred_.Resolve(to_js_(env, result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  Fn fn_;
  ToJs to_js_;
  R result_{};
  bool failed_ = false;
  ErrorCode code_ = ErrorCode::Internal;
  std::string op_, msg_;
};

template <typename R>
static Napi::Value run_async(Napi::Env env, std::function<R()> fn, typename StoreWork<R>::ToJs to_js) {
  auto* w = new StoreWork<R>(env, std::move(fn), std::move(to_js));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// storeServerStart(host, port) -> server (listening, its thread running).
static Napi::Value server_start(const Napi::CallbackInfo& info) {
  const char* op = "TCPStore.listen";
  std::string host = string_arg(info, 0, op, "host");
  int64_t port = int_arg(info, 1, op, "port");
  KILN_CHECK(port >= 0 && port <= 65535, Value, op, "port ", port, " is out of range");
  auto s = std::make_unique<dist::StoreServer>(host, int(port));
  auto e = Napi::External<dist::StoreServer>::New(info.Env(), s.get(),
                                                   [](Napi::Env, dist::StoreServer* p) { delete p; });
  s.release();
  e.TypeTag(&kServerTag);
  return e;
}

static Napi::Value server_port(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), server_arg(info, "TCPStore.port")->port());
}

static Napi::Value server_stop(const Napi::CallbackInfo& info) {
  server_arg(info, "TCPStore.close")->stop();
  return info.Env().Undefined();
}

// storeConnect(host, port, timeoutMs) -> Promise<client>, retrying until timeoutMs.
static Napi::Value client_connect(const Napi::CallbackInfo& info) {
  const char* op = "TCPStore.connect";
  std::string host = string_arg(info, 0, op, "host");
  int64_t port = int_arg(info, 1, op, "port");
  int64_t timeout = int_arg(info, 2, op, "timeoutMs");
  KILN_CHECK(port > 0 && port <= 65535, Value, op, "port ", port, " is out of range");
  KILN_CHECK(timeout > 0, Value, op, "timeoutMs ", timeout, " is not positive");
  return run_async<ClientRef>(
      info.Env(), [=] { return std::make_shared<dist::StoreClient>(host, int(port), timeout); },
      [](Napi::Env env, ClientRef& c) -> Napi::Value {
        auto* holder = new ClientRef(c);
        auto e = Napi::External<ClientRef>::New(env, holder, [](Napi::Env, ClientRef* p) { delete p; });
        e.TypeTag(&kClientTag);
        return e;
      });
}

static Napi::Value client_close(const Napi::CallbackInfo& info) {
  client_arg(info, "TCPStore.close")->close();
  return info.Env().Undefined();
}

// storeSet(client, key, bytes).
static Napi::Value store_set(const Napi::CallbackInfo& info) {
  const char* op = "TCPStore.set";
  ClientRef c = client_arg(info, op);
  std::string key = string_arg(info, 1, op, "key");
  KILN_CHECK(info.Length() > 2 && info[2].IsTypedArray() &&
                 info[2].As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array,
             Value, op, "value must be a Uint8Array");
  auto a = info[2].As<Napi::Uint8Array>();
  c->set(key, std::string(reinterpret_cast<const char*>(a.Data()), a.ByteLength()));
  return info.Env().Undefined();
}

// storeGet(client, key, timeoutMs) -> Promise<Uint8Array>.
static Napi::Value store_get(const Napi::CallbackInfo& info) {
  const char* op = "TCPStore.get";
  ClientRef c = client_arg(info, op);
  std::string key = string_arg(info, 1, op, "key");
  int64_t timeout = int_arg(info, 2, op, "timeoutMs");
  return run_async<std::string>(
      info.Env(), [=] { return c->get(key, timeout); },
      [](Napi::Env env, std::string& v) -> Napi::Value { return Napi::Buffer<char>::Copy(env, v.data(), v.size()); });
}

// storeAdd(client, key, delta) -> the new value.
static Napi::Value store_add(const Napi::CallbackInfo& info) {
  const char* op = "TCPStore.add";
  ClientRef c = client_arg(info, op);
  std::string key = string_arg(info, 1, op, "key");
  int64_t delta = int_arg(info, 2, op, "delta");
  return Napi::Number::New(info.Env(), double(c->add(key, delta)));
}

static Napi::Value store_check(const Napi::CallbackInfo& info) {
  const char* op = "TCPStore.check";
  ClientRef c = client_arg(info, op);
  return Napi::Boolean::New(info.Env(), c->check(strings_arg(info, 1, op, "keys")));
}

// storeWait(client, keys, timeoutMs) -> Promise<void>.
static Napi::Value store_wait(const Napi::CallbackInfo& info) {
  const char* op = "TCPStore.wait";
  ClientRef c = client_arg(info, op);
  std::vector<std::string> keys = strings_arg(info, 1, op, "keys");
  int64_t timeout = int_arg(info, 2, op, "timeoutMs");
  return run_async<bool>(
      info.Env(), [=] { c->wait(keys, timeout); return true; },
      [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
}

static Napi::Value store_delete(const Napi::CallbackInfo& info) {
  const char* op = "TCPStore.deleteKey";
  ClientRef c = client_arg(info, op);
  return Napi::Boolean::New(info.Env(), c->del(string_arg(info, 1, op, "key")));
}

static Napi::Value store_num_keys(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(client_arg(info, "TCPStore.numKeys")->num_keys()));
}

void register_dist(Napi::Env env, Napi::Object exports) {
  KILN_EXPORT(env, exports, "storeServerStart", server_start);
  KILN_EXPORT(env, exports, "storeServerPort", server_port);
  KILN_EXPORT(env, exports, "storeServerStop", server_stop);
  KILN_EXPORT(env, exports, "storeConnect", client_connect);
  KILN_EXPORT(env, exports, "storeClientClose", client_close);
  KILN_EXPORT(env, exports, "storeSet", store_set);
  KILN_EXPORT(env, exports, "storeGet", store_get);
  KILN_EXPORT(env, exports, "storeAdd", store_add);
  KILN_EXPORT(env, exports, "storeCheck", store_check);
  KILN_EXPORT(env, exports, "storeWait", store_wait);
  KILN_EXPORT(env, exports, "storeDeleteKey", store_delete);
  KILN_EXPORT(env, exports, "storeNumKeys", store_num_keys);
}

}  // namespace kiln::binding
