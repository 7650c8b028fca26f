// Native GEMM benchmark for machines without Node (such as GPU hosts): times kiln's built-in GEMM,
// with each micro-kernel the CPU runs, against OpenBLAS's cblas_sgemm on n x n float32 products with
// the same thread count, and checks that the results agree. Build and run from the repository root:
//   g++ -O3 -march=x86-64-v2 -fopenmp -DKILN_OPENBLAS -I/usr/include/x86_64-linux-gnu \
//       bench/gemm_native.cc native/cpu/gemm.cc -lopenblas -o /tmp/kiln-gemm
//   /tmp/kiln-gemm [threads] [n ...]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "../native/core/parallel.h"
#include "../native/cpu/gemm.h"

using kiln::cpu::GemmKernel;

struct Impl {
  const char* name;
  bool blas;
  GemmKernel kernel;
};

// Best seconds per call over rounds of about 50 ms, for about `budget` seconds.
template <typename F>
double best_seconds(F f, double budget) {
  using clock = std::chrono::steady_clock;
  auto secs = [](clock::duration d) { return std::chrono::duration<double>(d).count(); };
  f();
  auto t0 = clock::now();
  f();
  const int reps = std::max(1, int(0.05 / std::max(secs(clock::now() - t0), 1e-7)));
  double best = 1e30;
  const auto end = clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(budget));
  for (int round = 0; round < 3 || clock::now() < end; round++) {
    t0 = clock::now();
    for (int i = 0; i < reps; i++) f();
    best = std::min(best, secs(clock::now() - t0) / reps);
  }
  return best;
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : kiln::num_threads();
  kiln::set_num_threads(threads);
  std::vector<int64_t> sizes;
  for (int i = 2; i < argc; i++) sizes.push_back(std::atoll(argv[i]));
  if (sizes.empty()) sizes = {256, 1024, 2048};
  const Impl impls[] = {{"openblas", true, GemmKernel::Auto},
                        {"avx512", false, GemmKernel::Avx512},
                        {"avx2", false, GemmKernel::Avx2},
                        {"baseline", false, GemmKernel::Baseline}};
  std::printf("float32 GEMM, %d threads, GFLOP/s (best round); ratio = built-in / OpenBLAS\n", threads);
  std::printf("%6s %10s %10s %10s %10s   max |diff|\n", "n", "openblas", "avx512", "avx2", "baseline");
  for (int64_t n : sizes) {
    std::vector<float> A(n * n), B(n * n), ref(n * n), C(n * n);
    uint32_t s = 12345;
    for (auto* v : {&A, &B})
      for (float& x : *v) x = float((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    kiln::cpu::gemm_blas<float>(false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, ref.data(), n);
    double blas_gflops = 0, worst = 0;
    std::printf("%6lld", (long long)n);
    for (const Impl& impl : impls) {
      if (!impl.blas && !kiln::cpu::gemm_kernel_supported(impl.kernel)) {
        std::printf(" %10s", "-");
        continue;
      }
      auto run = [&] {
        if (impl.blas)
          kiln::cpu::gemm_blas<float>(false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n);
        else
          kiln::cpu::gemm_builtin<float>(false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n,
                                         impl.kernel);
      };
      const double gflops = 2.0 * n * n * n / best_seconds(run, n >= 2048 ? 3.0 : 1.0) / 1e9;
      for (int64_t i = 0; i < n * n; i++) worst = std::max(worst, double(std::fabs(C[i] - ref[i])));
      if (impl.blas) {
        blas_gflops = gflops;
        std::printf(" %10.1f", gflops);
      } else {
        std::printf(" %5.1f/%4.2f", gflops, gflops / blas_gflops);
      }
    }
    std::printf("   %.2g\n", worst);
  }
  return 0;
}
