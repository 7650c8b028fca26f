// CUDA reductions, twins of native/cpu/reduce.cc (the contract is native/ops/reduce.h, whose
// check_reduce plans the walk: kept and reduced dims, each merged where contiguous, reduced dims in
// order so argmax indices stay row-major). The host picks a layout:
// - rows: the reduced elements are innermost; a warp (short rows) or a block (long rows) folds
//   each output, with 16-byte vector loads on dense rows and warp-shuffle combines;
// - columns: a kept dim is innermost; threads own adjacent outputs and walk the reduced rows, so
//   loads are coalesced, and the block's row lanes combine in shared memory.
// When there are too few outputs to fill the GPU, each output's range is split into partial states
// that a second kernel combines in a fixed order: deterministic, no atomics. The accumulators are
// device versions of the CPU ones (which live in reduce.cc only): float32/bf16 accumulate in
// float32, float64 in double, integers in int64; combines are order-independent where it matters
// (argmax keeps the lowest index on ties).
#include "../ops/reduce.h"
#include <limits>
#include "common.cuh"
#include "elementwise.cuh"
#include "reduce.cuh"

namespace kiln::cuda {

using ops::ReduceOp;
using ops::ReducePlan;
using ops::compute_t;
namespace ew = ops::ew;

namespace {

// sum, mean (scale = 1/n).
template <typename T>
struct SumAcc {
  using C = compute_t<T>;
  static constexpr bool kFloat = std::is_floating_point_v<C>;
  using S = std::conditional_t<kFloat, acc_t<T>, int64_t>;
  using O = std::conditional_t<kFloat, T, int64_t>;
  double scale = 1;
  __device__ S init() const { return S(0); }
  __device__ void update(S& s, C x, int64_t) const { s += S(x); }
  __device__ void combine(S& a, const S& b) const { a += b; }
  __device__ O finish(const S& s) const {
    if constexpr (kFloat) return dconvert<O, double>(double(s) * scale);
    else return s;
  }
};

// max, min (values); NaN wins.
template <typename T, bool kMax>
struct ExtremumAcc {
  using C = compute_t<T>;
  using S = C;
  using O = T;
  __device__ S init() const {
    if constexpr (std::is_floating_point_v<C>) return kMax ? C(-INFINITY) : C(INFINITY);
    else return kMax ? std::numeric_limits<C>::lowest() : std::numeric_limits<C>::max();
  }
  __device__ void update(S& s, C x, int64_t) const { s = kMax ? ew::max_nan(x, s) : ew::min_nan(x, s); }
  __device__ void combine(S& a, const S& b) const { update(a, b, 0); }
  __device__ O finish(const S& s) const { return dconvert<O, C>(s); }
};

// argmax, argmin: the first index of the extremum (the first NaN when there is one). Each thread
// sees its indices in increasing order; combines break ties by the lower index.
template <typename T, bool kMax>
struct ArgAcc {
  using C = compute_t<T>;
  struct S {
    C v;
    int64_t i;
  };
  using O = int64_t;
  __device__ static bool better(C x, C v) { return (kMax ? x > v : x < v) || (x != x && v == v); }
  __device__ S init() const { return {C(0), -1}; }
  __device__ void update(S& s, C x, int64_t i) const {
    if (s.i < 0 || better(x, s.v)) s = {x, i};
  }
  __device__ void combine(S& a, const S& b) const {
    if (b.i < 0) return;
    if (a.i < 0 || better(b.v, a.v) || (!better(a.v, b.v) && b.i < a.i)) a = b;
  }
  __device__ O finish(const S& s) const { return s.i; }
};

template <typename T, bool kAll>
struct LogicalAcc {
  using C = compute_t<T>;
  using S = int32_t;  // a full word, for the shuffles
  using O = uint8_t;
  __device__ S init() const { return kAll ? 1 : 0; }
  __device__ void update(S& s, C x, int64_t) const { combine(s, x != C(0)); }
  __device__ void combine(S& a, const S& b) const { a = kAll ? (a && b) : (a || b); }
  __device__ O finish(const S& s) const { return s ? 1 : 0; }
};

// var, std: sums of x - k and (x - k)^2 with k the first element the thread saw (no cancellation in
// one pass); states merge with Chan's formula.
template <typename T>
struct VarAcc {
  using C = compute_t<T>;
  using A = acc_t<T>;
  struct S {
    A k, s, q;
    int64_t n;
  };
  using O = T;
  double correction = 1;
  bool take_sqrt = false;
  __device__ S init() const { return {0, 0, 0, 0}; }
  __device__ void update(S& st, C x, int64_t) const {
    if (st.n == 0) st.k = A(x);
    const A d = A(x) - st.k;
    st.s += d;
    st.q += d * d;
    st.n++;
  }
  __device__ static A m2(const S& a) { return a.q - a.s * a.s / A(a.n); }
  __device__ void combine(S& a, const S& b) const {
    if (b.n == 0) return;
    if (a.n == 0) {
      a = b;
      return;
    }
    const A na = A(a.n), nb = A(b.n), n = na + nb;
    const A mean_a = a.k + a.s / na, mean_b = b.k + b.s / nb, delta = mean_b - mean_a;
    const A q = m2(a) + m2(b) + delta * delta * (na * nb / n);
    a = {mean_a + delta * (nb / n), 0, q, a.n + b.n};
  }
  __device__ O finish(const S& st) const {
    const double m = st.n == 0 ? 0.0 : double(m2(st));
    double v = st.n == 0 ? NAN : fmax(0.0, m) / fmax(0.0, double(st.n) - correction);
    return dconvert<O, double>(take_sqrt ? sqrt(v) : v);
  }
};

// logsumexp: a running maximum m and sum s of exp(x - m), rescaled when m grows.
template <typename T>
struct LseAcc {
  using C = compute_t<T>;
  using A = acc_t<T>;
  struct S {
    A m, s;
  };
  using O = T;
  __device__ S init() const { return {A(-INFINITY), 0}; }
  __device__ void update(S& st, C x, int64_t) const {
    const A v = A(x);
    if (v == A(-INFINITY)) return;
    if (v > st.m) {
      st.s = st.s * exp(st.m - v) + 1;
      st.m = v;
    } else if (v == st.m) {
      st.s += 1;
    } else {
      st.s += exp(v - st.m);
    }
  }
  __device__ void combine(S& a, const S& b) const {
    if (b.s == 0) return;
    if (a.s == 0) {
      a = b;
    } else if (b.m > a.m) {
      a.s = a.s * exp(a.m - b.m) + b.s;
      a.m = b.m;
    } else if (b.m == a.m) {
      a.s += b.s;
    } else {
      a.s += b.s * exp(b.m - a.m);
    }
  }
  __device__ O finish(const S& st) const {
    const A r = st.s == 0 ? A(-INFINITY) : st.m == A(INFINITY) ? A(INFINITY) : st.m + log(st.s);
    return dconvert<O, A>(r);
  }
};

// A state moved between lanes word by word (every state is a whole number of 32-bit words).
template <typename S>
__device__ __forceinline__ S shfl_xor(const S& s, int o) {
  static_assert(sizeof(S) % 4 == 0, "reduction states are whole words");
  constexpr int W = sizeof(S) / 4;
  uint32_t w[W];
  memcpy(w, &s, sizeof(S));
#pragma unroll
  for (int k = 0; k < W; k++) w[k] = __shfl_xor_sync(0xffffffffu, w[k], o);
  S r;
  memcpy(&r, w, sizeof(S));
  return r;
}

template <typename Acc, typename S>
__device__ __forceinline__ S warp_combine(const Acc& acc, S s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc.combine(s, shfl_xor(s, o));
  return s;
}

// Kept dims (outermost first) index the outputs, reduced dims (outermost first) the elements of one
// output. In the columns layout the innermost kept dim is (cols, cs) and not among the kept dims.
struct RMeta {
  int nk, nr;
  int64_t ksize[kMaxDims], kstride[kMaxDims];
  int64_t rsize[kMaxDims], rstride[kMaxDims];
  int64_t cols, cs;
  int64_t M, N, splits;

