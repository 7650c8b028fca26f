// GEMM for float and double: OpenBLAS's cblas_?gemm when the build has it; otherwise (and for tests
// and the benchmark, always available) a built-in BLIS-style implementation: a KC x NC block of op(B)
// packed into NR-column panels shared by all threads, MC x KC blocks of op(A) packed per thread into
// MR-row panels, and an MR x NR register-blocked micro-kernel written with GCC vector extensions. The
// micro-kernel is compiled for AVX-512, for AVX2+FMA and for the baseline ISA the build targets (the
// build itself targets x86-64-v2), each with its own register tile, and the best one the CPU runs is
// picked at run time.
#include "gemm.h"
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include "../core/error.h"
#include "../core/parallel.h"
#ifdef KILN_OPENBLAS
#include <cblas.h>
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define KILN_GEMM_X86 1
#endif

namespace kiln::cpu {
namespace {

// One micro-kernel build: VB-byte vectors, an MR x NR tile of accumulators (NR = two vectors), and cache
// blocks: an MC x KC block of A (144 KiB) stays in L2, a KC x NR panel of B in L1, the KC x NC block
// of B in L3. AVX-512 has 32 registers (24 accumulators), AVX2 16 (12), SSE/NEON-class 16 (8).
template <typename T, int64_t VB, int64_t MRows>
struct Tile {
  static constexpr int64_t VecBytes = VB, W = VB / int64_t(sizeof(T)), MR = MRows, NR = 2 * W;
  static constexpr int64_t KC = 256, MC = sizeof(T) == 4 ? 144 : 72, NC = 3072;
  static_assert(MC % MR == 0 && NC % NR == 0, "blocks must hold whole tiles");
};
template <typename T>
using TileAvx512 = Tile<T, 64, 12>;
template <typename T>
using TileAvx2 = Tile<T, 32, 6>;
template <typename T>
using TileBase = Tile<T, 16, 4>;

template <typename T, int64_t VB>
struct VecOf {
  typedef T type __attribute__((vector_size(VB)));
};

// Multiply-adds per thread (tens of microseconds): small products use fewer threads, as waking more
// costs more than they save.
constexpr double kWorkPerThread = 2097152;
// Batched products below this size run one per thread instead of each using every thread.
constexpr double kBatchSplitWork = 128.0 * 128.0 * 128.0;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Threads a product may use: one inside a parallel region (parallel_for runs serially there).
int64_t usable_threads() {
#ifdef _OPENMP
  if (omp_in_parallel()) return 1;
#endif
  return num_threads();
}

// A growing 64-byte aligned buffer per thread and purpose, reused across calls so that packing does
// not fault in fresh pages every time. Null when the allocation fails.
template <typename T, int Tag>
T* scratch(int64_t n) {
  struct Buf {
    T* p = nullptr;
    int64_t cap = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf buf;
  if (n > buf.cap) {
    std::free(buf.p);
    buf.p = static_cast<T*>(std::aligned_alloc(64, size_t(round_up(n * int64_t(sizeof(T)), 64))));
    buf.cap = buf.p ? n : 0;
  }
  return buf.p;
}

// Packs op(A)[0:mc, 0:kc] (A points at its first element) into MR-row panels: element (r + i, k) of
// panel r goes to dst[r * kc + k * MR + i]; rows past mc are zero.
template <typename T, int64_t MR>
void pack_a(bool trans, const T* A, int64_t lda, int64_t mc, int64_t kc, T* dst) {
  for (int64_t r = 0; r < mc; r += MR) {
    const int64_t mr = std::min(MR, mc - r);
    T* d = dst + r * kc;
    if (trans) {
      for (int64_t k = 0; k < kc; k++) {
        const T* s = A + k * lda + r;
        for (int64_t i = 0; i < mr; i++) d[k * MR + i] = s[i];
        for (int64_t i = mr; i < MR; i++) d[k * MR + i] = T(0);
      }
    } else {
      for (int64_t i = 0; i < mr; i++) {
        const T* s = A + (r + i) * lda;
        for (int64_t k = 0; k < kc; k++) d[k * MR + i] = s[k];
      }
      for (int64_t i = mr; i < MR; i++)
        for (int64_t k = 0; k < kc; k++) d[k * MR + i] = T(0);
    }
  }
}

// Packs panels [p0, p1) of op(B)[0:kc, 0:nc] into NR-column panels: element (k, p * NR + j) goes to
// dst[p * NR * kc + k * NR + j]; columns past nc are zero.
template <typename T, int64_t NR>
void pack_b(bool trans, const T* B, int64_t ldb, int64_t kc, int64_t nc, int64_t p0, int64_t p1, T* dst) {
  for (int64_t p = p0; p < p1; p++) {
    const int64_t j0 = p * NR, nr = std::min(NR, nc - j0);
    T* d = dst + j0 * kc;
    if (trans) {
      for (int64_t j = 0; j < nr; j++) {
        const T* s = B + (j0 + j) * ldb;
        for (int64_t k = 0; k < kc; k++) d[k * NR + j] = s[k];
      }
      for (int64_t j = nr; j < NR; j++)
        for (int64_t k = 0; k < kc; k++) d[k * NR + j] = T(0);
    } else {
      for (int64_t k = 0; k < kc; k++) {
        const T* s = B + k * ldb + j0;
        for (int64_t j = 0; j < nr; j++) d[k * NR + j] = s[j];
        for (int64_t j = nr; j < NR; j++) d[k * NR + j] = T(0);
      }
    }
  }
}

// C[0:mr, 0:nr] = alpha * (Ap panel @ Bp panel) + beta * C, with beta == 0 not reading C.
template <typename T, typename Tl>
[[gnu::always_inline]] inline void micro_kernel(int64_t kc, const T* __restrict Ap, const T* __restrict Bp, T* C,
                                                int64_t ldc, int64_t mr, int64_t nr, T alpha, T beta) {
  using V = typename VecOf<T, Tl::VecBytes>::type;
  constexpr int64_t MR = Tl::MR, NR = Tl::NR, W = Tl::W, NV = NR / W;
  V acc[MR][NV] = {};
  for (int64_t k = 0; k < kc; k++) {
    V b[NV];
    for (int64_t j = 0; j < NV; j++) std::memcpy(&b[j], Bp + k * NR + j * W, sizeof(V));
    for (int64_t i = 0; i < MR; i++) {
      const T a = Ap[k * MR + i];
      for (int64_t j = 0; j < NV; j++) acc[i][j] += a * b[j];
    }
  }
  if (mr == MR && nr == NR) {
    for (int64_t i = 0; i < MR; i++) {
      for (int64_t j = 0; j < NV; j++) {
        T* c = C + i * ldc + j * W;
        V r = alpha * acc[i][j];
        if (beta != T(0)) {
          V old;
          std::memcpy(&old, c, sizeof(V));
          r += beta * old;
        }
        std::memcpy(c, &r, sizeof(V));
      }
    }
    return;
  }
  T tile[MR * NR];
  std::memcpy(tile, acc, sizeof tile);
  for (int64_t i = 0; i < mr; i++) {
    for (int64_t j = 0; j < nr; j++) {
      T& c = C[i * ldc + j];
      c = beta != T(0) ? alpha * tile[i * NR + j] + beta * c : alpha * tile[i * NR + j];
    }
  }
}

// One packed mc x kc block of A times the packed kc x nc block of B into C.
template <typename T, typename Tl>
[[gnu::always_inline]] inline void macro_body(int64_t mc, int64_t nc, int64_t kc, const T* Ap, const T* Bp, T* C,
                                              int64_t ldc, T alpha, T beta) {
  for (int64_t jr = 0; jr < nc; jr += Tl::NR)
    for (int64_t ir = 0; ir < mc; ir += Tl::MR)
      micro_kernel<T, Tl>(kc, Ap + ir * kc, Bp + jr * kc, C + ir * ldc + jr, ldc, std::min(Tl::MR, mc - ir),
                          std::min(Tl::NR, nc - jr), alpha, beta);
}

template <typename T>
void macro_base(int64_t mc, int64_t nc, int64_t kc, const T* Ap, const T* Bp, T* C, int64_t ldc, T alpha, T beta) {
  macro_body<T, TileBase<T>>(mc, nc, kc, Ap, Bp, C, ldc, alpha, beta);
}

#ifdef KILN_GEMM_X86
template <typename T>
__attribute__((target("avx2,fma"))) void macro_avx2(int64_t mc, int64_t nc, int64_t kc, const T* Ap, const T* Bp,
                                                    T* C, int64_t ldc, T alpha, T beta) {
  macro_body<T, TileAvx2<T>>(mc, nc, kc, Ap, Bp, C, ldc, alpha, beta);
}
template <typename T>
__attribute__((target("avx512f"))) void macro_avx512(int64_t mc, int64_t nc, int64_t kc, const T* Ap, const T* Bp,
                                                     T* C, int64_t ldc, T alpha, T beta) {
  macro_body<T, TileAvx512<T>>(mc, nc, kc, Ap, Bp, C, ldc, alpha, beta);
}
#endif

bool cpu_supports(GemmKernel k) {
#ifdef KILN_GEMM_X86
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (k == GemmKernel::Avx2) return avx2;
  if (k == GemmKernel::Avx512) return avx512;
#else
  if (k == GemmKernel::Avx2 || k == GemmKernel::Avx512) return false;
#endif
  return true;
}

GemmKernel best_kernel() {
  static const GemmKernel k = cpu_supports(GemmKernel::Avx512) ? GemmKernel::Avx512
                              : cpu_supports(GemmKernel::Avx2) ? GemmKernel::Avx2
                                                               : GemmKernel::Baseline;
  return k;
}

// C = beta * C (zero when beta is 0): the whole product when K or alpha is 0.
template <typename T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
}

// Row strides must cover a row whenever there is more than one row; a single row may have any.
void check_ld(const char* which, int64_t rows, int64_t cols, int64_t ld) {
  KILN_CHECK(rows <= 1 || ld >= cols, Value, "gemm", which, " = ", ld, " is less than the ", cols,
             " columns of a stored matrix of ", rows, " rows");
}

void check_args(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
  KILN_CHECK(M >= 0 && N >= 0 && K >= 0, Value, "gemm", "negative size M=", M, " N=", N, " K=", K);
  check_ld("lda", ta ? K : M, ta ? M : K, lda);
  check_ld("ldb", tb ? N : K, tb ? K : N, ldb);
  check_ld("ldc", M, N, ldc);
}

template <typename T>
using MacroFn = void (*)(int64_t, int64_t, int64_t, const T*, const T*, T*, int64_t, T, T);

// The blocked product for one tile shape on checked arguments (M, N, K > 0, alpha != 0). Returns
// false when a packing buffer could not be allocated (it may run inside a parallel region, so it
// does not throw).
template <typename T, typename Tl>
bool blocked(MacroFn<T> macro, bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
             const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const int64_t nt = std::clamp<int64_t>(int64_t(double(M) * double(N) * double(K) / kWorkPerThread), 1,
                                          usable_threads());
  // Row blocks of at most about MC rows, as many as a multiple of the thread count, each a whole number
  // of MR-row panels and within one panel of each other in height. Fewer blocks than threads (a short
  // A) split the columns too.
  const int64_t panels = ceil_div(M, Tl::MR);
  const int64_t mb = std::min(panels, round_up(ceil_div(M, Tl::MC), nt));
  auto row0 = [&](int64_t ib) { return std::min(M, ib * panels / mb * Tl::MR); };
  const int64_t mc_max = ceil_div(panels, mb) * Tl::MR;
  T* Bp = scratch<T, 0>(std::min(K, Tl::KC) * round_up(std::min(N, Tl::NC), Tl::NR));
  if (!Bp) return false;
  std::atomic<bool> failed{false};
  for (int64_t jc = 0; jc < N; jc += Tl::NC) {
    const int64_t nc = std::min(Tl::NC, N - jc);
    const int64_t np = ceil_div(nc, Tl::NR);
    const int64_t per = ceil_div(np, std::min(np, ceil_div(nt, mb)));  // column panels per task
    const int64_t nsplit = ceil_div(np, per);
    const int64_t tasks = mb * nsplit;
    for (int64_t pc = 0; pc < K; pc += Tl::KC) {
      const int64_t kc = std::min(Tl::KC, K - pc);
      const T* Bsrc = tb ? B + jc * ldb + pc : B + pc * ldb + jc;
      parallel_for(np, nt > 1 ? ceil_div(np, nt) : np + 1,
                   [&](int64_t p0, int64_t p1) { pack_b<T, Tl::NR>(tb, Bsrc, ldb, kc, nc, p0, p1, Bp); });
      const T beta_k = pc == 0 ? beta : T(1);
      parallel_for(tasks, nt > 1 ? ceil_div(tasks, nt) : tasks + 1, [&](int64_t t0, int64_t t1) {
        T* Ap = scratch<T, 1>(mc_max * kc);
        if (!Ap) {
          failed = true;
          return;
        }
        int64_t packed = -1;
        for (int64_t t = t0; t < t1; t++) {
          const int64_t ib = t / nsplit, js = t % nsplit;
          const int64_t i0 = row0(ib), m = row0(ib + 1) - i0;
          if (ib != packed) {
            pack_a<T, Tl::MR>(ta, ta ? A + pc * lda + i0 : A + i0 * lda + pc, lda, m, kc, Ap);
            packed = ib;
          }
          const int64_t j0 = js * per * Tl::NR, n = std::min(per * Tl::NR, nc - j0);
          macro(m, n, kc, Ap, Bp + j0 * kc, C + i0 * ldc + jc + j0, ldc, alpha, beta_k);
        }
      });
      if (failed) return false;
    }
  }
  return true;
}

// The built-in product with one micro-kernel (Auto: the best this CPU runs) on checked arguments.
template <typename T>
bool builtin_unchecked(GemmKernel kernel, bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                       int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return true;
  if (K == 0 || alpha == T(0)) {
    scale_c(M, N, beta, C, ldc);
    return true;
  }
  switch (kernel == GemmKernel::Auto ? best_kernel() : kernel) {
#ifdef KILN_GEMM_X86
    case GemmKernel::Avx512:
      return blocked<T, TileAvx512<T>>(macro_avx512<T>, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    case GemmKernel::Avx2:
      return blocked<T, TileAvx2<T>>(macro_avx2<T>, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
    default:
      return blocked<T, TileBase<T>>(macro_base<T>, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

void throw_oom() { throw Error(ErrorCode::OutOfMemory, "gemm", "cannot allocate a packing buffer"); }

#ifdef KILN_OPENBLAS
bool fits_blas(std::initializer_list<int64_t> v) {
  for (int64_t x : v)
    if (x > int64_t(std::numeric_limits<blasint>::max())) return false;
  return true;
}

void blas_call(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint M, blasint N, blasint K, float alpha, const float* A,
               blasint lda, const float* B, blasint ldb, float beta, float* C, blasint ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void blas_call(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint M, blasint N, blasint K, double alpha, const double* A,
               blasint lda, const double* B, blasint ldb, double beta, double* C, blasint ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// OpenBLAS rejects (with a message on stderr, and no result) row strides below the stored width even
// for a single row, where kiln allows any; checked arguments make that the only case to fix up.
int64_t blas_ld(int64_t rows, int64_t cols, int64_t ld) { return rows <= 1 ? std::max<int64_t>({ld, cols, 1}) : ld; }

// OpenBLAS on checked arguments; false (and nothing done) when a size or stride exceeds its integers.
template <typename T>
bool blas_unchecked(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                    int64_t ldb, T beta, T* C, int64_t ldc) {
  lda = blas_ld(ta ? K : M, ta ? M : K, lda);
  ldb = blas_ld(tb ? N : K, tb ? K : N, ldb);
  ldc = blas_ld(M, N, ldc);
  if (!fits_blas({M, N, K, lda, ldb, ldc})) return false;
  if (M == 0 || N == 0) return true;
  if (K == 0) {
    scale_c(M, N, beta, C, ldc);
    return true;
  }
  // OpenBLAS keeps its own thread pool: follow kiln's thread count (set again only when it changes, as
  // OpenBLAS clamps it to the maximum it was built for).
  static std::atomic<int> applied{-1};
  const int nt = int(usable_threads());
  if (applied.exchange(nt) != nt) openblas_set_num_threads(nt);
  blas_call(ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blasint(M), blasint(N), blasint(K), alpha,
            A, blasint(lda), B, blasint(ldb), beta, C, blasint(ldc));
  return true;
}
#endif

}  // namespace

bool have_blas() {
#ifdef KILN_OPENBLAS
  return true;
#else
  return false;
#endif
}

bool gemm_kernel_supported(GemmKernel kernel) { return kernel == GemmKernel::Auto || cpu_supports(kernel); }

template <typename T>
void gemm_builtin(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                  int64_t ldb, T beta, T* C, int64_t ldc, GemmKernel kernel) {
  check_args(ta, tb, M, N, K, lda, ldb, ldc);
  KILN_CHECK(gemm_kernel_supported(kernel), Value, "gemm", "this CPU cannot run the requested micro-kernel");
  if (!builtin_unchecked(kernel, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) throw_oom();
}

template <typename T>
void gemm_blas(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
               int64_t ldb, T beta, T* C, int64_t ldc) {
  check_args(ta, tb, M, N, K, lda, ldb, ldc);
#ifdef KILN_OPENBLAS
  KILN_CHECK(blas_unchecked(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), Value, "gemm", "sizes M=", M,
             " N=", N, " K=", K, " or row strides exceed OpenBLAS's integer range");
#else
  throw Error(ErrorCode::Value, "gemm", "kiln was built without OpenBLAS");
#endif
}

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
#ifdef KILN_OPENBLAS
  check_args(ta, tb, M, N, K, lda, ldb, ldc);
  // Products too large for OpenBLAS's integers fall back to the built-in kernel.
  if (blas_unchecked(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
#endif
  gemm_builtin(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, GemmKernel::Auto);
}

template <typename T>
void gemm_batched(bool ta, bool tb, int64_t batch, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                  int64_t stride_a, int64_t lda, const T* B, int64_t stride_b, int64_t ldb, T beta, T* C,
                  int64_t stride_c, int64_t ldc) {
  check_args(ta, tb, M, N, K, lda, ldb, ldc);
  KILN_CHECK(batch >= 0, Value, "gemm", "negative batch ", batch);
  KILN_CHECK(batch <= 1 || M == 0 || N == 0 || stride_c >= (M - 1) * ldc + N, Value, "gemm", "output matrices overlap");
  // Small products: one per thread, each on the built-in kernel (OpenBLAS is not called from inside
  // a parallel region: its own threads would compete with ours).
  if (batch > 1 && usable_threads() > 1 && double(M) * double(N) * double(K) < kBatchSplitWork) {
    std::atomic<bool> failed{false};
    parallel_for(batch, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0; i < b1 && !failed; i++)
        if (!builtin_unchecked(GemmKernel::Auto, ta, tb, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb,
                               beta, C + i * stride_c, ldc))
          failed = true;
    });
    if (failed) throw_oom();
    return;
  }
  for (int64_t i = 0; i < batch; i++)
    gemm(ta, tb, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb, beta, C + i * stride_c, ldc);
}

#define KILN_GEMM_INSTANTIATE(T)                                                                                   \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T, T*,     \
                        int64_t);                                                                                  \
  template void gemm_builtin<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T, \
                                T*, int64_t, GemmKernel);                                                          \
  template void gemm_blas<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T,    \
                             T*, int64_t);                                                                         \
  template void gemm_batched<T>(bool, bool, int64_t, int64_t, int64_t, int64_t, T, const T*, int64_t, int64_t,     \
                                const T*, int64_t, int64_t, T, T*, int64_t, int64_t);
KILN_GEMM_INSTANTIATE(float)
KILN_GEMM_INSTANTIATE(double)
#undef KILN_GEMM_INSTANTIATE

}  // namespace kiln::cpu
