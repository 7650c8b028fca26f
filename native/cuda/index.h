// CUDA indexing kernels (twins of native/cpu/index.h): gather, index_select (also embedding),
// index_add (also embedding backward) and scatter_add, with the CPU's shape and dtype checks.
// Index values are checked on the device: an out-of-range index is skipped (nothing is read or
// written through it; gathered outputs get zero there) and recorded, and the host raises it as an
// IndexError at its next synchronization with the device (device_errors.h).
// index_add is deterministic (sort + segmented sums); scatter_add uses atomics.
#pragma once
#include "../core/tensor.h"

namespace kiln::cuda {

void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* op);
void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, const char* op);
void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);

}  // namespace kiln::cuda
