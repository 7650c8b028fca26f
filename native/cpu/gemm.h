// General matrix multiply on the CPU for float and double, row-major:
//   C[M, N] = alpha * op(A)[M, K] @ op(B)[K, N] + beta * C
// op(X) is X or its transpose (then X is stored [K, M] / [N, K]). lda/ldb/ldc are row strides in
// elements of the matrices as stored. beta == 0 overwrites C without reading it (it may hold NaN).
#pragma once
#include <cstdint>

namespace kiln::cpu {

// What matmul runs: OpenBLAS when the build has it (KILN_OPENBLAS) and the sizes fit its integers,
// else the built-in implementation.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// The built-in implementation's micro-kernels; Auto is the best one the CPU runs.
enum class GemmKernel { Auto, Baseline, Avx2, Avx512 };
bool gemm_kernel_supported(GemmKernel kernel);

// The built-in cache-blocked implementation, whatever the build; threads over blocks of C unless
// called from inside a parallel region. Tests and the benchmark call it directly (with each kernel the
// CPU supports) to check it against a reference and OpenBLAS. An unsupported kernel is a ValueError.
template <typename T>
void gemm_builtin(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                  const T* B, int64_t ldb, T beta, T* C, int64_t ldc, GemmKernel kernel = GemmKernel::Auto);

// True when the build links OpenBLAS.
bool have_blas();

// OpenBLAS's cblas_?gemm with the thread count set to kiln's; throws ValueError when the build has no
// OpenBLAS or a size does not fit its integer type.
template <typename T>
void gemm_blas(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
               const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// `batch` independent products; matrix i of A starts at A + i * stride_a (stride 0 repeats one matrix),
// likewise B and C. Many small products run one per thread; larger ones each use every thread.
template <typename T>
void gemm_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                  int64_t stride_a, int64_t lda, const T* B, int64_t stride_b, int64_t ldb, T beta, T* C,
                  int64_t stride_c, int64_t ldc);

}  // namespace kiln::cpu
