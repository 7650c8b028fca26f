// kiln's TCPStore and process groups for JavaScript (lib/ops/dist_runtime.ts types these). The store
// server, store clients, groups and works cross as type-tagged N-API externals whose finalizers stop
// the server thread / close the sockets / shut the group down. Calls that wait (connect with retries, get, wait) run on a libuv worker and return a
// Promise so the event loop keeps turning; set/add/check/deleteKey/numKeys answer at once from a
// live server and are synchronous, as in torch. A pending get/wait holds one libuv pool thread
// (UV_THREADPOOL_SIZE, 4 by default) until it is answered or times out.
#include <functional>
#include <memory>

#include "../dist/process_group.h"
#include "../dist/store.h"
#include "common.h"

namespace kiln::binding {

static const napi_type_tag kServerTag = {0x6b696c6e73746f72ull, 0x6573657276657201ull};
static const napi_type_tag kClientTag = {0x6b696c6e73746f72ull, 0x65636c69656e7401ull};

static const napi_type_tag kGroupTag = {0x6b696c6e67726f75ull, 0x7070726f63657301ull};
static const napi_type_tag kWorkTag = {0x6b696c6e776f726bull, 0x636f6c6c65637401ull};

using ClientRef = std::shared_ptr<dist::StoreClient>;

// A type-tagged external holding a shared_ptr (a store client, a group, a work): the object goes
// with its last holder (a group shuts itself down in its destructor).
template <typename T>
static Napi::Value wrap_shared(Napi::Env env, std::shared_ptr<T> p, const napi_type_tag* tag) {
  auto e = Napi::External<std::shared_ptr<T>>::New(env, new std::shared_ptr<T>(std::move(p)),
                                                   [](Napi::Env, std::shared_ptr<T>* h) { delete h; });
  e.TypeTag(tag);
  return e;
}

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
      [](Napi::Env env, ClientRef& c) { return wrap_shared(env, c, &kClientTag); });
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

// ---- process groups ----

static dist::GroupPtr group_arg(const Napi::CallbackInfo& info, const char* op) {
  return *external_arg<dist::GroupPtr>(info, 0, op, "process group", &kGroupTag);
}

static Napi::Value wrap_work(Napi::Env env, dist::WorkPtr w) {
  return wrap_shared(env, std::move(w), &kWorkTag);
}

static dist::ReduceOp reduce_op_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t r = int_arg(info, i, op, "reduce op");
  KILN_CHECK(r >= 0 && r <= int64_t(dist::ReduceOp::Min), Value, op, "unknown reduce op code ", r);
  return dist::ReduceOp(r);
}

static int rank_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  int64_t r = int_arg(info, i, op, name);
  KILN_CHECK(r >= 0 && r < (int64_t(1) << 31), Value, op, name, " ", r, " is not a rank");
  return int(r);
}

// distBackends() -> { gloo, nccl }: what this build has.
static Napi::Value dist_backends(const Napi::CallbackInfo& info) {
  auto o = Napi::Object::New(info.Env());
  o.Set("gloo", dist::gloo_available());
  o.Set("nccl", dist::nccl_available());
  return o;
}

// pgCreate(backend, client, prefix, rank, size, timeoutMs, hostname, iface, device) -> Promise<group>;
// the rendezvous waits for every rank, so it runs on a libuv worker.
static Napi::Value pg_create(const Napi::CallbackInfo& info) {
  const char* op = "initProcessGroup";
  std::string backend = string_arg(info, 0, op, "backend");
  KILN_CHECK(backend == "gloo" || backend == "nccl", Value, op, "backend must be 'gloo' or 'nccl', got '", backend, "'");
  ClientRef c = *external_arg<ClientRef>(info, 1, op, "TCPStore client", &kClientTag);
  std::string prefix = string_arg(info, 2, op, "prefix");
  int rank = rank_arg(info, 3, op, "rank");
  int size = rank_arg(info, 4, op, "size");
  int64_t timeout = int_arg(info, 5, op, "timeoutMs");
  std::string hostname = string_arg(info, 6, op, "hostname");
  std::string iface = string_arg(info, 7, op, "iface");
  int64_t device = int_arg(info, 8, op, "device");
  KILN_CHECK(size >= 1 && rank < size, Value, op, "rank ", rank, " is not in [0, ", size, ")");
  KILN_CHECK(timeout > 0, Value, op, "timeoutMs ", timeout, " is not positive");
  return run_async<dist::GroupPtr>(
      info.Env(),
      [=]() -> dist::GroupPtr {
        if (backend == "gloo") return dist::make_gloo_group(c, prefix, rank, size, timeout, hostname, iface);
        return dist::make_nccl_group(c, prefix, rank, size, timeout, int(device));
      },
      [](Napi::Env env, dist::GroupPtr& g) { return wrap_shared(env, g, &kGroupTag); });
}

static Napi::Value pg_shutdown(const Napi::CallbackInfo& info) {
  group_arg(info, "destroyProcessGroup")->shutdown();
  return info.Env().Undefined();
}

// pgAllReduce(group, tensor, op) -> work.
static Napi::Value pg_all_reduce(const Napi::CallbackInfo& info) {
  const char* op = "allReduce";
  auto g = group_arg(info, op);
  return wrap_work(info.Env(), g->all_reduce(tensor_arg(info, 1, op, "tensor"), reduce_op_arg(info, 2, op)));
}

