// CPU allocation (64-byte aligned, large blocks cached for reuse) and live-memory counters; device
// memory goes to the allocator a GPU backend registers.
#include "storage.h"
#include <algorithm>
#include <cstdlib>
#include <iterator>
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
// faults several times the kernel's own time (and unmapping a 400 MB block alone takes ~30 ms);
// freed blocks from 1 MiB up are kept and handed out again for the same size class. Large blocks,
// live and cached, make the footprint; a cache miss that would raise the footprint above the larger
// of 1 GiB and its highest point so far first frees cached blocks. So the footprint only grows
// when live tensors need it, and a training loop, which allocates the same sizes every step, keeps
// all of its blocks cached. An allocation that fails frees the whole cache and tries once more.
constexpr size_t kCacheMinBytes = size_t(1) << 20;
constexpr int64_t kFootprintFloor = int64_t(1) << 30;
std::mutex g_cache_mutex;  // guards the four below
std::unordered_map<size_t, std::vector<void*>> g_cache;
std::atomic<int64_t> g_cached{0};
int64_t g_footprint = 0;       // size-class bytes of large blocks, live and cached
int64_t g_footprint_peak = 0;

// Takes cached blocks out until the footprint plus `want` fits the limit (or the cache is empty)
// and returns them, to be freed outside the lock.
std::vector<void*> evict_for(int64_t want) {
  const int64_t limit = std::max(kFootprintFloor, g_footprint_peak);
  std::vector<void*> out;
  size_t cached_blocks = 0;
  for (const auto& entry : g_cache) cached_blocks += entry.second.size();
  out.reserve(cached_blocks);  // so that nothing below throws with blocks half moved
  for (auto it = g_cache.begin(); it != g_cache.end() && g_footprint + want > limit;) {
    while (!it->second.empty() && g_footprint + want > limit) {
      out.push_back(it->second.back());
      it->second.pop_back();
      g_cached -= int64_t(it->first);
      g_footprint -= int64_t(it->first);
    }
    it = it->second.empty() ? g_cache.erase(it) : std::next(it);
  }
  return out;
}

void* cpu_alloc(size_t n) {
  if (n < kCacheMinBytes) {
    const size_t bytes = n == 0 ? 64 : (n + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (!p) {
      cpu_empty_cache();
      p = std::aligned_alloc(64, bytes);
    }
    return p;
  }
  const size_t size = allocation_size_class(n);
  std::vector<void*> evicted;
  int64_t peak_before = 0;
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    auto it = g_cache.find(size);
    if (it != g_cache.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      g_cached -= int64_t(size);
      return p;
    }
    evicted = evict_for(int64_t(size));
    g_footprint += int64_t(size);  // reserved; the peak moves only once the block exists
    peak_before = g_footprint_peak;
  }
  for (void* p : evicted) std::free(p);
  void* p = std::aligned_alloc(64, size);
  if (!p) {
    // Out of memory: return every cached block to the system and try once more.
    cpu_empty_cache();
    p = std::aligned_alloc(64, size);
  }
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  if (p) {
    g_footprint_peak = std::max(g_footprint_peak, g_footprint);
  } else {
    g_footprint -= int64_t(size);
    g_footprint_peak = std::min(g_footprint_peak, std::max(peak_before, g_footprint));
  }
  return p;
}

void cpu_free(void* p, size_t n) {
  if (n >= kCacheMinBytes) {
    const size_t size = allocation_size_class(n);
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    try {
      g_cache[size].push_back(p);
      g_cached += int64_t(size);
      return;
    } catch (const std::bad_alloc&) {
      g_footprint -= int64_t(size);  // cannot record it: free it instead (this runs in destructors)
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

void cpu_empty_cache() {
  std::vector<void*> blocks;
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    for (auto& [size, list] : g_cache) {
      for (void* p : list) blocks.push_back(p);
      g_footprint -= int64_t(size) * int64_t(list.size());
    }
    g_cache.clear();
    g_cached = 0;
    g_footprint_peak = g_footprint;
  }
  for (void* p : blocks) std::free(p);
}

void cpu_reset_peak() { g_peak = g_bytes.load(); }

MemoryCounters cpu_memory_counters() { return {g_storages.load(), g_bytes.load(), g_peak.load(), g_cached.load()}; }

void register_device_allocator(DeviceAllocator a) { g_device_allocator = a; }

}  // namespace kiln
