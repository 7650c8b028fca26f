// The matmul family's CPU-only entry (bmm's contract is native/ops/matmul.h): gemmRaw runs one GEMM
// implementation directly on 2-D CPU tensors, so tests can check each built-in micro-kernel even when
// OpenBLAS is present and the benchmark can time OpenBLAS without kiln's overhead.
#pragma once
#include "../core/tensor.h"

namespace kiln::cpu {

// The implementations gemmRaw can run: Auto is what matmul uses (gemm()); Builtin the built-in one
// with the best micro-kernel for this CPU; BuiltinBaseline/Avx2/Avx512 one micro-kernel; Blas
// OpenBLAS directly. lib/ names them by gemm_impl_name.
enum class GemmImpl : int32_t { Auto, Builtin, BuiltinBaseline, BuiltinAvx2, BuiltinAvx512, Blas, kCount };
const char* gemm_impl_name(GemmImpl impl);
// Whether this build and CPU run impl (gemm_raw throws a ValueError otherwise).
bool gemm_impl_supported(GemmImpl impl);

// c = alpha * op(a) @ op(b) + beta * c on 2-D float32/float64 CPU tensors with contiguous rows
// (op(x) = x^T when trans), through impl.
using GemmRaw = void(GemmImpl impl, const Tensor& a, const Tensor& b, const Tensor& c, bool trans_a, bool trans_b,
                     double alpha, double beta);
GemmRaw gemm_raw;

}  // namespace kiln::cpu
