// CPU random kernels: uniform, normal and integer fills and fused dropout, all drawing from the
// Philox stream of (seed, offset) (core/philox.h) so that an element's value depends only on the
// seed, the offset and its index. Each fill returns the number of 128-bit blocks it consumed, by
// which the caller advances its offset.
#pragma once
#include <cstdint>
#include "../core/tensor.h"

namespace kiln::cpu {

// out (contiguous, floating) = uniform values in [low, high); one word per element (two for float64).
uint64_t rand_uniform(const Tensor& out, uint64_t seed, uint64_t offset, double low, double high);
// out (contiguous, floating) = mean + std * standard normal (Box-Muller on pairs of elements);
// one word per element (two for float64). The uniforms have 24 (53) bits, so |z| stays below 5.8
// (8.6) standard deviations, a tail of probability 8e-9 (1e-17).
uint64_t rand_normal(const Tensor& out, uint64_t seed, uint64_t offset, double mean, double std);
// out (contiguous, numeric) = integers in [low, low + range), two words (64 bits) per element.
uint64_t rand_int(const Tensor& out, uint64_t seed, uint64_t offset, int64_t low, uint64_t range);

// out = x * mask / (1 - p) with mask[i] = 1 with probability 1 - p (one word per element); out and
// mask (bool) are contiguous and of x's shape; x may have any strides. 0 <= p < 1.
uint64_t dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out, const Tensor& mask);
// out = grad * mask * scale for same-shaped grad, mask and out of any strides.
void dropout_backward(const Tensor& grad, const Tensor& mask, double scale, const Tensor& out);

}  // namespace kiln::cpu
