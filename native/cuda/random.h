// CUDA random kernels (twins of native/cpu/random.h): uniform, normal and integer fills and fused
// dropout from the Philox stream of (seed, offset). Element i takes the same Philox block and
// words as on the CPU, so uniform and integer values and dropout masks are bit-identical to the
// CPU's (normals agree to the rounding of log, sin and cos); each fill returns the blocks consumed.
#pragma once
#include <cstdint>
#include "../core/tensor.h"

namespace kiln::cuda {

uint64_t rand_uniform(const Tensor& out, uint64_t seed, uint64_t offset, double low, double high);
uint64_t rand_normal(const Tensor& out, uint64_t seed, uint64_t offset, double mean, double std);
uint64_t rand_int(const Tensor& out, uint64_t seed, uint64_t offset, int64_t low, uint64_t range);
uint64_t dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out, const Tensor& mask);
void dropout_backward(const Tensor& grad, const Tensor& mask, double scale, const Tensor& out);

}  // namespace kiln::cuda
