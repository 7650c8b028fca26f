// CUDA runtime: devices; streams (a default stream per device, streams made for JavaScript, this
// thread's current stream per device) and events; host synchronization counting; and the caching
// allocator (size classes, free lists per stream, no cudaMalloc/cudaFree on the hot path,
// free-the-cache-and-retry on out of memory).
//
// The allocator and several streams. A block is tagged with the stream current when it was
// allocated, and a freed block goes back to that stream's free list only: work on one stream runs
// in order, so a kernel enqueued there after the free cannot overtake one enqueued before it that
// still reads the block. Handing it to another stream would race (as in PyTorch, whose rule this
// is). A block also used on other streams (record_stream) is held back instead: the free records an
// event on each of them, and the block joins its stream's free list once all those events have
// completed (polled, never waited for, at the next allocation on the device). A stream whose last
// reference goes (release_stream) passes its cached blocks on to the device's default stream behind
// an event on it, the same way. None of this waits on the host, so sync_count counts only what the
// user asked for.
//
// CUDA graphs. A graph captures on its own stream, so its blocks live in that stream's cache, which
// only the graph's capture allocates from: the addresses baked into the graph are not handed to
// other work while the graph lives (PyTorch's private memory pool, by the same per-stream rule).
// A block of another stream freed during capture may have been used by a captured kernel that every
// replay runs again, so the graph holds it (off every free list) until it is destroyed. During
// capture the allocator polls no events and frees nothing to the driver (both are illegal then),
// and everything that would wait on the host is refused before CUDA invalidates the capture.
#include "runtime.h"
#include "device_errors.h"
#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace kiln::cuda {

// Streams are counted so that the CUDA stream outlives every use of its handle: a free records an
// event on the block's streams, which must still exist then.
class Stream {
 public:
  cudaStream_t handle = nullptr;
  Device device;
  int priority = 0;
  bool is_default = false;
  int64_t refs = 1;  // see runtime.h; guarded by g_mutex
  int graph_owners = 0;  // live graphs whose memory is this stream's cache (never returned to the driver)
  struct Block;
  std::unordered_map<size_t, std::vector<Block*>> free_blocks;  // size class -> cached blocks
};

class Graph {
 public:
  enum class State { Capturing, Ready, Failed };
  Device device;
  Stream* stream = nullptr;    // private: capture and replays run on it (a reference)
  Stream* previous = nullptr;  // this thread's current stream before capture (a reference while capturing)
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  std::vector<Stream::Block*> held;  // other streams' blocks freed during capture (see the header)
  State state = State::Capturing;
};

class Event {
 public:
  cudaEvent_t handle = nullptr;  // made on first record
  Device device;
  bool timing = false;
};

struct Stream::Block {
  void* ptr;
  size_t size;                // size class
  Stream* stream;             // allocated on (holds a reference while the block is live)
  std::vector<Stream*> uses;  // other streams from record_stream (each holds a reference)
};
using Block = Stream::Block;

