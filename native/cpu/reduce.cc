// CPU reductions (the contract and the plan of the walk: native/ops/reduce.h). One engine walks a
// tensor of any strides: the kept dims index the outputs, the reduced dims (merged where
// contiguous, never reordered, so argmax indices are row-major) are walked per output. Two layouts:
// "runs" when the reduced dims are innermost in memory (each output folds a strided run), "columns"
// when a kept dim is innermost (a block of outputs is updated together, row after row, so the inner
// loop is contiguous). Work too coarse for the threads is split along the reduced dims into partial
// states combined in order. Accumulators say what is folded: float sums in double (8 lanes on
// contiguous runs), var by shifted sums, logsumexp online.
#include "../ops/reduce.h"
#include <cmath>
#include <limits>
#include <vector>
#include "../core/convert.h"
#include "../core/parallel.h"
#include "elementwise.h"

namespace kiln::cpu {

using ops::ReduceOp;
using ops::ReducePlan;
using ops::compute_t;
namespace ew = ops::ew;

namespace {

template <typename T>
inline compute_t<T> load(T v) {
  return convert_value<compute_t<T>, T>(v);
}

// Folds a strided run element by element (accumulators without a faster way).
template <typename Acc, typename S, typename T>
inline void run_each(const Acc& acc, S& s, const T* p, int64_t n, int64_t st, int64_t i0) {
  for (int64_t i = 0; i < n; i++) acc.update(s, load(p[i * st]), i0 + i);
}

// sum, mean (scale = 1/n): floats in double, integers and bool in int64.
template <typename T>
struct SumAcc {
  using C = compute_t<T>;
  static constexpr bool kFloat = std::is_floating_point_v<C>;
  using S = std::conditional_t<kFloat, double, int64_t>;
  using O = std::conditional_t<kFloat, T, int64_t>;
  double scale = 1;
  S init() const { return 0; }
  void update(S& s, C x, int64_t) const { s += S(x); }
  void run(S& s, const T* p, int64_t n, int64_t st, int64_t i0) const {
    if (st != 1) return run_each(*this, s, p, n, st, i0);
    // Eight independent lanes vectorize and also shorten the rounding chains.
    S l[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int k = 0; k < 8; k++) l[k] += S(load(p[i + k]));
    for (; i < n; i++) l[0] += S(load(p[i]));
    s += ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  }
  void combine(S& a, const S& b) const { a += b; }
  O finish(const S& s, int64_t) const {
    if constexpr (kFloat) return convert_value<O, double>(s * scale);
    else return s;
  }
};

// max, min (values); NaN wins like torch.amax.
template <typename T, bool kMax>
struct ExtremumAcc {
  using C = compute_t<T>;
  using S = C;
  using O = T;
  S init() const {
    if constexpr (std::is_floating_point_v<C>) return kMax ? -INFINITY : INFINITY;
    else return kMax ? std::numeric_limits<C>::lowest() : std::numeric_limits<C>::max();
  }
  void update(S& s, C x, int64_t) const { s = kMax ? ew::max_nan(x, s) : ew::min_nan(x, s); }
  void run(S& s, const T* p, int64_t n, int64_t st, int64_t i0) const { run_each(*this, s, p, n, st, i0); }
  void combine(S& a, const S& b) const { update(a, b, 0); }
  O finish(const S& s, int64_t) const { return convert_value<O, C>(s); }
};

// argmax, argmin: the first index of the extremum (the first NaN when there is one).
template <typename T, bool kMax>
struct ArgAcc {
  using C = compute_t<T>;
  struct S {
    C v;
    int64_t i;
  };
  using O = int64_t;
  static bool better(C x, C v) { return (kMax ? x > v : x < v) || (x != x && v == v); }
  S init() const { return {C(0), -1}; }
  void update(S& s, C x, int64_t i) const {
    if (s.i < 0 || better(x, s.v)) s = {x, i};
  }
  void run(S& s, const T* p, int64_t n, int64_t st, int64_t i0) const { run_each(*this, s, p, n, st, i0); }
  void combine(S& a, const S& b) const {
    if (b.i >= 0 && (a.i < 0 || better(b.v, a.v))) a = b;
  }
  O finish(const S& s, int64_t) const { return s.i; }
};

template <typename T, bool kAll>
struct LogicalAcc {
  using C = compute_t<T>;
  using S = uint8_t;
  using O = uint8_t;
  S init() const { return kAll ? 1 : 0; }
  void update(S& s, C x, int64_t) const {
    if (kAll) s = s && x != C(0);
    else s = s || x != C(0);
  }
  void run(S& s, const T* p, int64_t n, int64_t st, int64_t i0) const { run_each(*this, s, p, n, st, i0); }
  void combine(S& a, const S& b) const { a = kAll ? (a && b) : (a || b); }
  O finish(const S& s, int64_t) const { return s; }
};

// var, std: sums of x - k and (x - k)^2 with k the first element seen, which keeps the sums small
// (no cancellation) in one pass; partial states merge with Chan's formula.
template <typename T>
struct VarAcc {
  using C = compute_t<T>;
  struct S {
    double k, s, q;
    int64_t n;
  };
  using O = T;
  double correction = 1;
  bool take_sqrt = false;
  S init() const { return {0, 0, 0, 0}; }
  void update(S& st, C x, int64_t) const {
    if (st.n == 0) st.k = double(x);
    double d = double(x) - st.k;
    st.s += d;
    st.q += d * d;
    st.n++;
  }
  void run(S& st, const T* p, int64_t n, int64_t stride, int64_t i0) const {
    if (n == 0) return;
    if (st.n == 0) st.k = double(load(p[0]));
    const double k = st.k;
    // Independent lanes break the add latency chains.
    double s[4] = {}, q[4] = {};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      for (int l = 0; l < 4; l++) {
        double d = double(load(p[(i + l) * stride])) - k;
        s[l] += d;
        q[l] += d * d;
      }
    }
    for (; i < n; i++) {
      double d = double(load(p[i * stride])) - k;
      s[0] += d;
      q[0] += d * d;
    }
    st.s += (s[0] + s[1]) + (s[2] + s[3]);
    st.q += (q[0] + q[1]) + (q[2] + q[3]);
    st.n += n;
  }
  static double m2(const S& a) { return a.q - a.s * a.s / double(a.n); }
  void combine(S& a, const S& b) const {
    if (b.n == 0) return;
    if (a.n == 0) {
      a = b;
      return;
    }
    double na = double(a.n), nb = double(b.n), n = na + nb;
    double mean_a = a.k + a.s / na, mean_b = b.k + b.s / nb, delta = mean_b - mean_a;
    double q = m2(a) + m2(b) + delta * delta * na * nb / n;
    a = {mean_a + delta * nb / n, 0, q, a.n + b.n};
  }
  O finish(const S& st, int64_t) const {
    double v = st.n == 0 ? NAN : std::max(0.0, m2(st)) / std::max(0.0, double(st.n) - correction);
    return convert_value<O, double>(take_sqrt ? std::sqrt(v) : v);
  }
};

// logsumexp: a running maximum m and sum s of exp(x - m), rescaled when m grows.
template <typename T>
struct LseAcc {
  using C = compute_t<T>;
  struct S {
    double m, s;
  };
  using O = T;
  S init() const { return {-INFINITY, 0}; }
  void update(S& st, C x, int64_t) const {
    double v = double(x);
    if (v == -INFINITY) return;
    if (v > st.m) {
      st.s = st.s * std::exp(st.m - v) + 1;
      st.m = v;
    } else if (v == st.m) {
      st.s += 1;
    } else {
      st.s += std::exp(v - st.m);
    }
  }
  // Blocks of a contiguous run: the block's max, then its exponentials against that max (in the
  // compute type, branch-free), folded into the state.
  void run(S& st, const T* p, int64_t n, int64_t stride, int64_t i0) const {
    if (stride != 1) return run_each(*this, st, p, n, stride, i0);
    constexpr int64_t kBlock = 256;
    for (int64_t b = 0; b < n; b += kBlock) {
      const int64_t e = std::min(n, b + kBlock);
      C bm = -std::numeric_limits<C>::infinity();
      for (int64_t i = b; i < e; i++) {
        C x = load(p[i]);
        bm = x > bm ? x : bm;
      }
      if (!std::isfinite(bm)) {
        run_each(*this, st, p + b, e - b, 1, i0 + b);
        continue;
      }
      double bs = 0;
      for (int64_t i = b; i < e; i++) bs += double(std::exp(load(p[i]) - bm));
      combine(st, {double(bm), bs});
    }
  }
  void combine(S& a, const S& b) const {
    if (b.s == 0) return;
    if (a.s == 0) {
      a = b;
    } else if (b.m > a.m) {
      a.s = a.s * std::exp(a.m - b.m) + b.s;
      a.m = b.m;
    } else if (b.m == a.m) {
      a.s += b.s;
    } else {
      a.s += b.s * std::exp(b.m - a.m);
    }
  }
  O finish(const S& st, int64_t) const {
    double r = st.s == 0 ? -INFINITY : st.m == INFINITY ? INFINITY : st.m + std::log(st.s);
    return convert_value<O, double>(r);
  }
};

// Row-major walk over dims with an element offset kept up to date.
struct Walker {
  const int64_t* shape;
  const int64_t* stride;
  int64_t nd;
  std::vector<int64_t> idx;
  int64_t off = 0;
  Walker(const Shape& s, const Shape& st, int64_t ndims) : shape(s.data()), stride(st.data()), nd(ndims), idx(ndims) {}
  void seek(int64_t r) {
    off = 0;
    for (int64_t d = nd - 1; d >= 0; d--) {
      idx[d] = r % shape[d];
      r /= shape[d];
      off += idx[d] * stride[d];
    }
  }
  void next() {
    for (int64_t d = nd - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) {
        off += stride[d];
        return;
      }
      off -= stride[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
};

template <typename Acc, typename T>
void run_reduce(const Acc& acc, const Tensor& x, const Tensor& out, const ReducePlan& p) {
  using S = typename Acc::S;
  using O = typename Acc::O;
  const T* xp = x.data<T>();
  O* op = out.data<O>();
  const int64_t M = p.outputs, N = p.count;
  if (M == 0) return;
  if (N == 0) {
    for (int64_t o = 0; o < M; o++) op[o] = acc.finish(acc.init(), 0);
    return;
  }
  const int64_t nk_outer = int64_t(p.kshape.size()) - (p.columns ? 1 : 0);
  const int64_t cols = p.columns ? p.kshape.back() : 1;
  const int64_t cs = p.columns ? p.kstride.back() : 0;
  const int64_t width = std::min<int64_t>(cols, 2048);
  const int64_t cblocks = (cols + width - 1) / width;
  const int64_t groups = (M / cols) * cblocks;
  const int64_t total = M * N;

  // Too few output groups for the threads: split each along the reduced elements too.
  const int64_t nt = num_threads();
  int64_t rchunks = 1;
  if (groups < 4 * nt && total >= 65536) {
    const int64_t min_rows = std::max<int64_t>(1, 16384 / width);
    rchunks = std::max<int64_t>(1, std::min((4 * nt + groups - 1) / groups, N / min_rows));
  }
  const int64_t tasks = groups * rchunks;
  std::vector<S> partial(rchunks > 1 ? size_t(tasks * width) : 0);
  const int64_t per_task = std::max<int64_t>(1, total / tasks);
  const int64_t grain = total >= 32768 ? std::max<int64_t>(1, 32768 / per_task) : tasks + 1;
  const int64_t nr = int64_t(p.rshape.size());

  parallel_for(tasks, grain, [&](int64_t tb, int64_t te) {
    std::vector<S> st(static_cast<size_t>(width));
    Walker rows(p.rshape, p.rstride, p.columns ? nr : nr - 1);
    for (int64_t t = tb; t < te; t++) {
      const int64_t g = t / rchunks, chunk = t % rchunks;
      const int64_t r0 = N * chunk / rchunks, r1 = N * (chunk + 1) / rchunks;
      const int64_t oi = g / cblocks, c0 = (g % cblocks) * width;
      const int64_t w = std::min(width, cols - c0);
      int64_t base = 0;
      for (int64_t d = nk_outer - 1, rem = oi; d >= 0; d--) {
        base += (rem % p.kshape[d]) * p.kstride[d];
        rem /= p.kshape[d];
      }
      for (int64_t j = 0; j < w; j++) st[j] = acc.init();
      if (p.columns) {
        const T* p0 = xp + base + c0 * cs;
        S* __restrict s = st.data();
        rows.seek(r0);
        int64_t r = r0;
        if (cs == 1) {
          // Four rows per pass keep each state in a register for four updates (in row order).
          for (; r + 4 <= r1; r += 4) {
            const T* x[4];
            for (int k = 0; k < 4; k++, rows.next()) x[k] = p0 + rows.off;
            const T *__restrict x0 = x[0], *__restrict x1 = x[1], *__restrict x2 = x[2], *__restrict x3 = x[3];
            for (int64_t j = 0; j < w; j++) {
              S v = s[j];
              acc.update(v, load(x0[j]), r);
              acc.update(v, load(x1[j]), r + 1);
              acc.update(v, load(x2[j]), r + 2);
              acc.update(v, load(x3[j]), r + 3);
              s[j] = v;
            }
          }
        }
        for (; r < r1; r++, rows.next()) {
          const T* __restrict row = p0 + rows.off;
          for (int64_t j = 0; j < w; j++) acc.update(s[j], load(row[j * cs]), r);
        }
      } else {
        const int64_t n0 = p.rshape.back(), s0 = p.rstride.back();
        rows.seek(r0 / n0);
        for (int64_t r = r0, i0 = r0 % n0; r < r1; i0 = 0, rows.next()) {
          const int64_t len = std::min(n0 - i0, r1 - r);
          acc.run(st[0], xp + base + rows.off + i0 * s0, len, s0, r);
          r += len;
        }
      }
      if (rchunks == 1) {
        for (int64_t j = 0; j < w; j++) op[oi * cols + c0 + j] = acc.finish(st[j], N);
      } else {
        std::copy(st.begin(), st.begin() + w, partial.begin() + t * width);
      }
    }
  });
  if (rchunks == 1) return;
  for (int64_t g = 0; g < groups; g++) {
    const int64_t oi = g / cblocks, c0 = (g % cblocks) * width, w = std::min(width, cols - c0);
    for (int64_t j = 0; j < w; j++) {
      S s = partial[size_t(g * rchunks * width + j)];
      for (int64_t c = 1; c < rchunks; c++) acc.combine(s, partial[size_t((g * rchunks + c) * width + j)]);
      op[oi * cols + c0 + j] = acc.finish(s, N);
    }
  }
}

}  // namespace

void reduce(ReduceOp op, const Tensor& x, const Tensor& out, const Shape& dims, double param) {
  const char* name = ops::reduce_op_name(op);
  const ReducePlan p = ops::check_reduce(op, x, out, dims);
  // Each case runs the accumulator for the input's storage type T.
#define KILN_RUN(KIND, ...)                                 \
  dispatch<ew::DTypes::KIND>(x.dtype, name, [&](auto tag) { \
    using T = decltype(tag);                                \
    __VA_ARGS__;                                            \
  })
  switch (op) {
    case ReduceOp::sum: KILN_RUN(ANY, run_reduce<SumAcc<T>, T>({}, x, out, p)); break;
    case ReduceOp::mean: KILN_RUN(FLOAT, run_reduce<SumAcc<T>, T>({1.0 / double(p.count)}, x, out, p)); break;
    case ReduceOp::max: KILN_RUN(ANY, run_reduce<ExtremumAcc<T, true>, T>({}, x, out, p)); break;
    case ReduceOp::min: KILN_RUN(ANY, run_reduce<ExtremumAcc<T, false>, T>({}, x, out, p)); break;
    case ReduceOp::argmax: KILN_RUN(ANY, run_reduce<ArgAcc<T, true>, T>({}, x, out, p)); break;
    case ReduceOp::argmin: KILN_RUN(ANY, run_reduce<ArgAcc<T, false>, T>({}, x, out, p)); break;
    case ReduceOp::all: KILN_RUN(ANY, run_reduce<LogicalAcc<T, true>, T>({}, x, out, p)); break;
    case ReduceOp::any: KILN_RUN(ANY, run_reduce<LogicalAcc<T, false>, T>({}, x, out, p)); break;
    case ReduceOp::var:
    case ReduceOp::std: KILN_RUN(FLOAT, run_reduce<VarAcc<T>, T>({param, op == ReduceOp::std}, x, out, p)); break;
    case ReduceOp::logsumexp: KILN_RUN(FLOAT, run_reduce<LseAcc<T>, T>({}, x, out, p)); break;
    case ReduceOp::kCount: KILN_INTERNAL_CHECK(false, name);
  }
#undef KILN_RUN
}

}  // namespace kiln::cpu
