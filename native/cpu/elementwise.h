// CPU-internal piece of the elementwise family (its contract is native/ops/elementwise.h): the dtype
// dispatch to CPU storage types that the elementwise and reduce kernels share.
#pragma once
#include "../ops/elementwise.h"

namespace kiln::cpu {

// Calls run(T{}) with T the storage type of dt (bool is uint8_t) when ops taking `kind` take dt;
// otherwise throws DTypeError naming op.
template <ops::ew::DTypes kind, typename Run>
void dispatch(DType dt, const char* op, Run run) {
  using ops::ew::DTypes;
  switch (dt) {
    case DType::Float32: return run(float{});
    case DType::Float64: return run(double{});
    case DType::BFloat16: return run(bf16{});
    case DType::Float16: return run(fp16{});
    case DType::Int32: if constexpr (kind != DTypes::FLOAT) return run(int32_t{}); break;
    case DType::Int64: if constexpr (kind != DTypes::FLOAT) return run(int64_t{}); break;
    case DType::Bool: if constexpr (kind == DTypes::ANY) return run(uint8_t{}); break;
  }
  throw_dtype_unsupported(op, dt);
}

}  // namespace kiln::cpu
