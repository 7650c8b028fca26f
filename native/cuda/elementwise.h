// CUDA elementwise kernels (twins of native/cpu/elementwise.h): unary with scalar parameters,
// binary, where. Under nvcc this header also gives the CUDA half types their compute type
// (float), so the shared formulas and compute_t work on device element types, and holds the dtype
// dispatch to CUDA storage types that the elementwise and reduce kernels share.
#pragma once
#include "../cpu/elementwise.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
namespace kiln {
template <> struct compute_type<__nv_bfloat16> { using type = float; };
template <> struct compute_type<__half> { using type = float; };

namespace cuda {
template <typename T>
struct Tag {
  using type = T;
};
template <typename TagT>
using T_of = typename std::remove_reference_t<TagT>::type;

// Runs run(Tag<T>) with T the CUDA storage type of dt when dt is of kind kTakes; otherwise
// DTypeError. float16 has no CUDA elementwise or reduce kernels.
template <ew::DTypes kTakes, typename Run>
void dispatch(DType dt, const char* name, Run run) {
  constexpr bool ints = kTakes != ew::DTypes::FLOAT;
  constexpr bool bools = kTakes == ew::DTypes::ANY;
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
}  // namespace cuda
}  // namespace kiln
#endif

namespace kiln::cuda {
void unary(UnaryOp op, const Tensor& x, const Tensor& out, double s0, double s1);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double s0, double s1);
void where(const Tensor& cond, const Tensor* a, const Tensor* b, double sa, double sb, const Tensor& out);
}  // namespace kiln::cuda