namespace {
constexpr int kMaxDevices = 64;

// A freed block that becomes reusable on `target` once all its events have completed.
struct Pending {
  Block* block;
  std::vector<cudaEvent_t> events;
  Stream* target;  // holds a reference
};

struct DeviceState {
  std::atomic<Stream*> default_stream{nullptr};
  std::vector<Stream*> streams;              // every stream alive on the device, default included
  std::unordered_map<void*, Block*> live;    // blocks handed to storages
  std::vector<Pending> pending;
  std::vector<cudaEvent_t> spare_events;     // timing off, for the allocator's own use
  Graph* capture = nullptr;                  // the graph being captured on the device, if any
  AllocStats stats{};
};

std::mutex g_mutex;  // guards every DeviceState, Stream::refs and Stream::free_blocks
DeviceState g_devices[kMaxDevices];
thread_local int t_current = -1;
// This thread's current stream per device; null means the default stream. A slot holds a reference.
thread_local Stream* t_streams[kMaxDevices] = {};
// Graphs this thread is capturing (captures are thread-local: cudaStreamCaptureModeThreadLocal).
thread_local int t_captures = 0;
std::atomic<int64_t> g_syncs{0};
std::atomic<bool> g_tf32{false};

void check_index(int index, const char* op) {
  int n = device_count();
  KILN_CHECK(index >= 0 && index < n && index < kMaxDevices, Device, op, "cuda:", index, " does not exist (",
             n, " CUDA device", n == 1 ? "" : "s", " visible)");
}

// cudaErrorNotReady from a query is an answer, not a failure: cleared so that the next launch check
// does not see it.
bool completed(cudaError_t e, const char* op) {
  if (e == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  KILN_CUDA_CHECK(e, op);
  return true;
}

// The helpers below run with g_mutex held. Frees reach them from Storage's destructor, so the paths
// from device_free never throw: a CUDA failure there is answered by waiting instead.

void ref(Stream* s) { s->refs += s->is_default ? 0 : 1; }

// set_device without throwing (the event and stream calls below report a failure themselves).
void enter(Device d) {
  if (t_current != d.index && cudaSetDevice(d.index) == cudaSuccess) t_current = d.index;
}

// An event recorded on s now; null when recording failed, after waiting for s instead.
cudaEvent_t record_on(Stream* s) {
  DeviceState& ds = g_devices[s->device.index];
  enter(s->device);
  cudaEvent_t e = nullptr;
  if (!ds.spare_events.empty()) {
    e = ds.spare_events.back();
    ds.spare_events.pop_back();
  } else if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) {
    e = nullptr;
  }
  if (e && cudaEventRecord(e, s->handle) == cudaSuccess) return e;
  if (e) ds.spare_events.push_back(e);
  cudaGetLastError();
  cudaStreamSynchronize(s->handle);
  return nullptr;
}

// Holds block b back until the work enqueued so far on each stream in `on` is done, then hands it
// to target (whose reference the entry takes over).
void hold_back(Block* b, const std::vector<Stream*>& on, Stream* target) {
  DeviceState& ds = g_devices[target->device.index];
  Pending p{b, {}, target};
  for (Stream* s : on)
    if (cudaEvent_t e = record_on(s)) p.events.push_back(e);
  ds.pending.push_back(std::move(p));
  ds.stats.pending++;
}

// s's cached blocks move to the default stream behind an event (work enqueued on s may still read them).
void pass_cache_to_default(Stream* s) {
  Stream* to = g_devices[s->device.index].default_stream.load();
  for (auto& [size, blocks] : s->free_blocks)
    for (Block* b : blocks) hold_back(b, {s}, to);
  s->free_blocks.clear();
}

// The stream's last reference went: its cache goes to the default stream, and the CUDA stream is
// destroyed (CUDA lets enqueued work finish first).
void retire(Stream* s) {
  DeviceState& ds = g_devices[s->device.index];
  pass_cache_to_default(s);
  ds.streams.erase(std::find(ds.streams.begin(), ds.streams.end(), s));
  cudaStreamDestroy(s->handle);
  delete s;
}

void unref(Stream* s) {
  if (!s->is_default && --s->refs == 0) retire(s);
}

// Moves pending blocks whose events have all completed to their streams' free lists.
void collect_pending(DeviceState& ds) {
  for (size_t i = 0; i < ds.pending.size();) {
    Pending& p = ds.pending[i];
    while (!p.events.empty() && completed(cudaEventQuery(p.events.back()), "alloc")) {
      ds.spare_events.push_back(p.events.back());
      p.events.pop_back();
    }
    if (!p.events.empty()) {
      i++;
      continue;
    }
    Block* b = p.block;
    Stream* target = p.target;
    if (i + 1 != ds.pending.size()) p = std::move(ds.pending.back());
    ds.pending.pop_back();
    ds.stats.pending--;
    b->stream = target;
    target->free_blocks[b->size].push_back(b);
    unref(target);
  }
}

// Returns the device's cached and pending blocks to the driver (pending ones once their events
// completed; cudaFree itself waits for the device).
void release_cached(DeviceState& ds, int index) {
  set_device(Device{index});
  for (Pending& p : ds.pending) {
    for (cudaEvent_t e : p.events) {
      cudaEventSynchronize(e);
      ds.spare_events.push_back(e);
    }
    p.events.clear();
  }
  collect_pending(ds);
  for (Stream* s : ds.streams) {
    if (s->graph_owners) continue;  // a live graph's addresses: its replays write there
    for (auto& [size, blocks] : s->free_blocks) {
      for (Block* b : blocks) {
        cudaFree(b->ptr);
        ds.stats.reserved -= int64_t(size);
        ds.stats.frees++;
        delete b;
      }
    }
    s->free_blocks.clear();
  }
}

// cudaMalloc, also while this thread captures a graph: the thread-local capture mode forbids it as
// potentially unsafe (it would invalidate the capture), so the mode is relaxed around the call, as
// PyTorch's allocator does; the memory itself is not part of the graph.
cudaError_t malloc_maybe_capturing(void** p, size_t size) {
  if (t_captures == 0) return cudaMalloc(p, size);
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  cudaThreadExchangeStreamCaptureMode(&mode);
  const cudaError_t e = cudaMalloc(p, size);
  cudaThreadExchangeStreamCaptureMode(&mode);
  return e;
}

void* device_alloc(size_t n, Device d) {
  check_index(d.index, "alloc");
  size_t size = allocation_size_class(n);
  Stream* s = current_stream(d);
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceState& ds = g_devices[d.index];
  if (!ds.pending.empty() && !ds.capture) collect_pending(ds);
  Block* b = nullptr;
  auto it = s->free_blocks.find(size);
  if (it != s->free_blocks.end() && !it->second.empty()) {
    b = it->second.back();
    it->second.pop_back();
  } else {
    set_device(d);
    void* p = nullptr;
    cudaError_t e = malloc_maybe_capturing(&p, size);
    if (e == cudaErrorMemoryAllocation && !ds.capture) {
      cudaGetLastError();  // clear the (non-sticky) error, free the cache, retry once (not while capturing)
      release_cached(ds, d.index);
      set_device(d);
      e = cudaMalloc(&p, size);
      if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        ds.stats.ooms++;
        size_t free_b = 0, total_b = 0;
        if (!ds.capture) cudaMemGetInfo(&free_b, &total_b);
        throw Error(ErrorCode::OutOfMemory, "alloc",
                    str_cat("CUDA out of memory on cuda:", d.index, ": tried to allocate ", n, " bytes (", size,
                            " rounded); tensors hold ", ds.stats.allocated, " bytes, kiln has reserved ",
                            ds.stats.reserved, " bytes; the device has ", free_b, " of ", total_b, " bytes free",
                            ds.capture ? " (while capturing a CUDA graph, when the cache cannot be freed)" : ""));
      }
    }
    if (e != cudaSuccess) throw_cuda(e, "alloc", __FILE__, __LINE__);
    ds.stats.mallocs++;
    ds.stats.reserved += int64_t(size);
    b = new Block{p, size, s, {}};
  }
  b->stream = s;
  ref(s);
  ds.live.emplace(b->ptr, b);
  ds.stats.allocated += int64_t(size);
  if (ds.stats.allocated > ds.stats.peak_allocated) ds.stats.peak_allocated = ds.stats.allocated;
  return b->ptr;
}

