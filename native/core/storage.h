// Device ids, refcounted Storage (one allocation on one device) and the live-memory counters
// behind kiln.memory(). A Storage is shared by every tensor view over it and freed with the last.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace kiln {

// -1 is the CPU, n >= 0 is cuda:n. Same encoding in TypeScript.
struct Device {
  int32_t index = -1;
  bool is_cpu() const { return index < 0; }
  bool is_cuda() const { return index >= 0; }
  bool operator==(const Device& o) const { return index == o.index; }
  bool operator!=(const Device& o) const { return index != o.index; }
};

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  // In-place writes so far (bumped by the JS layer after each one; autograd compares it).
  uint64_t version = 0;
  Storage(size_t nbytes, Device device);  // allocates; throws OutOfMemoryError
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct MemoryCounters {
  int64_t storages;
  int64_t bytes;
  int64_t peak_bytes;
  int64_t cached_bytes;  // freed CPU blocks kept for reuse
};

// Size classes shared by the caching allocators: 512-byte granules up to 1 MiB, then four classes
// per power of two (at most 25% slack), so repeated allocations of similar sizes reuse blocks.
inline size_t allocation_size_class(size_t n) {
  if (n <= 512) return 512;
  if (n <= (size_t(1) << 20)) return (n + 511) / 512 * 512;
  size_t p = size_t(1) << (63 - __builtin_clzll(n));
  size_t step = p / 4;
  return (n + step - 1) / step * step;
}
MemoryCounters cpu_memory_counters();
// Starts the peak of CPU bytes afresh from what is held now.
void cpu_reset_peak();
// Frees every cached CPU block; the cache then grows again only as far as live tensors need.
void cpu_empty_cache();

// A backend that owns device memory registers its allocator here (the CUDA backend does at load).
struct DeviceAllocator {
  void* (*alloc)(size_t nbytes, Device device);
  void (*free)(void* ptr, size_t nbytes, Device device);
};
void register_device_allocator(DeviceAllocator a);

}  // namespace kiln
