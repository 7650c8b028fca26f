// Binding for the matmul family: bmm (native/ops/matmul.h), the batched product matmul and linear
// reduce to, with an optional fused bias and activation (the epilogue codes: bmmEpilogues); gemmRaw (native/cpu/matmul.h), a CPU-only entry to one GEMM
// implementation, with its implementations' codes (gemmImpls) and those this build and CPU run
// (gemmKernels, besides 'auto').
#include "../cpu/matmul.h"
#include "../ops/matmul.h"
#include "op_table.h"

namespace kiln::binding {

void register_matmul(Napi::Env env, Napi::Object exports) {
  KILN_KERNEL(env, exports, "bmm", "matmul", ops::Bmm, bmm, "a b bias epilogue out pre", ops::kBmmCpuDTypes,
              ops::kBmmCudaDTypes);
  export_enum(env, exports, "bmmEpilogues", ops::epilogue_name);
  KILN_CPU_KERNEL(env, exports, "gemmRaw", "gemmRaw", cpu::GemmRaw, gemm_raw, "impl a b c transA transB alpha beta",
                  kFloat32And64);
  export_enum(env, exports, "gemmImpls", cpu::gemm_impl_name);
  auto supported = Napi::Array::New(env);
  uint32_t n = 0;
  for (int32_t i = 0; i < int32_t(cpu::GemmImpl::kCount); i++) {
    const auto impl = cpu::GemmImpl(i);
    if (impl != cpu::GemmImpl::Auto && cpu::gemm_impl_supported(impl))
      supported.Set(n++, Napi::String::New(env, cpu::gemm_impl_name(impl)));
  }
  exports.Set("gemmKernels", supported);
}

}  // namespace kiln::binding
