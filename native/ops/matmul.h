// The matmul family's contract, shared by both backends: the batched product every matmul and linear
// reduce to, with the epilogues it may fuse (bias, then GELU), its kernel signature, the dtypes each
// backend takes and the argument checks every implementation runs first. native/cpu/matmul.cc and
// native/cuda/matmul.cu implement it; native/binding/matmul.cc exports it.
#pragma once
#include "../core/tensor.h"

namespace kiln::ops {

// What bmm applies to a @ b + bias before writing out: nothing, or GELU's tanh form (ew::gelu_tanh in
// elementwise.h; cuBLASLt's GELU epilogue is that form too). linearGelu (lib/ops/matmul.ts) is the
// op that asks for GeluTanh.
enum class Epilogue : int32_t { None, GeluTanh, kCount };
const char* epilogue_name(Epilogue e);

// bmm: out[i] = act(a[i] @ b[i] (+ bias on every row)) for a [batch, M, K], b [batch, K, N] of any
// strides (a batch stride of 0 repeats one matrix), out [batch, M, N] contiguous, bias [N] of any
// stride or null, act the epilogue; one dtype throughout. pre (GeluTanh only, may be null) gets the
// activation's input a @ b + bias, laid out like out, for the backward.
using Bmm = void(const Tensor& a, const Tensor& b, const Tensor* bias, Epilogue epilogue, const Tensor& out,
                 const Tensor* pre);

// What each backend computes natively: the CPU's GEMM is float32/float64 (lib/ runs the half types
// through float32); CUDA also multiplies bfloat16/float16, accumulating in float32. float32 uses
// TF32 tensor cores only when allow_tf32().
inline constexpr DTypeSet kBmmCpuDTypes = kFloat32And64;
inline constexpr DTypeSet kBmmCudaDTypes = kFloatTypes;

struct BmmSizes {
  int64_t batch, M, K, N;
};
// Every check of bmm (ranks, shapes, out's and pre's contiguity, dtypes, the bias, pre only with an
// activation); returns the product's sizes.
BmmSizes check_bmm(const Tensor& a, const Tensor& b, const Tensor* bias, Epilogue epilogue, const Tensor& out,
                   const Tensor* pre);

}  // namespace kiln::ops

namespace kiln::cpu {
ops::Bmm bmm;
}  // namespace kiln::cpu

namespace kiln::cuda {
ops::Bmm bmm;
}  // namespace kiln::cuda
