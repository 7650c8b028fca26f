// CUDA runtime for the backend: error checks that throw CudaError with file and line, the current
// device, streams (each device's default stream, streams kiln creates, this thread's current stream
// per device) and events, a counter of host synchronizations, and the caching allocator's interface
// and stats.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include <utility>
#include <vector>
#include "../core/error.h"
#include "../core/storage.h"

namespace kiln::cuda {

[[noreturn]] void throw_cuda(cudaError_t e, const char* op, const char* file, int line);

// Makes d the current device of this thread (skips the driver call when it already is).
void set_device(Device d);
// The stream every kernel on device d is enqueued on: this thread's current stream of d (its
// default stream unless set_current_stream chose another); makes d current.
cudaStream_t stream(Device d);
int device_count();
const char* device_name(int index);
int sm_count(Device d);

// A CUDA stream kiln owns: a device's default stream (made on first use, lives for the process;
// non-blocking, so it never waits on the legacy null stream), or one made by create_stream. Streams
// are reference counted inside runtime.cu: the creator's reference, every thread whose current
// stream it is, and every live memory block allocated on it or recorded to it (record_stream); the
// CUDA stream is destroyed when the last goes. Opaque outside runtime.cu.
class Stream;
Stream* default_stream(Device d);
Stream* current_stream(Device d);
// Makes s this thread's current stream of s's device (it holds a reference while current).
void set_current_stream(Stream* s);
// A new non-blocking stream on d; priority as CUDA counts it (lower runs first), checked against
// the device's range (ValueError outside it).
Stream* create_stream(Device d, int priority);
// The CUDA stream behind s, for libraries that enqueue on it themselves (NCCL).
cudaStream_t raw_stream(Stream* s);
// Drops the creator's reference (a no-op for a default stream). The stream stays usable by work
// already enqueued and by the threads it is current on; its cached memory blocks become reusable
// on the device's default stream once its enqueued work is done.
void release_stream(Stream* s);
// True when all work enqueued on s has finished (no host wait).
bool query(Stream* s);
// Host waits for s (counted in sync_count).
void synchronize(Stream* s);
// Later work on s waits until work enqueued on `other` so far is done (an event in between).
void wait_stream(Stream* s, Stream* other);

// A CUDA event, made on first record on the device of that stream (as torch.cuda.Event).
class Event;
// A DeviceError when no CUDA device is visible.
Event* create_event(bool timing);
void destroy_event(Event* e);
// Records e on s: e completes when the work enqueued on s so far is done.
void record(Event* e, Stream* s);
// Later work on s waits for e's last record (a no-op when e was never recorded).
void wait(Stream* s, Event* e);
// True when e's last record has completed (or e was never recorded); no host wait.
bool query(Event* e);
// Host waits for e's last record (counted in sync_count).
void synchronize(Event* e);
// Milliseconds between the records of start and end, both made with timing; waits for both to
// complete (one host synchronization).
double elapsed_ms(Event* start, Event* end);

// Host waits for all work on every stream of d (as torch.cuda.synchronize). Every host
// synchronization goes through here, synchronize(Stream*), synchronize(Event*), elapsed_ms or
// copy_to_host, so tests can count them.
void synchronize(Device d);
int64_t sync_count();

// Marks storage (device memory) as used by work on s, which may not be the stream it was allocated
// on: when the storage is freed, its block is reused only after the work enqueued on s by then is
// done (torch's Tensor.record_stream).
void record_stream(const Storage& storage, Stream* s);

// Copies between host memory and a device (async on the device's current stream; to_host
// synchronizes with that stream).
void copy_to_device(void* dst, const void* src, size_t n, Device d);
void copy_to_host(void* dst, const void* src, size_t n, Device d);

struct AllocStats {
  int64_t allocated;       // bytes in blocks handed to tensors
  int64_t reserved;        // bytes obtained from cudaMalloc (allocated + cached)
  int64_t peak_allocated;
  int64_t mallocs;         // cudaMalloc calls so far
  int64_t frees;           // cudaFree calls so far
  int64_t ooms;            // allocations that failed after freeing the cache
  int64_t pending;         // freed blocks waiting on events of other streams before reuse
};
AllocStats alloc_stats(int device);
void reset_peak(int device);
// Returns every cached block of every device to the driver (after waiting for the devices).
void empty_cache();

// CUDA graphs (torch.cuda.CUDAGraph): the work a function enqueues on one device, captured once and
// replayed as one launch. Capture runs on a stream made for the graph alone, current on this thread
// for the duration; what the captured kernels allocate comes from that stream's cache, which
// nothing else allocates from, so the addresses baked into the graph stay the graph's across
// replays. Blocks of other streams freed during capture (captured kernels may have used them) are
// held by the graph until it is destroyed. While capturing, host reads and synchronizations,
// host-to-device copies and random draws are refused with a ValueError (they would wait on the
// device, bake a host pointer in, or repeat the same numbers on every replay).
class Graph;
// Starts capturing the work this thread enqueues on s's device, on s (made current; a stream made
// for the graph alone, whose cache becomes the graph's memory), after the work enqueued on the
// current stream so far. One capture per device at a time.
Graph* graph_capture_begin(Stream* s);
// Ends the capture and instantiates the graph (a CudaError when the capture was invalidated).
void graph_capture_end(Graph* g);
// Ends a capture that failed in between (the function threw), discarding what was captured.
void graph_capture_abort(Graph* g);
// Enqueues the whole graph: after the work enqueued on the device's current stream so far, and
// before what is enqueued there next.
void graph_replay(Graph* g);
// Destroys the graph (replays already enqueued finish first); its memory becomes reusable once
// they have.
void graph_destroy(Graph* g);
// True while this thread captures a graph on any device.
bool capturing();
// A ValueError naming op when this thread is capturing a graph (what op does cannot be captured).
void refuse_during_capture(const char* op, const char* why);

// Kernel profiling (kiln.cuda.profileKernels): profile_mark records a timing event tagged `tag` on
// d's current stream before an op enqueues its work; profile_collect records a last one, waits for
// it (one host synchronization) and returns, for each mark in order, its tag and the milliseconds of
// GPU time until the next mark, then starts over. Marks are not allowed during graph capture.
void profile_mark(Device d, int32_t tag);
std::vector<std::pair<int32_t, double>> profile_collect(Device d);

// Installs the caching allocator for Storage (called once at load).
void init();

// TF32 tensor-core math for float32 matmul (off by default, like PyTorch).
void set_allow_tf32(bool on);
bool allow_tf32();

}  // namespace kiln::cuda

#define KILN_CUDA_CHECK(call, op)                                                    \
  do {                                                                               \
    cudaError_t kiln_e_ = (call);                                                    \
    if (kiln_e_ != cudaSuccess) ::kiln::cuda::throw_cuda(kiln_e_, op, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: turns a launch failure into a CudaError naming op.
#define KILN_CUDA_LAUNCH_CHECK(op) KILN_CUDA_CHECK(cudaGetLastError(), op)