void device_free(void* p, size_t, Device d) {
  if (!p || d.index < 0 || d.index >= kMaxDevices) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceState& ds = g_devices[d.index];
  auto it = ds.live.find(p);
  if (it == ds.live.end()) return;
  Block* b = it->second;
  ds.live.erase(it);
  ds.stats.allocated -= int64_t(b->size);
  if (ds.capture && (b->stream != ds.capture->stream || !b->uses.empty())) {
    ds.capture->held.push_back(b);  // keeps its stream references until the graph is destroyed
    return;
  }
  if (b->uses.empty()) {
    b->stream->free_blocks[b->size].push_back(b);
    unref(b->stream);
    return;
  }
  std::vector<Stream*> uses = std::move(b->uses);
  b->uses.clear();
  hold_back(b, uses, b->stream);
  for (Stream* u : uses) unref(u);
}
}  // namespace

void throw_cuda(cudaError_t e, const char* op, const char* file, int line) {
  throw Error(e == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::Cuda, op,
              str_cat(cudaGetErrorName(e), ": ", cudaGetErrorString(e), " (", file, ":", line, ")"));
}

int device_count() {
  static int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}

const char* device_name(int index) {
  static thread_local cudaDeviceProp prop;
  check_index(index, "deviceName");
  KILN_CUDA_CHECK(cudaGetDeviceProperties(&prop, index), "deviceName");
  return prop.name;
}

