// Per-device records of data-dependent kernel errors (see device_errors.h): allocation of the
// host-mapped records, the interned op names kernels refer to by id, and the host-side check.
#include "device_errors.h"
#include <atomic>
#include <mutex>
#include <string>
#include <vector>
#include "runtime.h"

namespace kiln::cuda {

namespace {
constexpr int kMaxDevices = 64;

struct Slot {
  std::atomic<DeviceErrorRecord*> host{nullptr};  // set last, once the device pointer is known
  DeviceErrorRecord* device = nullptr;
};

std::mutex g_mutex;
Slot g_slots[kMaxDevices];
std::vector<std::string> g_ops;  // op id -> name

Slot& slot(Device d, const char* op) {
  KILN_CHECK(d.index >= 0 && d.index < kMaxDevices, Device, op, "cuda:", d.index, " has no error record");
  return g_slots[d.index];
}

int32_t op_id(const char* op) {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (size_t i = 0; i < g_ops.size(); i++)
    if (g_ops[i] == op) return int32_t(i);
  g_ops.emplace_back(op);
  return int32_t(g_ops.size() - 1);
}
}  // namespace

DeviceErrorRecord* device_error_record(Device d) {
  Slot& s = slot(d, "deviceErrorRecord");
  if (s.host.load(std::memory_order_acquire)) return s.device;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!s.host.load(std::memory_order_relaxed)) {
    set_device(d);
    void* p = nullptr;
    KILN_CUDA_CHECK(cudaHostAlloc(&p, sizeof(DeviceErrorRecord), cudaHostAllocMapped | cudaHostAllocPortable),
                    "deviceErrorRecord");
    auto* rec = static_cast<DeviceErrorRecord*>(p);
    *rec = DeviceErrorRecord{};
    void* dp = nullptr;
    KILN_CUDA_CHECK(cudaHostGetDevicePointer(&dp, p, 0), "deviceErrorRecord");
    s.device = static_cast<DeviceErrorRecord*>(dp);
    s.host.store(rec, std::memory_order_release);
  }
  return s.device;
}

IndexGuard index_guard(Device d, const char* op, int64_t size, int64_t dim) {
  return IndexGuard{device_error_record(d), op_id(op), size, dim};
}

void check_device_errors(Device d) {
  if (d.index < 0 || d.index >= kMaxDevices) return;
  DeviceErrorRecord* rec = g_slots[d.index].host.load(std::memory_order_acquire);
  if (!rec) return;
  volatile DeviceErrorRecord* r = rec;
  if (r->claimed == 0) return;
  // The synchronization was with one stream; a kernel on another may still be filling the record in.
  set_device(d);
  KILN_CUDA_CHECK(cudaDeviceSynchronize(), "synchronize");
  const DeviceErrorRecord e{r->claimed, r->op, r->value, r->position, r->size, r->dim};
  r->claimed = 0;
  std::string op;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    op = e.op >= 0 && size_t(e.op) < g_ops.size() ? g_ops[size_t(e.op)] : "cuda";
  }
  const std::string range = e.size > 0 ? str_cat("valid range [0, ", e.size - 1, "]") : std::string("no valid index");
  throw Error(ErrorCode::Index, op,
              str_cat("index ", e.value, " is out of range for dim ", e.dim, " of size ", e.size, " (", range,
                      "); it is element ", e.position, " of the index, found by a kernel on cuda:", d.index,
                      " (index errors on CUDA surface at the next synchronization)"));
}

}  // namespace kiln::cuda
