// CUDA reductions (twin of native/cpu/reduce.h): reduce a strided tensor over a set of dims.
#pragma once
#include "../cpu/reduce.h"

namespace kiln::cuda {
// Same contract as cpu::reduce: `out` is contiguous and holds the kept dims in order; `param` is the
// correction of var/std.
void reduce(ReduceOp op, const Tensor& x, const Tensor& out, const std::vector<int64_t>& dims, double param);
}  // namespace kiln::cuda
