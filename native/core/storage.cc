// CPU allocation (64-byte aligned) and live-memory counters; device memory goes to the
// allocator a GPU backend registers.
#include "storage.h"
#include <cstdlib>
#include <new>
#include "error.h"

namespace kiln {

namespace {
std::atomic<int64_t> g_storages{0};
std::atomic<int64_t> g_bytes{0};
std::atomic<int64_t> g_peak{0};
DeviceAllocator g_device_allocator{nullptr, nullptr};

void count_alloc(size_t n) {
  g_storages++;
  int64_t now = (g_bytes += int64_t(n));
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {}
}
}  // namespace

Storage::Storage(size_t n, Device dev) : nbytes(n), device(dev) {
  if (dev.is_cpu()) {
    size_t rounded = (n + 63) / 64 * 64;
    data = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
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
    std::free(data);
    g_storages--;
    g_bytes -= int64_t(nbytes);
  } else if (g_device_allocator.free) {
    g_device_allocator.free(data, nbytes, device);
  }
}

MemoryCounters cpu_memory_counters() { return {g_storages.load(), g_bytes.load(), g_peak.load()}; }

void register_device_allocator(DeviceAllocator a) { g_device_allocator = a; }

}  // namespace kiln