  __device__ __forceinline__ int64_t kept(int64_t o) const {
    int64_t off = 0;
    for (int d = nk - 1; d >= 0; d--) {
      off += (o % ksize[d]) * kstride[d];
      o /= ksize[d];
    }
    return off;
  }
  __device__ __forceinline__ int64_t red(int64_t r) const {
    if (nr == 1) return r * rstride[0];
    int64_t off = 0;
    for (int d = nr - 1; d >= 0; d--) {
      off += (r % rsize[d]) * rstride[d];
      r /= rsize[d];
    }
    return off;
  }
  // The reduced elements [r0, r1) of split `split`.
  __device__ __forceinline__ void range(int64_t split, int64_t& r0, int64_t& r1) const {
    r0 = N * split / splits;
    r1 = N * (split + 1) / splits;
  }
};

template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T x[V];
};

// Writes a finished output, or the partial state of one split.
template <typename Acc>
__device__ __forceinline__ void emit(const Acc& acc, const typename Acc::S& s, typename Acc::O* out,
                                     typename Acc::S* partial, const RMeta& m, int64_t o, int64_t split) {
  if (m.splits == 1) out[o] = acc.finish(s);
  else partial[o * m.splits + split] = s;
}

// Rows layout: G threads (a warp, or the whole block) fold one (output, split).
template <int G, typename Acc, typename T>
__global__ void __launch_bounds__(kThreads) reduce_rows(const T* __restrict__ x, typename Acc::O* __restrict__ out,
                                                        typename Acc::S* __restrict__ partial, RMeta m, Acc acc) {
  using S = typename Acc::S;
  using C = typename Acc::C;
  const int lane = threadIdx.x % G;
  const int64_t task = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / G;
  if (task >= m.M * m.splits) return;  // whole groups only
  const int64_t o = task / m.splits, split = task % m.splits;
  int64_t r0, r1;
  m.range(split, r0, r1);
  const T* base = x + m.kept(o);
  S s = acc.init();
  if (m.nr == 1 && m.rstride[0] == 1) {
    // Dense row: scalar head up to 16-byte alignment, vector body, scalar tail; each thread's
    // indices still increase.
    constexpr int V = 16 / sizeof(T);
    const int64_t mis = int64_t(reinterpret_cast<uintptr_t>(base + r0) / sizeof(T)) % V;
    const int64_t head = min(r1 - r0, mis ? V - mis : int64_t(0));
    if (lane < head) acc.update(s, dconvert<C>(base[r0 + lane]), r0 + lane);
    const int64_t a = r0 + head, nv = (r1 - a) / V;
    for (int64_t v = lane; v < nv; v += G) {
      const Vec<T, V> p = *reinterpret_cast<const Vec<T, V>*>(base + a + v * V);
#pragma unroll
      for (int j = 0; j < V; j++) acc.update(s, dconvert<C>(p.x[j]), a + v * V + j);
    }
    for (int64_t r = a + nv * V + lane; r < r1; r += G) acc.update(s, dconvert<C>(base[r]), r);
  } else {
    for (int64_t r = r0 + lane; r < r1; r += G) acc.update(s, dconvert<C>(base[m.red(r)]), r);
  }
  s = warp_combine(acc, s);
  if constexpr (G > 32) {
    __shared__ S sh[G / 32];
    const int warp = threadIdx.x / 32;
    if (lane % 32 == 0) sh[warp] = s;
    __syncthreads();
    if (warp != 0) return;
    s = warp_combine(acc, lane < G / 32 ? sh[lane] : acc.init());
  }
  if (lane == 0) emit(acc, s, out, partial, m, o, split);
}

// Columns layout: blockDim (bx, by) with bx * by = kThreads; thread x owns output column c, the by
// row lanes of a column split its rows and combine in shared memory.
template <typename Acc, typename T>
__global__ void __launch_bounds__(kThreads) reduce_cols(const T* __restrict__ x, typename Acc::O* __restrict__ out,
                                                        typename Acc::S* __restrict__ partial, RMeta m, Acc acc) {
  using S = typename Acc::S;
  using C = typename Acc::C;
  const int bx = blockDim.x, by = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
  const int64_t cblocks = (m.cols + bx - 1) / bx;
  int64_t b = blockIdx.x;
  const int64_t split = b % m.splits;
  b /= m.splits;
  const int64_t c = (b % cblocks) * bx + tx, outer = b / cblocks;
  int64_t r0, r1;
  m.range(split, r0, r1);
  S s = acc.init();
  if (c < m.cols) {
    const T* p = x + m.kept(outer) + c * m.cs;
    for (int64_t r = r0 + ty; r < r1; r += by) acc.update(s, dconvert<C>(p[m.red(r)]), r);
  }
  __shared__ S sh[kThreads];
  sh[ty * bx + tx] = s;
  for (int h = by / 2; h > 0; h >>= 1) {
    __syncthreads();
    if (ty < h) acc.combine(sh[ty * bx + tx], sh[(ty + h) * bx + tx]);
  }
  if (ty == 0 && c < m.cols) emit(acc, sh[tx], out, partial, m, outer * m.cols + c, split);
}

// Second pass: one warp per output combines its splits' partial states.
template <typename Acc>
__global__ void __launch_bounds__(kThreads) reduce_finish(const typename Acc::S* __restrict__ partial,
                                                          typename Acc::O* __restrict__ out, int64_t M, int64_t splits,
                                                          Acc acc) {
  const int64_t o = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (o >= M) return;
  typename Acc::S s = acc.init();
  for (int64_t k = lane; k < splits; k += 32) acc.combine(s, partial[o * splits + k]);
  s = warp_combine(acc, s);
  if (lane == 0) out[o] = acc.finish(s);
}

int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

template <typename Acc, typename T>
void run(const char* name, const Acc& acc, const Tensor& x, const Tensor& out, const ReducePlan& p) {
  using S = typename Acc::S;
  using O = typename Acc::O;
  const int64_t M = p.outputs, N = p.count;
  if (M == 0) return;
  const Device d = out.device();
  const cudaStream_t st = stream(d);
  const int64_t sms = sm_count(d);
  const size_t nk = p.kshape.size() - (p.columns ? 1 : 0);
  KILN_CHECK(nk <= size_t(kMaxDims) && p.rshape.size() <= size_t(kMaxDims), Shape, name, "tensor layout of ",
             shape_str(x.shape), " needs too many dims after merging; CUDA kernels take at most ", kMaxDims,
             " (call contiguous() first)");
  RMeta m{};
  m.nk = int(nk);
  m.nr = int(p.rshape.size());
  for (size_t i = 0; i < nk; i++) m.ksize[i] = p.kshape[i], m.kstride[i] = p.kstride[i];
  for (size_t i = 0; i < p.rshape.size(); i++) m.rsize[i] = p.rshape[i], m.rstride[i] = p.rstride[i];
  m.cols = p.columns ? p.kshape.back() : 1;
  m.cs = p.columns ? p.kstride.back() : 0;
  m.M = M;
  m.N = N;

  // Launch shape, and splits of the reduced range when the outputs alone cannot fill the GPU.
  const bool block_rows = !p.columns && N >= 4096;
  int bx = 1;
  while (bx < 32 && bx < m.cols) bx *= 2;
  const int by = kThreads / bx;
  const int64_t tasks = p.columns ? (M / m.cols) * ((m.cols + bx - 1) / bx) : M;
  const int64_t per_split = p.columns ? int64_t(by) * 16 : 8192;
  m.splits = 1;
  if ((p.columns || block_rows) && tasks < 2 * sms && N >= 2 * per_split)
    m.splits = clamp64(std::min((4 * sms + tasks - 1) / tasks, N / per_split), 1, 1024);

  Tensor scratch;
  S* partial = nullptr;
  if (m.splits > 1) {
    scratch = Tensor::empty({M * m.splits * int64_t(sizeof(S))}, DType::Bool, d);
    partial = scratch.data<S>();
  }
  const T* xp = x.data<T>();
  O* op = out.data<O>();
  if (p.columns) {
    reduce_cols<Acc, T><<<unsigned(tasks * m.splits), dim3(bx, by), 0, st>>>(xp, op, partial, m, acc);
  } else if (block_rows) {
    reduce_rows<kThreads, Acc, T><<<unsigned(M * m.splits), kThreads, 0, st>>>(xp, op, partial, m, acc);
  } else {
    const int64_t per_block = kThreads / 32;
    reduce_rows<32, Acc, T><<<unsigned((M + per_block - 1) / per_block), kThreads, 0, st>>>(xp, op, partial, m, acc);
  }
  KILN_CUDA_LAUNCH_CHECK(name);
  if (m.splits > 1) {
    const int64_t per_block = kThreads / 32;
    reduce_finish<Acc><<<unsigned((M + per_block - 1) / per_block), kThreads, 0, st>>>(partial, op, M, m.splits, acc);
    KILN_CUDA_LAUNCH_CHECK(name);
  }
}

}  // namespace