int sm_count(Device d) {
  static int counts[kMaxDevices] = {0};
  if (!counts[d.index]) {
    int v = 0;
    KILN_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, d.index), "smCount");
    counts[d.index] = v;
  }
  return counts[d.index];
}

void set_device(Device d) {
  if (t_current == d.index) return;
  check_index(d.index, "setDevice");
  KILN_CUDA_CHECK(cudaSetDevice(d.index), "setDevice");
  t_current = d.index;
}

Stream* default_stream(Device d) {
  set_device(d);
  DeviceState& ds = g_devices[d.index];
  if (Stream* s = ds.default_stream.load(std::memory_order_acquire)) return s;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (Stream* s = ds.default_stream.load(std::memory_order_relaxed)) return s;
  auto s = std::make_unique<Stream>();
  s->device = d;
  s->is_default = true;
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&s->handle, cudaStreamNonBlocking), "stream");
  device_error_record(d);  // pinned allocation up front, never during graph capture
  ds.streams.push_back(s.get());
  ds.default_stream.store(s.get(), std::memory_order_release);
  return s.release();
}

Stream* current_stream(Device d) {
  set_device(d);
  Stream* s = t_streams[d.index];
  return s ? s : default_stream(d);
}

cudaStream_t stream(Device d) { return current_stream(d)->handle; }

void set_current_stream(Stream* s) {
  refuse_during_capture("withStream", "a graph captures the work of its own stream only");
  std::lock_guard<std::mutex> lock(g_mutex);
  Stream*& slot = t_streams[s->device.index];
  Stream* old = slot;
  if (old == s || (!old && s->is_default)) return;
  ref(s);
  slot = s->is_default ? nullptr : s;
  if (old) unref(old);
}

Stream* create_stream(Device d, int priority) {
  default_stream(d);  // the device's first stream sets it up
  int least = 0, greatest = 0;
  KILN_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest), "Stream");
  KILN_CHECK(priority >= greatest && priority <= least, Value, "Stream", "priority ", priority,
             " is outside the range of cuda:", d.index, ", ", greatest, " (runs first) to ", least);
  auto s = std::make_unique<Stream>();
  s->device = d;
  s->priority = priority;
  KILN_CUDA_CHECK(cudaStreamCreateWithPriority(&s->handle, cudaStreamNonBlocking, priority), "Stream");
  std::lock_guard<std::mutex> lock(g_mutex);
  g_devices[d.index].streams.push_back(s.get());
  return s.release();
}

cudaStream_t raw_stream(Stream* s) { return s->handle; }

void release_stream(Stream* s) {
  std::lock_guard<std::mutex> lock(g_mutex);
  unref(s);
}

bool capturing() { return t_captures > 0; }

void refuse_during_capture(const char* op, const char* why) {
  KILN_CHECK(t_captures == 0, Value, op, "not allowed while a CUDA graph is being captured: ", why,
             " (do it before the capture or after it)");
}

bool query(Stream* s) {
  refuse_during_capture("Stream.query", "the stream may be the one capturing");
  set_device(s->device);
  return completed(cudaStreamQuery(s->handle), "Stream.query");
}