// pgBroadcast(group, tensor, src) -> work.
static Napi::Value pg_broadcast(const Napi::CallbackInfo& info) {
  const char* op = "broadcast";
  auto g = group_arg(info, op);
  return wrap_work(info.Env(), g->broadcast(tensor_arg(info, 1, op, "tensor"), rank_arg(info, 2, op, "src")));
}

// pgAllGather(group, output, input) -> work.
static Napi::Value pg_all_gather(const Napi::CallbackInfo& info) {
  const char* op = "allGather";
  auto g = group_arg(info, op);
  return wrap_work(info.Env(), g->all_gather(tensor_arg(info, 1, op, "output"), tensor_arg(info, 2, op, "input")));
}

// pgReduceScatter(group, output, input, op) -> work.
static Napi::Value pg_reduce_scatter(const Napi::CallbackInfo& info) {
  const char* op = "reduceScatter";
  auto g = group_arg(info, op);
  return wrap_work(info.Env(), g->reduce_scatter(tensor_arg(info, 1, op, "output"), tensor_arg(info, 2, op, "input"),
                                                 reduce_op_arg(info, 3, op)));
}

static Napi::Value pg_barrier(const Napi::CallbackInfo& info) {
  return wrap_work(info.Env(), group_arg(info, "barrier")->barrier());
}

// pgSend(group, tensor, dst, tag) / pgRecv(group, tensor, src, tag) -> work.
template <bool Sending>
static Napi::Value pg_point_to_point(const Napi::CallbackInfo& info) {
  const char* op = Sending ? "send" : "recv";
  auto g = group_arg(info, op);
  int64_t tag = int_arg(info, 3, op, "tag");
  KILN_CHECK(tag >= 0 && tag <= 0xffffffffll, Value, op, "tag ", tag, " is not in [0, 2^32)");
  Tensor& t = tensor_arg(info, 1, op, "tensor");
  int peer = rank_arg(info, 2, op, Sending ? "dst" : "src");
  return wrap_work(info.Env(), Sending ? g->send(t, peer, uint32_t(tag)) : g->recv(t, peer, uint32_t(tag)));
}

static dist::WorkPtr work_arg(const Napi::CallbackInfo& info, const char* op) {
  return *external_arg<dist::WorkPtr>(info, 0, op, "collective work", &kWorkTag);
}

static Napi::Value pg_work_done(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), work_arg(info, "Work.isCompleted")->completed());
}

// Resolves or rejects d with w's outcome (on the JavaScript thread; a device op's stream wait here).
static void settle(Napi::Env env, Napi::Promise::Deferred& d, const dist::WorkPtr& w) {
  std::string err = w->error();
  if (err.empty()) {
    try {
      w->wait_stream();
    } catch (const Error& e) {
      d.Reject(make_js_error(env, e.code(), w->op(), e.detail()));
      return;
    }
    d.Resolve(env.Undefined());
  } else {
    d.Reject(make_js_error(env, ErrorCode::Dist, w->op(), err));
  }
}

// pgWorkWait(work) -> Promise<void>, settled on the JavaScript thread when the op has finished (a
// thread-safe function carries the completion over from the group's thread; while it is pending the
// event loop stays alive).
static Napi::Value pg_work_wait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  dist::WorkPtr w = work_arg(info, "Work.wait");
  auto deferred = Napi::Promise::Deferred::New(env);
  Napi::Promise p = deferred.Promise();
  if (w->completed()) {
    settle(env, deferred, w);
    return p;
  }
  using Deferred = Napi::Promise::Deferred;
  auto tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                            "kiln.dist.work", 0, 1);
  auto* held = new Deferred(deferred);
  w->on_complete([tsfn, held, w]() mutable {
    tsfn.BlockingCall(held, [w](Napi::Env env, Napi::Function, Deferred* d) {
      settle(env, *d, w);
      delete d;
    });
    tsfn.Release();
  });
  return p;
}

// pgWorkWaitSync(work): blocks the JavaScript thread until the op has finished, then (device ops)
// makes the current stream wait for it; throws its DistError. For the collectives inside autograd
// (tensor parallelism), where a rule cannot await. Safe because no op needs this thread to finish:
// Gloo runs collectives on the group's thread (its signature exchange was posted when the op was
// issued), and an NCCL Work is finished as soon as it is enqueued.
static Napi::Value pg_work_wait_sync(const Napi::CallbackInfo& info) {
  dist::WorkPtr w = work_arg(info, "Work.waitSync");
  w->wait_host();
  w->wait_stream();
  return info.Env().Undefined();
}

void register_dist(Napi::Env env, Napi::Object exports) {
  KILN_EXPORT(env, exports, "distBackends", dist_backends);
  KILN_EXPORT(env, exports, "pgCreate", pg_create);
  KILN_EXPORT(env, exports, "pgShutdown", pg_shutdown);
  KILN_EXPORT(env, exports, "pgAllReduce", pg_all_reduce);
  KILN_EXPORT(env, exports, "pgBroadcast", pg_broadcast);
  KILN_EXPORT(env, exports, "pgAllGather", pg_all_gather);
  KILN_EXPORT(env, exports, "pgReduceScatter", pg_reduce_scatter);
  KILN_EXPORT(env, exports, "pgBarrier", pg_barrier);
  KILN_EXPORT(env, exports, "pgSend", pg_point_to_point<true>);
  KILN_EXPORT(env, exports, "pgRecv", pg_point_to_point<false>);
  KILN_EXPORT(env, exports, "pgWorkDone", pg_work_done);
  KILN_EXPORT(env, exports, "pgWorkWait", pg_work_wait);
  KILN_EXPORT(env, exports, "pgWorkWaitSync", pg_work_wait_sync);
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
