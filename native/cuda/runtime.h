// CUDA runtime for the backend: error checks that throw CudaError with file and line, the current
// device and stream, a counter of host synchronizations, the caching allocator's interface and
// stats, and the cuBLASLt handle and workspace per device.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include "../core/error.h"
#include "../core/storage.h"

namespace kiln::cuda {

[[noreturn]] void throw_cuda(cudaError_t e, const char* op, const char* file, int line);

// Makes d the current device of this thread (skips the driver call when it already is).
void set_device(Device d);
// The stream every kernel on device d is enqueued on; makes d current.
cudaStream_t stream(Device d);
int device_count();
const char* device_name(int index);
int sm_count(Device d);

// Host waits for all work on d's stream. Every host synchronization goes through here (or
// through copy_to_host), so tests can count them.
void synchronize(Device d);
int64_t sync_count();

// Copies between host memory and a device (async on the device's stream; to_host synchronizes).
void copy_to_device(void* dst, const void* src, size_t n, Device d);
void copy_to_host(void* dst, const void* src, size_t n, Device d);

struct AllocStats {
  int64_t allocated;       // bytes in blocks handed to tensors
  int64_t reserved;        // bytes obtained from cudaMalloc (allocated + cached)
  int64_t peak_allocated;
  int64_t mallocs;         // cudaMalloc calls so far
  int64_t frees;           // cudaFree calls so far
  int64_t ooms;            // allocations that failed after freeing the cache
};
AllocStats alloc_stats(int device);
void reset_peak(int device);
// Returns every cached block of every device to the driver.
void empty_cache();

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