// Index errors that kernels recorded since the last synchronization surface here (device_errors.h).
static void sync_stream(Stream* s, const char* op) {
  refuse_during_capture(op, "reading a tensor or synchronizing waits for the device");
  g_syncs++;
  set_device(s->device);
  KILN_CUDA_CHECK(cudaStreamSynchronize(s->handle), op);
  check_device_errors(s->device);
}

void synchronize(Stream* s) { sync_stream(s, "Stream.synchronize"); }

void wait_stream(Stream* s, Stream* other) {
  if (s == other) return;
  Event e;
  // Destroying the event right after enqueueing the wait is allowed: the wait keeps the record.
  struct Destroy {
    Event& e;
    ~Destroy() {
      if (e.handle) cudaEventDestroy(e.handle);
    }
  } destroy{e};
  record(&e, other);
  wait(s, &e);
}

Event* create_event(bool timing) {
  KILN_CHECK(device_count() > 0, Device, "Event", "no CUDA device is visible");
  auto* e = new Event;
  e->timing = timing;
  return e;
}

void destroy_event(Event* e) {
  if (e->handle) cudaEventDestroy(e->handle);  // CUDA keeps it until a pending record completes
  delete e;
}

void record(Event* e, Stream* s) {
  set_device(s->device);
  if (!e->handle) {
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&e->handle, e->timing ? cudaEventDefault : cudaEventDisableTiming),
                    "Event.record");
    e->device = s->device;
  }
  KILN_CHECK(e->device == s->device, Device, "Event.record", "the event belongs to cuda:", e->device.index,
             " (its first record) and cannot be recorded on a stream of cuda:", s->device.index);
  KILN_CUDA_CHECK(cudaEventRecord(e->handle, s->handle), "Event.record");
}

void wait(Stream* s, Event* e) {
  if (!e->handle) return;
  set_device(s->device);
  KILN_CUDA_CHECK(cudaStreamWaitEvent(s->handle, e->handle, 0), "Event.wait");
}

bool query(Event* e) {
  refuse_during_capture("Event.query", "a captured event cannot be queried");
  if (!e->handle) return true;
  set_device(e->device);
  return completed(cudaEventQuery(e->handle), "Event.query");
}

void synchronize(Event* e) {
  refuse_during_capture("Event.synchronize", "it would wait for the device");
  if (!e->handle) return;
  g_syncs++;
  set_device(e->device);
  KILN_CUDA_CHECK(cudaEventSynchronize(e->handle), "Event.synchronize");
  check_device_errors(e->device);
}

double elapsed_ms(Event* start, Event* end) {
  const char* op = "Event.elapsedTime";
  refuse_during_capture(op, "it would wait for the device");
  KILN_CHECK(start->timing && end->timing, Value, op, "both events need enableTiming: true");
  KILN_CHECK(start->handle && end->handle, Value, op, "both events must be recorded first");
  KILN_CHECK(start->device == end->device, Device, op, "the events belong to cuda:", start->device.index,
             " and cuda:", end->device.index);
  g_syncs++;
  set_device(start->device);
  KILN_CUDA_CHECK(cudaEventSynchronize(start->handle), op);
  KILN_CUDA_CHECK(cudaEventSynchronize(end->handle), op);
  float ms = 0;
  KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, start->handle, end->handle), op);
  check_device_errors(start->device);
  return ms;
}

void synchronize(Device d) {
  refuse_during_capture("synchronize", "it would wait for the device");
  g_syncs++;
  set_device(d);
  KILN_CUDA_CHECK(cudaDeviceSynchronize(), "synchronize");
  check_device_errors(d);
}

int64_t sync_count() { return g_syncs.load(); }

void record_stream(const Storage& storage, Stream* s) {
  KILN_CHECK(storage.device == s->device, Device, "recordStream", "the tensor is on ",
             storage.device.is_cpu() ? std::string("cpu") : str_cat("cuda:", storage.device.index),
             " and the stream on cuda:", s->device.index);
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceState& ds = g_devices[s->device.index];
  auto it = ds.live.find(storage.data);
  KILN_CHECK(it != ds.live.end(), Value, "recordStream", "the tensor's memory is not from kiln's allocator");
  Block* b = it->second;
  if (b->stream == s || std::find(b->uses.begin(), b->uses.end(), s) != b->uses.end()) return;
  b->uses.push_back(s);
  ref(s);
}

