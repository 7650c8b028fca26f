// CUDA copy kernels (twins of native/cpu/copy.h): strided copy with dtype conversion, and fill.
#pragma once
#include "../core/tensor.h"

namespace kiln::cuda {
void copy(const Tensor& src, const Tensor& dst);
void fill(const Tensor& dst, double value);
}  // namespace kiln::cuda
