// Errors that depend on data a CUDA kernel reads (an index value out of range): the kernel skips
// the bad element and records it in a per-device record in host-mapped pinned memory; the host
// raises it as an IndexError at the next point where it synchronizes with that device anyway
// (check_device_errors, called after a stream synchronize), so checking adds no synchronization.
// Plain C++ for the host side (the binding may include it); the device side is under __CUDACC__.
#pragma once
#include <cstdint>
#include "../core/storage.h"

namespace kiln::cuda {

// The first recorded error of a device since the host last checked. Kernels only write it; the
// host reads and clears it after a synchronize, when no kernel of the device runs.
struct DeviceErrorRecord {
  int32_t claimed;   // 0 while empty; the first kernel thread to record sets it to 1 (atomicCAS)
  int32_t op;        // the op's id (an interned name, see index_guard)
  int64_t value;     // the out-of-range index value
  int64_t position;  // its row-major position among the index tensor's elements
  int64_t size;      // the size of the indexed dim: valid values are [0, size)
  int64_t dim;
};

// What a kernel needs to check index values against one dim and record the first bad one.
struct IndexGuard {
  DeviceErrorRecord* record;  // device pointer
  int32_t op;
  int64_t size, dim;

#ifdef __CUDACC__
  __device__ __forceinline__ bool ok(int64_t v) const { return uint64_t(v) < uint64_t(size); }
  // Records (v, position) unless an earlier error of the device is still unreported.
  __device__ void report(int64_t v, int64_t position) const {
    if (atomicCAS(&record->claimed, 0, 1) != 0) return;
    record->op = op;
    record->value = v;
    record->position = position;
    record->size = size;
    record->dim = dim;
    __threadfence_system();
  }
#endif
};

// The record of device d (device pointer), allocated on first use with cudaHostAlloc (mapped):
// make that first use happen outside CUDA graph capture.
DeviceErrorRecord* device_error_record(Device d);

// A guard for index values into dim `dim` of size `size`, reporting errors as op.
IndexGuard index_guard(Device d, const char* op, int64_t size, int64_t dim);

// Throws the recorded error of d as an IndexError (naming the op, the value, the valid range and
// the position) and clears the record. Call only right after synchronizing with a stream of d (a
// recorded error waits for the whole device before it is read: it may come from another stream).
void check_device_errors(Device d);

}  // namespace kiln::cuda
