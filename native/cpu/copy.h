// CPU copy kernels: strided copy with dtype conversion, and fill.
#pragma once
#include "../core/tensor.h"

namespace kiln::cpu {
// dst[i] = convert(src[i]) for same-shaped src and dst of any strides and dtypes.
void copy(const Tensor& src, const Tensor& dst);
// dst[i] = value converted to dst's dtype.
void fill(const Tensor& dst, double value);
}  // namespace kiln::cpu
