// CUDA runtime: devices, one non-blocking stream per device, host synchronization counting, and the
// caching allocator (size classes, per-device free lists, no cudaMalloc/cudaFree on the hot path,
// free-the-cache-and-retry on out of memory).
#include "runtime.h"
#include "device_errors.h"
#include <atomic>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace kiln::cuda {

namespace {
constexpr int kMaxDevices = 64;

struct DeviceState {
  cudaStream_t stream = nullptr;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;  // rounded size -> cached blocks
  AllocStats stats{};
};

std::mutex g_mutex;
DeviceState g_devices[kMaxDevices];
thread_local int t_current = -1;
std::atomic<int64_t> g_syncs{0};
std::atomic<bool> g_tf32{false};

void check_index(int index, const char* op) {
  int n = device_count();
  KILN_CHECK(index >= 0 && index < n && index < kMaxDevices, Device, op, "cuda:", index, " does not exist (",
             n, " CUDA device", n == 1 ? "" : "s", " visible)");
}

void release_cached(DeviceState& s, int index) {
  set_device(Device{index});
  for (auto& [size, blocks] : s.free_blocks) {
    for (void* p : blocks) {
      cudaFree(p);
      s.stats.reserved -= int64_t(size);
      s.stats.frees++;
    }
  }
  s.free_blocks.clear();
}

void* device_alloc(size_t n, Device d) {
  check_index(d.index, "alloc");
  size_t size = allocation_size_class(n);
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceState& s = g_devices[d.index];
  void* p = nullptr;
  auto it = s.free_blocks.find(size);
  if (it != s.free_blocks.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
  } else {
    set_device(d);
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear the (non-sticky) error, free the cache, retry once
      release_cached(s, d.index);
      set_device(d);
      e = cudaMalloc(&p, size);
      if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        s.stats.ooms++;
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        throw Error(ErrorCode::OutOfMemory, "alloc",
                    str_cat("CUDA out of memory on cuda:", d.index, ": tried to allocate ", n, " bytes (", size,
                            " rounded); tensors hold ", s.stats.allocated, " bytes, kiln has reserved ",
                            s.stats.reserved, " bytes; the device has ", free_b, " of ", total_b, " bytes free"));
      }
    }
    if (e != cudaSuccess) throw_cuda(e, "alloc", __FILE__, __LINE__);
    s.stats.mallocs++;
    s.stats.reserved += int64_t(size);
  }
  s.stats.allocated += int64_t(size);
  if (s.stats.allocated > s.stats.peak_allocated) s.stats.peak_allocated = s.stats.allocated;
  return p;
}

// Blocks go back to the cache at once: every kernel runs on the device's single stream, so work
// already enqueued that reads the block finishes before any later kernel can write it.
void device_free(void* p, size_t n, Device d) {
  if (!p || d.index < 0 || d.index >= kMaxDevices) return;
  size_t size = allocation_size_class(n);
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceState& s = g_devices[d.index];
  s.free_blocks[size].push_back(p);
  s.stats.allocated -= int64_t(size);
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

cudaStream_t stream(Device d) {
  set_device(d);
  DeviceState& s = g_devices[d.index];
  if (!s.stream) {
    KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "stream");
    device_error_record(d);  // pinned allocation up front, never during graph capture
  }
  return s.stream;
}

// Index errors that kernels recorded since the last synchronization surface here (device_errors.h).
void synchronize(Device d) {
  g_syncs++;
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream(d)), "synchronize");
  check_device_errors(d);
}

int64_t sync_count() { return g_syncs.load(); }

void copy_to_device(void* dst, const void* src, size_t n, Device d) {
  if (!n) return;
  KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream(d)), "copyToDevice");
}

void copy_to_host(void* dst, const void* src, size_t n, Device d) {
  if (!n) return;
  KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream(d)), "copyToHost");
  synchronize(d);
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
  std::lock_guard<std::mutex> lock(g_mutex);
  for (int i = 0; i < device_count() && i < kMaxDevices; i++) {
    if (!g_devices[i].free_blocks.empty()) {
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream(Device{i})), "emptyCache");
      release_cached(g_devices[i], i);
    }
  }
}

void init() { register_device_allocator(DeviceAllocator{device_alloc, device_free}); }

void set_allow_tf32(bool on) { g_tf32 = on; }
bool allow_tf32() { return g_tf32.load(); }

}  // namespace kiln::cuda