void copy_to_device(void* dst, const void* src, size_t n, Device d) {
  if (!n) return;
  refuse_during_capture("copyToDevice", "the graph would copy from host memory that is gone by its replay; make the tensor before");
  KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream(d)), "copyToDevice");
}

void copy_to_host(void* dst, const void* src, size_t n, Device d) {
  if (!n) return;
  refuse_during_capture("copyToHost", "reading a tensor waits for the device");
  Stream* s = current_stream(d);
  KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, s->handle), "copyToHost");
  sync_stream(s, "synchronize");
}

AllocStats alloc_stats(int device) {
  check_index(device, "memoryStats");
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_devices[device].stats;
}

void reset_peak(int device) {
  check_index(device, "resetPeakMemoryStats");
  std::lock_guard<std::mutex> lock(g_mutex);
  g_devices[device].stats.peak_allocated = g_devices[device].stats.allocated;
}

void empty_cache() {
  refuse_during_capture("emptyCache", "it would wait for the device");
  std::lock_guard<std::mutex> lock(g_mutex);
  for (int i = 0; i < device_count() && i < kMaxDevices; i++) {
    if (g_devices[i].streams.empty()) continue;  // never used
    set_device(Device{i});
    KILN_CUDA_CHECK(cudaDeviceSynchronize(), "emptyCache");
    release_cached(g_devices[i], i);
  }
}

Graph* graph_capture_begin(Stream* s) {
  const char* op = "CUDAGraph.capture";
  refuse_during_capture(op, "graphs do not nest");
  const Device d = s->device;
  KILN_CHECK(!s->is_default, Value, op, "a graph captures on a stream of its own, not a default stream");
  Stream* previous = current_stream(d);
  wait_stream(s, previous);  // recorded before the capture starts: not part of the graph
  auto g = std::make_unique<Graph>();
  g->device = d;
  g->stream = s;
  g->previous = previous;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    DeviceState& ds = g_devices[d.index];
    KILN_CHECK(!ds.capture, Value, op, "cuda:", d.index, " is already capturing a graph");
    ref(s);
    ref(previous);
    s->graph_owners++;
    ds.capture = g.get();
  }
  set_current_stream(s);  // before t_captures counts this capture (which refuses stream changes)
  t_captures++;
  const cudaError_t e = cudaStreamBeginCapture(s->handle, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess) {
    cudaGetLastError();
    graph_capture_abort(g.get());
    graph_destroy(g.release());
    throw_cuda(e, op, __FILE__, __LINE__);
  }
  return g.release();
}

// Ends g's capture on the CUDA side and in the allocator; returns what cudaStreamEndCapture said.
static cudaError_t end_capture(Graph* g, cudaGraph_t* graph) {
  *graph = nullptr;
  const cudaError_t e = cudaStreamEndCapture(g->stream->handle, graph);
  if (e != cudaSuccess) cudaGetLastError();
  t_captures--;
  set_current_stream(g->previous);
  std::lock_guard<std::mutex> lock(g_mutex);
  g_devices[g->device.index].capture = nullptr;
  unref(g->previous);
  g->previous = nullptr;
  return e;
}

void graph_capture_end(Graph* g) {
  const char* op = "CUDAGraph.capture";
  KILN_CHECK(g->state == Graph::State::Capturing, Value, op, "the graph is not capturing");
  g->state = Graph::State::Failed;
  cudaError_t e = end_capture(g, &g->graph);
  if (e == cudaSuccess) e = cudaGraphInstantiate(&g->exec, g->graph, 0);
  if (e != cudaSuccess) {
    g->exec = nullptr;
    cudaGetLastError();
    throw Error(ErrorCode::Cuda, op,
                str_cat("the capture failed: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e),
                        " (something in the function cannot be captured, or ran on another thread or stream)"));
  }
  g->state = Graph::State::Ready;
}

