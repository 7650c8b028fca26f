// GEMM for float and double: OpenBLAS's cblas_?gemm when the build has it; otherwise (and for tests
// and the benchmark, always available) a built-in BLIS-style implementation: a KC x NC block of op(B)
// packed into NR-column panels shared by all threads, MC x KC blocks of op(A) packed per thread into
// MR-row panels, and an MR x NR register-blocked micro-kernel written with GCC vector extensions. The
// micro-kernel is compiled twice, for AVX2+FMA and for the baseline ISA the build targets, and the
// AVX2 copy is picked at run time when the CPU has it (the build itself targets x86-64-v2).
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

// Register tile: MR x NR accumulators in 12 vectors of 256 bits (16 registers on AVX2). Cache blocks:
// an MC x KC block of A stays in L2, a KC x NR panel of B in L1, the KC x NC block of B in L3.
template <typename T>
struct Blocking;
template <>
struct Blocking<float> {
  static constexpr int64_t MR = 6, NR = 16, MC = 144, KC = 256, NC = 3072;
};
template <>
struct Blocking<double> {
  static constexpr int64_t MR = 6, NR = 8, MC = 96, KC = 256, NC = 3072;
};

constexpr int64_t kVecBytes = 32;
template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(kVecBytes)));
};

// Below this many multiply-adds a product runs on the calling thread (a parallel region costs more).
constexpr double kParallelWork = 131072;
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
// not fault in fresh pages every time.
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
template <typename T>
void pack_a(bool trans, const T* A, int64_t lda, int64_t mc, int64_t kc, T* dst) {
  constexpr int64_t MR = Blocking<T>::MR;
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
template <typename T>
void pack_b(bool trans, const T* B, int64_t ldb, int64_t kc, int64_t nc, int64_t p0, int64_t p1, T* dst) {
  constexpr int64_t NR = Blocking<T>::NR;
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
template <typename T>
[[gnu::always_inline]] inline void micro_kernel(int64_t kc, const T* __restrict Ap, const T* __restrict Bp, T* C,
                                                int64_t ldc, int64_t mr, int64_t nr, T alpha, T beta) {
  using V = typename VecOf<T>::type;
  constexpr int64_t MR = Blocking<T>::MR, NR = Blocking<T>::NR, W = kVecBytes / int64_t(sizeof(T)), NV = NR / W;
  V acc[MR][NV] = {};
  for (int64_t k = 0; k < kc; k++) {
    V b[NV];
    for (int64_t j = 0; j < NV; j++) std::memcpy(&b[j], Bp + k * NR + j * W, kVecBytes);
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
          std::memcpy(&old, c, kVecBytes);
          r += beta * old;
        }
        std::memcpy(c, &r, kVecBytes);
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

// One packed MC x KC block of A times the packed KC x nc block of B into C.
template <typename T>
[[gnu::always_inline]] inline void macro_body(int64_t mc, int64_t nc, int64_t kc, const T* Ap, const T* Bp, T* C,
                                              int64_t ldc, T alpha, T beta) {
  constexpr int64_t MR = Blocking<T>::MR, NR = Blocking<T>::NR;
  for (int64_t jr = 0; jr < nc; jr += NR)
    for (int64_t ir = 0; ir < mc; ir += MR)
      micro_kernel<T>(kc, Ap + ir * kc, Bp + jr * kc, C + ir * ldc + jr, ldc, std::min(MR, mc - ir),
                      std::min(NR, nc - jr), alpha, beta);
}

template <typename T>
using MacroFn = void (*)(int64_t, int64_t, int64_t, const T*, const T*, T*, int64_t, T, T);

template <typename T>
void macro_baseline(int64_t mc, int64_t nc, int64_t kc, const T* Ap, const T* Bp, T* C, int64_t ldc, T alpha, T beta) {
  macro_body<T>(mc, nc, kc, Ap, Bp, C, ldc, alpha, beta);
}

#ifdef KILN_GEMM_X86
template <typename T>
__attribute__((target("avx2,fma"))) void macro_avx2(int64_t mc, int64_t nc, int64_t kc, const T* Ap, const T* Bp,
                                                    T* C, int64_t ldc, T alpha, T beta) {
  macro_body<T>(mc, nc, kc, Ap, Bp, C, ldc, alpha, beta);
}
#endif

template <typename T>
MacroFn<T> pick_macro() {
#ifdef KILN_GEMM_X86
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  if (avx2) return macro_avx2<T>;
#endif
  return macro_baseline<T>;
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

// The built-in product on checked arguments. Returns false when a packing buffer could not be
// allocated (it may run inside a parallel region, so it does not throw).
template <typename T>
bool builtin_unchecked(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                       const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  using Bk = Blocking<T>;
  if (M == 0 || N == 0) return true;
  if (K == 0 || alpha == T(0)) {
    scale_c(M, N, beta, C, ldc);
    return true;
  }
  const bool par = double(M) * double(N) * double(K) >= kParallelWork;
  const int64_t nt = par ? usable_threads() : 1;
  // Blocks of rows of even height, as many as a multiple of the thread count when they stay tall.
  int64_t mb = ceil_div(M, Bk::MC);
  if (nt > 1 && mb % nt != 0 && M / round_up(mb, nt) >= 4 * Bk::MR) mb = round_up(mb, nt);
  const int64_t mc = round_up(ceil_div(M, mb), Bk::MR);
  mb = ceil_div(M, mc);
  T* Bp = scratch<T, 0>(std::min(K, Bk::KC) * round_up(std::min(N, Bk::NC), Bk::NR));
  if (!Bp) return false;
  std::atomic<bool> failed{false};
  const MacroFn<T> macro = pick_macro<T>();
  for (int64_t jc = 0; jc < N; jc += Bk::NC) {
    const int64_t nc = std::min(Bk::NC, N - jc);
    const int64_t np = ceil_div(nc, Bk::NR);
    // Fewer row blocks than threads: split the columns too.
    const int64_t per = ceil_div(np, mb >= nt ? 1 : std::min(np, ceil_div(nt, mb)));
    const int64_t nsplit = ceil_div(np, per);
    const int64_t tasks = mb * nsplit;
    for (int64_t pc = 0; pc < K; pc += Bk::KC) {
      const int64_t kc = std::min(Bk::KC, K - pc);
      const T* Bsrc = tb ? B + jc * ldb + pc : B + pc * ldb + jc;
      parallel_for(np, par ? 4 : np + 1, [&](int64_t p0, int64_t p1) { pack_b(tb, Bsrc, ldb, kc, nc, p0, p1, Bp); });
      const T beta_k = pc == 0 ? beta : T(1);
      parallel_for(tasks, par ? 1 : tasks + 1, [&](int64_t t0, int64_t t1) {
        T* Ap = scratch<T, 1>(mc * kc);
        if (!Ap) {
          failed = true;
          return;
        }
        int64_t packed = -1;
        for (int64_t t = t0; t < t1; t++) {
          const int64_t ib = t / nsplit, js = t % nsplit;
          const int64_t i0 = ib * mc, m = std::min(mc, M - i0);
          if (ib != packed) {
            pack_a(ta, ta ? A + pc * lda + i0 : A + i0 * lda + pc, lda, m, kc, Ap);
            packed = ib;
          }
          const int64_t j0 = js * per * Bk::NR, n = std::min(per * Bk::NR, nc - j0);
          macro(m, n, kc, Ap, Bp + j0 * kc, C + i0 * ldc + jc + j0, ldc, alpha, beta_k);
        }
      });
      if (failed) return false;
    }
  }
  return true;
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

template <typename T>
void blas_unchecked(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                    int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  lda = blas_ld(ta ? K : M, ta ? M : K, lda);
  ldb = blas_ld(tb ? N : K, tb ? K : N, ldb);
  ldc = blas_ld(M, N, ldc);
  KILN_CHECK(fits_blas({M, N, K, lda, ldb, ldc}), Value, "gemm", "sizes M=", M, " N=", N, " K=", K,
             " exceed OpenBLAS's integer range");
  const int nt = int(usable_threads());
  if (openblas_get_num_threads() != nt) openblas_set_num_threads(nt);
  blas_call(ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blasint(M), blasint(N), blasint(K), alpha,
            A, blasint(lda), B, blasint(ldb), beta, C, blasint(ldc));
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

template <typename T>
void gemm_builtin(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                  int64_t ldb, T beta, T* C, int64_t ldc) {
  check_args(ta, tb, M, N, K, lda, ldb, ldc);
  if (!builtin_unchecked(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) throw_oom();
}

template <typename T>
void gemm_blas(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
               int64_t ldb, T beta, T* C, int64_t ldc) {
  check_args(ta, tb, M, N, K, lda, ldb, ldc);
#ifdef KILN_OPENBLAS
  blas_unchecked(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
  throw Error(ErrorCode::Value, "gemm", "kiln was built without OpenBLAS");
#endif
}

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
#ifdef KILN_OPENBLAS
  gemm_blas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
  gemm_builtin(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
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
        if (!builtin_unchecked(ta, tb, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb, beta,
                               C + i * stride_c, ldc))
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
                                T*, int64_t);                                                                      \
  template void gemm_blas<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T,    \
                             T*, int64_t);                                                                         \
  template void gemm_batched<T>(bool, bool, int64_t, int64_t, int64_t, int64_t, T, const T*, int64_t, int64_t,     \
                                const T*, int64_t, int64_t, T, T*, int64_t, int64_t);
KILN_GEMM_INSTANTIATE(float)
KILN_GEMM_INSTANTIATE(double)
#undef KILN_GEMM_INSTANTIATE

}  // namespace kiln::cpu
