// The random family's contract, shared by both backends: uniform, normal and integer fills and fused
// dropout, all drawing from the Philox stream of (seed, offset) (core/philox.h) so that an element's
// value depends only on the seed, the offset and its index; their kernel signatures, the dtypes each
// backend takes, and the argument checks every implementation runs first. Each fill returns the
// number of 128-bit Philox blocks it consumed, by which the caller advances its offset. Element i
// takes the same block and words on every backend, so uniform and integer values and dropout masks
// are bit-identical across backends (normals agree to the rounding of log, sin and cos).
// native/cpu/random.cc and native/cuda/random.cu implement them; native/binding/random.cc exports
// them.
#pragma once
#include <cstdint>
#include "../core/tensor.h"

namespace kiln::ops {

// randUniform: out (contiguous, floating) = uniform values in [low, high); one word per element (two
// for float64).
using RandUniform = uint64_t(const Tensor& out, uint64_t seed, uint64_t offset, double low, double high);
// randNormal: out (contiguous, floating) = mean + std * standard normal (Box-Muller on pairs of
// elements); one word per element (two for float64). The uniforms have 24 (53) bits, so |z| stays
// below 5.8 (8.6) standard deviations, a tail of probability 8e-9 (1e-17).
using RandNormal = uint64_t(const Tensor& out, uint64_t seed, uint64_t offset, double mean, double std);
// randInt: out (contiguous, numeric) = integers in [low, high), two words (64 bits) per element.
using RandInt = uint64_t(const Tensor& out, uint64_t seed, uint64_t offset, int64_t low, int64_t high);
// dropout: out = x * mask / (1 - p) with mask[i] = 1 with probability 1 - p (one word per element);
// out and mask (bool) are contiguous and of x's shape; x may have any strides. 0 <= p < 1.
using Dropout = uint64_t(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out,
                         const Tensor& mask);
// dropoutBackward: out = grad * mask * scale for same-shaped grad, mask and out of any strides.
using DropoutBackward = void(const Tensor& grad, const Tensor& mask, double scale, const Tensor& out);

// The dtypes of the filled or dropped tensor, the same on both backends: floating fills compute the
// half types in float32 and round once; integer fills take the numeric dtypes.
inline constexpr DTypeSet kRandFloatDTypes = kFloatTypes;
inline constexpr DTypeSet kRandIntDTypes{DType::Float32, DType::Float64, DType::Int32, DType::Int64};

// Each kernel's checks. check_rand_int returns high - low, the size of the range.
void check_rand_uniform(const Tensor& out, double low, double high);
void check_rand_normal(const Tensor& out, double mean, double std);
uint64_t check_rand_int(const Tensor& out, int64_t low, int64_t high);
void check_dropout(const Tensor& x, double p, const Tensor& out, const Tensor& mask);
void check_dropout_backward(const Tensor& grad, const Tensor& mask, const Tensor& out);

}  // namespace kiln::ops

namespace kiln::cpu {
ops::RandUniform rand_uniform;
ops::RandNormal rand_normal;
ops::RandInt rand_int;
ops::Dropout dropout_forward;
ops::DropoutBackward dropout_backward;
}  // namespace kiln::cpu

namespace kiln::cuda {
ops::RandUniform rand_uniform;
ops::RandNormal rand_normal;
ops::RandInt rand_int;
ops::Dropout dropout_forward;
ops::DropoutBackward dropout_backward;
}  // namespace kiln::cuda