void graph_capture_abort(Graph* g) {
  if (g->state != Graph::State::Capturing) return;
  g->state = Graph::State::Failed;
  end_capture(g, &g->graph);
}

void graph_replay(Graph* g) {
  const char* op = "CUDAGraph.replay";
  KILN_CHECK(g->state == Graph::State::Ready, Value, op,
             g->state == Graph::State::Capturing ? "the graph is still capturing" : "the graph's capture failed");
  refuse_during_capture(op, "graphs do not nest");
  Stream* cur = current_stream(g->device);
  wait_stream(g->stream, cur);
  KILN_CUDA_CHECK(cudaGraphLaunch(g->exec, g->stream->handle), op);
  wait_stream(cur, g->stream);
}

void graph_destroy(Graph* g) {
  graph_capture_abort(g);
  enter(g->device);
  if (g->exec) cudaGraphExecDestroy(g->exec);
  if (g->graph) cudaGraphDestroy(g->graph);
  std::lock_guard<std::mutex> lock(g_mutex);
  // Held blocks become reusable after the replays enqueued so far, as a free after record_stream.
  for (Block* b : g->held) {
    std::vector<Stream*> on = std::move(b->uses);
    b->uses.clear();
    on.push_back(g->stream);
    hold_back(b, on, b->stream);
    on.pop_back();
    for (Stream* u : on) unref(u);
  }
  // The graph's memory goes back to ordinary use once its replays are done; the stream itself may
  // live on in JavaScript until collected.
  Stream* s = g->stream;
  if (--s->graph_owners == 0) pass_cache_to_default(s);
  unref(s);
  delete g;
}

namespace {
// A device's profiling marks: events (kept for reuse across profiles) and the tags of the first
// `count`. Used from the JavaScript thread only.
struct ProfileMarks {
  std::vector<cudaEvent_t> events;
  std::vector<int32_t> tags;
  size_t count = 0;
};
ProfileMarks g_marks[kMaxDevices];

void record_mark(Device d, ProfileMarks& m) {
  set_device(d);
  if (m.count == m.events.size()) {
    cudaEvent_t e = nullptr;
    KILN_CUDA_CHECK(cudaEventCreate(&e), "profileKernels");
    m.events.push_back(e);
    m.tags.push_back(0);
  }
  KILN_CUDA_CHECK(cudaEventRecord(m.events[m.count], stream(d)), "profileKernels");
  m.count++;
}
}  // namespace

void profile_mark(Device d, int32_t tag) {
  refuse_during_capture("profileKernels", "profiling times work as it runs");
  check_index(d.index, "profileKernels");
  ProfileMarks& m = g_marks[d.index];
  record_mark(d, m);
  m.tags[m.count - 1] = tag;
}

std::vector<std::pair<int32_t, double>> profile_collect(Device d) {
  const char* op = "profileKernels";
  refuse_during_capture(op, "it would wait for the device");
  check_index(d.index, op);
  ProfileMarks& m = g_marks[d.index];
  std::vector<std::pair<int32_t, double>> out;
  const size_t marks = m.count;
  if (marks == 0) return out;
  struct StartOver {
    ProfileMarks& m;
    ~StartOver() { m.count = 0; }  // even when reading the times fails
  } start_over{m};
  set_device(d);
  record_mark(d, m);
  g_syncs++;
  KILN_CUDA_CHECK(cudaEventSynchronize(m.events[marks]), op);
  check_device_errors(d);
  out.reserve(marks);
  for (size_t i = 0; i < marks; i++) {
    float ms = 0;
    KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, m.events[i], m.events[i + 1]), op);
    out.emplace_back(m.tags[i], double(ms));
  }
  return out;
}

void init() { register_device_allocator(DeviceAllocator{device_alloc, device_free}); }

void set_allow_tf32(bool on) { g_tf32 = on; }
bool allow_tf32() { return g_tf32.load(); }

}  // namespace kiln::cuda
