// CPU batched matrix product on strided 3-D operands: picks gemm's transpose flags and row strides
// from each operand's layout (copying only operands that are neither row- nor column-major), fills
// the output with the bias first when there is one, then runs gemm over the batch; a GELU epilogue
// then maps the product in one more pass (the twin of cuBLASLt's fused epilogue: the elementwise
// gelu_tanh kernel itself, so the fused and unfused paths agree bit for bit).
// Also gemmRaw, the direct entry to one GEMM implementation (matmul.h).
#include "matmul.h"
#include <algorithm>
#include "../core/parallel.h"
#include "../ops/elementwise.h"
#include "../ops/matmul.h"
#include "copy.h"
#include "gemm.h"

namespace kiln::cpu {
namespace {

// How gemm reads the [R, C] matrices of a 3-D operand.
struct GemmOperand {
  const void* data;
  int64_t batch_stride;
  bool trans;  // stored as [C, R] row-major
  int64_t ld;
  Tensor copy;  // owns the data when the operand had to be copied
};

GemmOperand gemm_operand(const Tensor& x) {
  const int64_t R = x.shape[1], C = x.shape[2], s0 = x.strides[1], s1 = x.strides[2];
  if ((s1 == 1 || C <= 1) && (R <= 1 || s0 >= std::max<int64_t>(C, 1)))
    return {x.data_ptr(), x.strides[0], false, R <= 1 ? std::max<int64_t>(C, 1) : s0, {}};
  if ((s0 == 1 || R <= 1) && (C <= 1 || s1 >= std::max<int64_t>(R, 1)))
    return {x.data_ptr(), x.strides[0], true, C <= 1 ? std::max<int64_t>(R, 1) : s1, {}};
  // A broadcast batch (stride 0) copies one matrix, not all of them.
  Tensor src = x;
  const bool repeated = x.strides[0] == 0;
  if (repeated) src.shape[0] = std::min<int64_t>(x.shape[0], 1);
  Tensor c = Tensor::empty(src.shape, x.dtype, x.device());
  copy(src, c);
  GemmOperand op{c.data_ptr(), repeated ? 0 : R * C, false, std::max<int64_t>(C, 1), {}};
  op.copy = std::move(c);
  return op;
}

template <typename T>
void fill_bias(const Tensor& bias, const Tensor& out) {
  const int64_t rows = out.shape[0] * out.shape[1], N = out.shape[2], sb = bias.strides[0];
  const T* b = bias.data<T>();
  T* o = out.data<T>();
  parallel_for(rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(N, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++)
      for (int64_t j = 0; j < N; j++) o[r * N + j] = b[j * sb];
  });
}

}  // namespace

void bmm(const Tensor& a, const Tensor& b, const Tensor* bias, ops::Epilogue epilogue, const Tensor& out,
         const Tensor* pre) {
  const ops::BmmSizes z = ops::check_bmm(a, b, bias, epilogue, out, pre);
  const int64_t batch = z.batch, M = z.M, K = z.K, N = z.N;
  if (out.numel() == 0) return;
  // The product goes where the activation's input is wanted, then the epilogue maps it into out.
  const Tensor& prod = pre ? *pre : out;
  KILN_DISPATCH_FLOAT(out.dtype, "matmul", {
    if (bias) fill_bias<scalar_t>(*bias, prod);
    const GemmOperand A = gemm_operand(a), B = gemm_operand(b);
    gemm_batched<scalar_t>(A.trans, B.trans, batch, M, N, K, scalar_t(1), static_cast<const scalar_t*>(A.data),
                           A.batch_stride, A.ld, static_cast<const scalar_t*>(B.data), B.batch_stride, B.ld,
                           scalar_t(bias ? 1 : 0), prod.data<scalar_t>(), M * N, N);
  });
  if (epilogue == ops::Epilogue::GeluTanh) unary(ops::UnaryOp::gelu_tanh, prod, out, 0, 0);
}

namespace {

struct GemmImplInfo {
  const char* name;
  bool blas;
  GemmKernel kernel;
};
// Indexed by GemmImpl.
constexpr GemmImplInfo kGemmImpls[] = {
    {"auto", false, GemmKernel::Auto},
    {"builtin", false, GemmKernel::Auto},
    {"builtin:baseline", false, GemmKernel::Baseline},
    {"builtin:avx2", false, GemmKernel::Avx2},
    {"builtin:avx512", false, GemmKernel::Avx512},
    {"blas", true, GemmKernel::Auto},
};
static_assert(sizeof(kGemmImpls) / sizeof(kGemmImpls[0]) == size_t(GemmImpl::kCount), "one entry per GemmImpl");

// The row stride gemm gets for a 2-D tensor whose rows are contiguous.
int64_t row_stride(const char* op, const char* name, const Tensor& t) {
  KILN_CHECK(t.dim() == 2, Shape, op, "argument '", name, "' must be 2-D, got ", shape_str(t.shape));
  KILN_CHECK(t.shape[1] <= 1 || t.strides[1] == 1, Value, op, "argument '", name, "' must have contiguous rows");
  return t.shape[0] <= 1 ? std::max<int64_t>(t.shape[1], 1) : t.strides[0];
}

}  // namespace

const char* gemm_impl_name(GemmImpl impl) { return kGemmImpls[int32_t(impl)].name; }

bool gemm_impl_supported(GemmImpl impl) {
  const GemmImplInfo& g = kGemmImpls[int32_t(impl)];
  return g.blas ? have_blas() : gemm_kernel_supported(g.kernel);
}

void gemm_raw(GemmImpl impl, const Tensor& a, const Tensor& b, const Tensor& c, bool ta, bool tb, double alpha,
              double beta) {
  const char* op = "gemmRaw";
  const GemmImplInfo& g = kGemmImpls[int32_t(impl)];
  KILN_CHECK(a.dtype == b.dtype && a.dtype == c.dtype, DType, op, "dtypes differ: ", dtype_name(a.dtype), ", ",
             dtype_name(b.dtype), " and ", dtype_name(c.dtype));
  const int64_t lda = row_stride(op, "a", a), ldb = row_stride(op, "b", b), ldc = row_stride(op, "c", c);
  const int64_t M = ta ? a.shape[1] : a.shape[0], K = ta ? a.shape[0] : a.shape[1];
  const int64_t N = tb ? b.shape[0] : b.shape[1], Kb = tb ? b.shape[1] : b.shape[0];
  KILN_CHECK(K == Kb && c.shape == Shape({M, N}), Shape, op, "shapes ", shape_str(a.shape), ", ", shape_str(b.shape),
             " and ", shape_str(c.shape), " do not fit with transA=", ta, " transB=", tb);
  KILN_DISPATCH_FLOAT(c.dtype, op, {
    const scalar_t al = scalar_t(alpha), be = scalar_t(beta);
    const scalar_t *A = a.data<scalar_t>(), *B = b.data<scalar_t>();
    scalar_t* C = c.data<scalar_t>();
    if (impl == GemmImpl::Auto)
      gemm<scalar_t>(ta, tb, M, N, K, al, A, lda, B, ldb, be, C, ldc);
    else if (g.blas)
      gemm_blas<scalar_t>(ta, tb, M, N, K, al, A, lda, B, ldb, be, C, ldc);
    else
      gemm_builtin<scalar_t>(ta, tb, M, N, K, al, A, lda, B, ldb, be, C, ldc, g.kernel);
  });
}

}  // namespace kiln::cpu
