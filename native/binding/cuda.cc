// kiln.cuda: device count and names, synchronize, allocator stats and cache control, TF32, the
// host-synchronization counter, streams, events, recordStream, CUDA graphs and kernel profiling
// marks. Without a CUDA build the device count is 0 and the rest are absent (lib/cuda.ts throws
// DeviceError).
#include "common.h"
#ifdef KILN_CUDA
#include <memory>
#include <utility>
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
  o.Set("pending", Napi::Number::New(env, double(s.pending)));
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

// Streams and events cross to JavaScript as N-API externals whose finalizers release them. Tensors
// use a numbered handle table instead (common.cc) because finalizers run only when the event loop
// turns, and a synchronous loop making thousands of tensors a step held them all until then; a
// program makes a handful of streams and events, and a finalizer ties their lifetime to the
// JavaScript object with no table and no dispose() to forget. Type tags keep an event (or any
// other external) from passing for a stream.
static const napi_type_tag kStreamTag = {0x6b696c6e73747265ull, 0x616d000000000001ull};
static const napi_type_tag kEventTag = {0x6b696c6e6576656eull, 0x7400000000000001ull};

static cuda::Stream* stream_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  return external_arg<cuda::Stream>(info, i, op, "kiln.cuda.Stream", &kStreamTag);
}

static cuda::Event* event_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  return external_arg<cuda::Event>(info, i, op, "kiln.cuda.Event", &kEventTag);
}

static Napi::Value wrap_stream(Napi::Env env, cuda::Stream* s) {
  auto e = Napi::External<cuda::Stream>::New(env, s, [](Napi::Env, cuda::Stream* p) { cuda::release_stream(p); });
  e.TypeTag(&kStreamTag);
  return e;
}

// cudaStreamCreate(device, priority) -> a new stream.
static Napi::Value stream_create(const Napi::CallbackInfo& info) {
  const Device d = cuda_device_arg(info, 0, "Stream");
  const int64_t priority = int_arg(info, 1, "Stream", "priority");
  KILN_CHECK(priority >= INT32_MIN && priority <= INT32_MAX, Value, "Stream", "priority ", priority, " is out of range");
  cuda::Stream* s = cuda::create_stream(d, int(priority));
  try {
    return wrap_stream(info.Env(), s);
  } catch (...) {
    cuda::release_stream(s);
    throw;
  }
}

static Napi::Value default_stream(const Napi::CallbackInfo& info) {
  return wrap_stream(info.Env(), cuda::default_stream(cuda_device_arg(info, 0, "defaultStream")));
}

static Napi::Value set_current_stream(const Napi::CallbackInfo& info) {
  cuda::set_current_stream(stream_arg(info, 0, "withStream"));
  return info.Env().Undefined();
}

static Napi::Value stream_query(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), cuda::query(stream_arg(info, 0, "Stream.query")));
}

static Napi::Value stream_synchronize(const Napi::CallbackInfo& info) {
  cuda::synchronize(stream_arg(info, 0, "Stream.synchronize"));
  return info.Env().Undefined();
}

static Napi::Value stream_wait_event(const Napi::CallbackInfo& info) {
  cuda::wait(stream_arg(info, 0, "Stream.waitEvent"), event_arg(info, 1, "Stream.waitEvent"));
  return info.Env().Undefined();
}

static Napi::Value stream_wait_stream(const Napi::CallbackInfo& info) {
  cuda::wait_stream(stream_arg(info, 0, "Stream.waitStream"), stream_arg(info, 1, "Stream.waitStream"));
  return info.Env().Undefined();
}

// cudaEventCreate(enableTiming) -> a new event (its CUDA event is made on first record).
static Napi::Value event_create(const Napi::CallbackInfo& info) {
  cuda::Event* ev = cuda::create_event(bool_arg(info, 0, "Event", "enableTiming"));
  try {
    auto e = Napi::External<cuda::Event>::New(info.Env(), ev, [](Napi::Env, cuda::Event* p) { cuda::destroy_event(p); });
    e.TypeTag(&kEventTag);
    return e;
  } catch (...) {
    cuda::destroy_event(ev);
    throw;
  }
}

static Napi::Value event_record(const Napi::CallbackInfo& info) {
  cuda::record(event_arg(info, 0, "Event.record"), stream_arg(info, 1, "Event.record"));
  return info.Env().Undefined();
}

static Napi::Value event_query(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), cuda::query(event_arg(info, 0, "Event.query")));
}

static Napi::Value event_synchronize(const Napi::CallbackInfo& info) {
  cuda::synchronize(event_arg(info, 0, "Event.synchronize"));
  return info.Env().Undefined();
}

static Napi::Value event_elapsed_time(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cuda::elapsed_ms(event_arg(info, 0, "Event.elapsedTime"),
                                                        event_arg(info, 1, "Event.elapsedTime")));
}

// cudaRecordStream(tensor, stream): see cuda::record_stream.
static Napi::Value record_stream(const Napi::CallbackInfo& info) {
  const Tensor& t = tensor_arg(info, 0, "recordStream", "tensor");
  cuda::record_stream(*t.storage, stream_arg(info, 1, "recordStream"));
  return info.Env().Undefined();
}

// A graph crosses as an external too; dispose() destroys it before its finalizer would (which then
// finds nothing left), so the holder, not the graph, is what the external owns.
static const napi_type_tag kGraphTag = {0x6b696c6e67726170ull, 0x6800000000000001ull};
struct GraphHolder {
  cuda::Graph* graph = nullptr;
};