void reduce(ReduceOp op, const Tensor& x, const Tensor& out, const Shape& dims, double param) {
  const char* name = ops::reduce_op_name(op);
  const ReducePlan p = ops::check_reduce(op, x, out, dims);
  // Each case: the dtypes the op takes and its accumulator for storage type T (Tag<T> t).
  const auto with = [&](auto kinds, auto make) {
    dispatch<decltype(kinds)::value>(x.dtype, name, [&](auto t) {
      run<decltype(make(t)), typename decltype(t)::type>(name, make(t), x, out, p);
    });
  };
  using Any = std::integral_constant<ew::DTypes, ew::DTypes::ANY>;
  using Float = std::integral_constant<ew::DTypes, ew::DTypes::FLOAT>;
  const double scale = 1.0 / double(p.count);
  switch (op) {
    case ReduceOp::sum: return with(Any{}, [](auto t) { return SumAcc<T_of<decltype(t)>>{}; });
    case ReduceOp::mean: return with(Float{}, [&](auto t) { return SumAcc<T_of<decltype(t)>>{scale}; });
    case ReduceOp::max: return with(Any{}, [](auto t) { return ExtremumAcc<T_of<decltype(t)>, true>{}; });
    case ReduceOp::min: return with(Any{}, [](auto t) { return ExtremumAcc<T_of<decltype(t)>, false>{}; });
    case ReduceOp::argmax: return with(Any{}, [](auto t) { return ArgAcc<T_of<decltype(t)>, true>{}; });
    case ReduceOp::argmin: return with(Any{}, [](auto t) { return ArgAcc<T_of<decltype(t)>, false>{}; });
    case ReduceOp::all: return with(Any{}, [](auto t) { return LogicalAcc<T_of<decltype(t)>, true>{}; });
    case ReduceOp::any: return with(Any{}, [](auto t) { return LogicalAcc<T_of<decltype(t)>, false>{}; });
    case ReduceOp::var:
    case ReduceOp::std:
      return with(Float{}, [&](auto t) { return VarAcc<T_of<decltype(t)>>{param, op == ReduceOp::std}; });
    case ReduceOp::logsumexp: return with(Float{}, [](auto t) { return LseAcc<T_of<decltype(t)>>{}; });
    case ReduceOp::kCount: break;
  }
  KILN_INTERNAL_CHECK(false, name);
}

}  // namespace kiln::cuda
