// Device-side pieces of the elementwise family that the CUDA elementwise and reduce kernels share
// (the contract is native/ops/elementwise.h): the compute type of the CUDA half types (float), so
// that the shared formulas and compute_t work on device element types, and the dtype dispatch to
// CUDA storage types.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include "../ops/elementwise.h"

namespace kiln::ops {
template <> struct compute_type<__nv_bfloat16> { using type = float; };
template <> struct compute_type<__half> { using type = float; };
}  // namespace kiln::ops

namespace kiln::cuda {

template <typename T>
struct Tag {
  using type = T;
};
template <typename TagT>
using T_of = typename std::remove_reference_t<TagT>::type;

// Runs run(Tag<T>) with T the CUDA storage type of dt when dt is of kind kTakes; otherwise
// DTypeError. float16 has no CUDA elementwise or reduce kernels (kElementwiseCudaDTypes).
template <ops::ew::DTypes kTakes, typename Run>
void dispatch(DType dt, const char* name, Run run) {
  constexpr bool ints = kTakes != ops::ew::DTypes::FLOAT;
  constexpr bool bools = kTakes == ops::ew::DTypes::ANY;
  switch (dt) {
    case DType::Float32: return run(Tag<float>{});
    case DType::Float64: return run(Tag<double>{});
    case DType::BFloat16: return run(Tag<__nv_bfloat16>{});
    case DType::Int32: if constexpr (ints) return run(Tag<int32_t>{}); break;
    case DType::Int64: if constexpr (ints) return run(Tag<int64_t>{}); break;
    case DType::Bool: if constexpr (bools) return run(Tag<uint8_t>{}); break;
    default: break;
  }
  throw_dtype_unsupported(name, dt);
}

}  // namespace kiln::cuda
