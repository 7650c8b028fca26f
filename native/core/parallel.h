// Thread count control and a parallel-for over index ranges (OpenMP when the build has it,
// otherwise serial). Kernels call parallel_for instead of writing OpenMP pragmas themselves.
#pragma once
#include <algorithm>
#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace kiln {

inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline void set_num_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(n < 1 ? 1 : n);
#else
  (void)n;
#endif
}

inline bool have_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

// Calls f(begin, end) over [0, n) split into contiguous chunks, one per thread, when n is at
// least `grain`; below that, once on the calling thread. f must not throw.
template <typename F>
void parallel_for(int64_t n, int64_t grain, F f) {
  if (n <= 0) return;
#ifdef _OPENMP
  int nt = omp_get_max_threads();
  if (n >= grain && nt > 1 && !omp_in_parallel()) {
    int64_t tasks = std::min<int64_t>(nt, (n + grain - 1) / std::max<int64_t>(grain, 1));
    if (tasks > 1) {
#pragma omp parallel for num_threads(int(tasks)) schedule(static, 1)
      for (int64_t t = 0; t < tasks; t++) {
        int64_t b = n * t / tasks, e = n * (t + 1) / tasks;
        if (b < e) f(b, e);
      }
      return;
    }
  }
#endif
  f(int64_t(0), n);
}

}  // namespace kiln