static GraphHolder* graph_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  return external_arg<GraphHolder>(info, i, op, "kiln.cuda.CUDAGraph", &kGraphTag);
}

static cuda::Graph* live_graph(const Napi::CallbackInfo& info, const char* op) {
  GraphHolder* h = graph_arg(info, 0, op);
  KILN_CHECK(h->graph, Value, op, "the graph was disposed");
  return h->graph;
}

// cudaGraphCaptureBegin(stream) -> a graph capturing on that stream.
static Napi::Value graph_capture_begin(const Napi::CallbackInfo& info) {
  auto holder = std::make_unique<GraphHolder>();
  holder->graph = cuda::graph_capture_begin(stream_arg(info, 0, "CUDAGraph.capture"));
  auto e = Napi::External<GraphHolder>::New(info.Env(), holder.get(), [](Napi::Env, GraphHolder* h) {
    // A finalizer must not throw (it would end the process): a failure here leaks the graph instead.
    try {
      if (h->graph) cuda::graph_destroy(h->graph);
    } catch (...) {
    }
    delete h;
  });
  holder.release();
  e.TypeTag(&kGraphTag);
  return e;
}

static Napi::Value graph_capture_end(const Napi::CallbackInfo& info) {
  cuda::graph_capture_end(live_graph(info, "CUDAGraph.capture"));
  return info.Env().Undefined();
}

static Napi::Value graph_capture_abort(const Napi::CallbackInfo& info) {
  cuda::graph_capture_abort(live_graph(info, "CUDAGraph.capture"));
  return info.Env().Undefined();
}

static Napi::Value graph_replay(const Napi::CallbackInfo& info) {
  cuda::graph_replay(live_graph(info, "CUDAGraph.replay"));
  return info.Env().Undefined();
}

static Napi::Value graph_dispose(const Napi::CallbackInfo& info) {
  GraphHolder* h = graph_arg(info, 0, "CUDAGraph.dispose");
  if (h->graph) cuda::graph_destroy(std::exchange(h->graph, nullptr));
  return info.Env().Undefined();
}

static Napi::Value is_capturing(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), cuda::capturing());
}

static Napi::Value profile_mark(const Napi::CallbackInfo& info) {
  const int64_t tag = int_arg(info, 1, "profileKernels", "tag");
  KILN_CHECK(tag >= 0 && tag <= INT32_MAX, Value, "profileKernels", "tag ", tag, " is out of range");
  cuda::profile_mark(cuda_device_arg(info, 0, "profileKernels"), int32_t(tag));
  return info.Env().Undefined();
}

// -> Float64Array [tag0, ms0, tag1, ms1, ...] in mark order.
static Napi::Value profile_collect(const Napi::CallbackInfo& info) {
  const auto marks = cuda::profile_collect(cuda_device_arg(info, 0, "profileKernels"));
  auto out = Napi::Float64Array::New(info.Env(), marks.size() * 2);
  for (size_t i = 0; i < marks.size(); i++) {
    out[2 * i] = marks[i].first;
    out[2 * i + 1] = marks[i].second;
  }
  return out;
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
  KILN_EXPORT(env, exports, "cudaStreamCreate", stream_create);
  KILN_EXPORT(env, exports, "cudaDefaultStream", default_stream);
  KILN_EXPORT(env, exports, "cudaSetCurrentStream", set_current_stream);
  KILN_EXPORT(env, exports, "cudaStreamQuery", stream_query);
  KILN_EXPORT(env, exports, "cudaStreamSynchronize", stream_synchronize);
  KILN_EXPORT(env, exports, "cudaStreamWaitEvent", stream_wait_event);
  KILN_EXPORT(env, exports, "cudaStreamWaitStream", stream_wait_stream);
  KILN_EXPORT(env, exports, "cudaEventCreate", event_create);
  KILN_EXPORT(env, exports, "cudaEventRecord", event_record);
  KILN_EXPORT(env, exports, "cudaEventQuery", event_query);
  KILN_EXPORT(env, exports, "cudaEventSynchronize", event_synchronize);
  KILN_EXPORT(env, exports, "cudaEventElapsedTime", event_elapsed_time);
  KILN_EXPORT(env, exports, "cudaRecordStream", record_stream);
  KILN_EXPORT(env, exports, "cudaGraphCaptureBegin", graph_capture_begin);
  KILN_EXPORT(env, exports, "cudaGraphCaptureEnd", graph_capture_end);
  KILN_EXPORT(env, exports, "cudaGraphCaptureAbort", graph_capture_abort);
  KILN_EXPORT(env, exports, "cudaGraphReplay", graph_replay);
  KILN_EXPORT(env, exports, "cudaGraphDispose", graph_dispose);
  KILN_EXPORT(env, exports, "cudaIsCapturing", is_capturing);
  KILN_EXPORT(env, exports, "cudaProfileMark", profile_mark);
  KILN_EXPORT(env, exports, "cudaProfileCollect", profile_collect);
}
#else
static Napi::Value no_devices(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), 0); }

void register_cuda(Napi::Env env, Napi::Object exports) { KILN_EXPORT(env, exports, "cudaDeviceCount", no_devices); }
#endif

}  // namespace kiln::binding
