// Binding for the matmul family: bmm (the batched product matmul and linear reduce to, with an
// optional fused bias); gemmRaw, a direct entry to one GEMM implementation on 2-D CPU tensors that
// tests use to check each built-in micro-kernel even when OpenBLAS is present and the benchmark uses
// to time OpenBLAS without kiln's overhead; and gemmKernels, the implementations this machine runs.
#include <string>
#include "../cpu/gemm.h"
#include "../cpu/matmul.h"
#include "common.h"
#ifdef KILN_CUDA
#include "../cuda/matmul.h"
#endif

namespace kiln::binding {

// bmm(a [batch, M, K], b [batch, K, N], bias [N] | null, out [batch, M, N]): out = a @ b (+ bias).
static Napi::Value bmm(const Napi::CallbackInfo& info) {
  const char* op = "matmul";
  Tensor& a = tensor_arg(info, 0, op, "a");
  Tensor& b = tensor_arg(info, 1, op, "b");
  Tensor* bias = optional_tensor_arg(info, 2, op, "bias");
  Tensor& out = tensor_arg(info, 3, op, "out");
  check_same_device(op, {&a, &b, bias, &out});
  check_same_dtype(op, {&a, &b, bias, &out});
  KILN_ON_DEVICE(op, out.device(), cpu::bmm(a, b, bias, out), cuda::bmm(a, b, bias, out));
  return info.Env().Undefined();
}

struct GemmImpl {
  const char* name;
  bool blas;
  cpu::GemmKernel kernel;
};
static const GemmImpl kGemmImpls[] = {
    {"builtin", false, cpu::GemmKernel::Auto},        {"builtin:baseline", false, cpu::GemmKernel::Baseline},
    {"builtin:avx2", false, cpu::GemmKernel::Avx2},   {"builtin:avx512", false, cpu::GemmKernel::Avx512},
    {"blas", true, cpu::GemmKernel::Auto},
};

// gemmKernels() -> the gemmRaw implementations this build and CPU run, besides 'auto'.
static Napi::Value gemm_kernels(const Napi::CallbackInfo& info) {
  auto out = Napi::Array::New(info.Env());
  uint32_t n = 0;
  for (const GemmImpl& g : kGemmImpls)
    if (g.blas ? cpu::have_blas() : cpu::gemm_kernel_supported(g.kernel)) out.Set(n++, Napi::String::New(info.Env(), g.name));
  return out;
}

// The row stride gemm gets for a 2-D tensor whose rows are contiguous.
static int64_t row_stride(const char* op, const char* name, const Tensor& t) {
  KILN_CHECK(t.dim() == 2, Shape, op, "argument '", name, "' must be 2-D, got ", shape_str(t.shape));
  KILN_CHECK(t.shape[1] <= 1 || t.strides[1] == 1, Value, op, "argument '", name, "' must have contiguous rows");
  return t.shape[0] <= 1 ? std::max<int64_t>(t.shape[1], 1) : t.strides[0];
}

// gemmRaw(impl, a, b, c, transA, transB, alpha, beta): c = alpha * op(a) @ op(b) + beta * c on CPU
// tensors with contiguous rows (op(x) = x^T when trans); impl is 'auto' (what matmul uses) or one of
// kGemmImpls ('builtin' picks the best micro-kernel; 'blas' is OpenBLAS, a ValueError without it).
static Napi::Value gemm_raw(const Napi::CallbackInfo& info) {
  const char* op = "gemmRaw";
  KILN_CHECK(info.Length() > 0 && info[0].IsString(), Value, op, "argument 'impl' must be a string");
  const std::string impl = info[0].As<Napi::String>().Utf8Value();
  const GemmImpl* chosen = nullptr;
  for (const GemmImpl& g : kGemmImpls)
    if (impl == g.name) chosen = &g;
  KILN_CHECK(impl == "auto" || chosen, Value, op, "unknown GEMM implementation '", impl, "'");
  Tensor& a = tensor_arg(info, 1, op, "a");
  Tensor& b = tensor_arg(info, 2, op, "b");
  Tensor& c = tensor_arg(info, 3, op, "c");
  const bool ta = bool_arg(info, 4, op, "transA"), tb = bool_arg(info, 5, op, "transB");
  const double alpha = number_arg(info, 6, op, "alpha"), beta = number_arg(info, 7, op, "beta");
  check_same_dtype(op, {&a, &b, &c});
  KILN_CHECK(a.device().is_cpu() && b.device().is_cpu() && c.device().is_cpu(), Device, op, "expects CPU tensors");
  const int64_t lda = row_stride(op, "a", a), ldb = row_stride(op, "b", b), ldc = row_stride(op, "c", c);
  const int64_t M = ta ? a.shape[1] : a.shape[0], K = ta ? a.shape[0] : a.shape[1];
  const int64_t N = tb ? b.shape[0] : b.shape[1], Kb = tb ? b.shape[1] : b.shape[0];
  KILN_CHECK(K == Kb && c.shape == Shape({M, N}), Shape, op, "shapes ", shape_str(a.shape), ", ", shape_str(b.shape),
             " and ", shape_str(c.shape), " do not fit with transA=", ta, " transB=", tb);
  KILN_DISPATCH_FLOAT(c.dtype, op, {
    const scalar_t al = scalar_t(alpha), be = scalar_t(beta);
    const scalar_t *A = a.data<scalar_t>(), *B = b.data<scalar_t>();
    scalar_t* C = c.data<scalar_t>();
    if (!chosen)
      cpu::gemm<scalar_t>(ta, tb, M, N, K, al, A, lda, B, ldb, be, C, ldc);
    else if (chosen->blas)
      cpu::gemm_blas<scalar_t>(ta, tb, M, N, K, al, A, lda, B, ldb, be, C, ldc);
    else
      cpu::gemm_builtin<scalar_t>(ta, tb, M, N, K, al, A, lda, B, ldb, be, C, ldc, chosen->kernel);
  });
  return info.Env().Undefined();
}

void register_matmul(Napi::Env env, Napi::Object exports) {
  KILN_EXPORT(env, exports, "bmm", bmm);
  KILN_EXPORT(env, exports, "gemmRaw", gemm_raw);
  KILN_EXPORT(env, exports, "gemmKernels", gemm_kernels);
}

}  // namespace kiln::binding
