// CPU allocation (64-byte aligned, large blocks cached for reuse) and live-memory counters; device
// memory goes to the allocator a GPU backend registers.
#include "storage.h"
#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>
#include "error.h"

namespace kiln {

namespace {
std::atomic<int64_t> g_storages{0};
std::atomic<int64_t> g_bytes{0};
std::atomic<int64_t> g_peak{0};
DeviceAllocator g_device_allocator{nullptr, nullptr};

// glibc maps each large allocation afresh and unmaps it on free, so a fresh 64 MB output costs page
// faults several times the kernel's own time; freed blocks from 1 MiB up are kept (up to 1 GiB) and
// handed out again for the same size class.
constexpr size_t kCacheMinBytes = size_t(1) << 20;
constexpr int64_t kCacheCapBytes = int64_t(1) << 30;
std::mutex g_cache_mutex;
std::unordered_map<size_t, std::vector<void*>> g_cache;
std::atomic<int64_t> g_cached{0};

void* cpu_alloc(size_t n) {
  size_t size = n >= kCacheMinBytes ? allocation_size_class(n) : (n + 63) / 64 * 64;
  if (n >= kCacheMinBytes) {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    auto it = g_cache.find(size);
    if (it != g_cache.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      g_cached -= int64_t(size);
      return p;
    }
  }
  return std::aligned_alloc(64, size == 0 ? 64 : size);
}

void cpu_free(void* p, size_t n) {
  if (n >= kCacheMinBytes) {
    size_t size = allocation_size_class(n);
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    if (g_cached.load() + int64_t(size) <= kCacheCapBytes) {
      g_cache[size].push_back(p);
      g_cached += int64_t(size);
      return;
    }
  }
  std::free(p);
}

void count_alloc(size_t n) {
  g_storages++;
  int64_t now = (g_bytes += int64_t(n));
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {}
}
}  // namespace

Storage::Storage(size_t n, Device dev) : nbytes(n), device(dev) {
  if (dev.is_cpu()) {
    data = cpu_alloc(n);
    if (!data)
      throw Error(ErrorCode::OutOfMemory, "alloc",
                  str_cat("could not allocate ", n, " bytes on cpu (", g_bytes.load(), " bytes held by tensors)"));
    count_alloc(n);
  } else {
    if (!g_device_allocator.alloc)
      throw Error(ErrorCode::Device, "alloc", str_cat("cuda:", dev.index, " requested but kiln was built without CUDA"));
    data = g_device_allocator.alloc(n, dev);
  }
}

Storage::~Storage() {
  if (device.is_cpu()) {
    cpu_free(data, nbytes);
    g_storages--;
    g_bytes -= int64_t(nbytes);
  } else if (g_device_allocator.free) {
    g_device_allocator.free(data, nbytes, device);
  }
}

MemoryCounters cpu_memory_counters() { return {g_storages.load(), g_bytes.load(), g_peak.load(), g_cached.load()}; }

void register_device_allocator(DeviceAllocator a) { g_device_allocator = a; }

}  // namespace kiln
