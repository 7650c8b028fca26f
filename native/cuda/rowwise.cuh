// Row-wise kernel helpers, shared by softmax.cu and norm.cu: loads in 16-byte chunks, online
// log-sum-exp, warp / block / column reductions in a fixed order (so results do not depend on
// timing), and the host-side plans that pick a traversal. A "row" is a reduction of length D along
// one dim, repeated over the other dims ("rest"), whose StridedMeta gives each row's base offsets.
#pragma once
#include <array>
#include <cstdint>
#include <utility>
#include "common.cuh"
#include "reduce.cuh"

namespace kiln::cuda::rowwise {

constexpr int kWarpRowMax = 1024;  // longest row a warp takes; longer rows get a block
constexpr int kWarps = 4;          // rows per block when a warp takes a row
constexpr int kBlockThreads = 512;  // threads per block when a block takes a row
constexpr int kMaxChunks = 8;      // 16-byte chunks per lane when a warp holds its row in registers

template <typename T>
constexpr int kVec = 16 / int(sizeof(T));  // elements per 16-byte load

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Loads n elements from p (16-byte aligned when n > 1) converted to A; stores likewise.
template <int N, typename A, typename T>
__device__ __forceinline__ void load(const T* p, A (&out)[N]) {
  const Pack<T, N> v = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
  for (int j = 0; j < N; j++) out[j] = dconvert<A>(v.v[j]);
}
template <int N, typename A, typename T>
__device__ __forceinline__ void store(T* p, const A (&in)[N]) {
  Pack<T, N> v;
#pragma unroll
  for (int j = 0; j < N; j++) v.v[j] = dconvert<T>(in[j]);
  *reinterpret_cast<Pack<T, N>*>(p) = v;
}

__device__ __forceinline__ float dexp(float v) { return expf(v); }
__device__ __forceinline__ double dexp(double v) { return exp(v); }
__device__ __forceinline__ float dlog(float v) { return logf(v); }
__device__ __forceinline__ double dlog(double v) { return log(v); }
__device__ __forceinline__ float dsqrt(float v) { return sqrtf(v); }
__device__ __forceinline__ double dsqrt(double v) { return sqrt(v); }
// Maximum that skips NaN, like std::max(m, x) in the CPU kernels (a NaN still poisons the sums).
__device__ __forceinline__ float amax(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double amax(double a, double b) { return fmax(a, b); }

__device__ __forceinline__ float shfl_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = amax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double shfl_max(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = amax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Reduction states: a plain sum (float, double) and Lse, combined by combine() and moved between
// lanes by shfl_xor(). combine is commutative bit for bit, so every lane of a butterfly agrees.
__device__ __forceinline__ float combine(float a, float b) { return a + b; }
__device__ __forceinline__ double combine(double a, double b) { return a + b; }
__device__ __forceinline__ float shfl_xor(float v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
__device__ __forceinline__ double shfl_xor(double v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }

// Online log-sum-exp: running max m, s = sum exp(x - m), and sx = sum x (cross-entropy's smoothing).
template <typename A>
struct Lse {
  A m, s, sx;
  __device__ static Lse identity() { return {neg_inf<A>(), A(0), A(0)}; }
  template <int N>
  __device__ __forceinline__ void add(const A (&v)[N]) {
    A cm = v[0];
#pragma unroll
    for (int j = 1; j < N; j++) cm = amax(cm, v[j]);
    const A m2 = amax(m, cm);
#pragma unroll
    for (int j = 0; j < N; j++) sx += v[j];
    if (m2 == neg_inf<A>()) return;  // nothing above -inf yet: exp(-inf - -inf) would be NaN
    s *= dexp(m - m2);
#pragma unroll
    for (int j = 0; j < N; j++) s += dexp(v[j] - m2);
    m = m2;
  }
};
template <typename A>
__device__ __forceinline__ Lse<A> combine(const Lse<A>& a, const Lse<A>& b) {
  const A m = amax(a.m, b.m);
  if (m == neg_inf<A>()) return {m, a.s + b.s, a.sx + b.sx};
  return {m, a.s * dexp(a.m - m) + b.s * dexp(b.m - m), a.sx + b.sx};
}
template <typename A>
__device__ __forceinline__ Lse<A> shfl_xor(const Lse<A>& v, int o) {
  return {shfl_xor(v.m, o), shfl_xor(v.s, o), shfl_xor(v.sx, o)};
}

// The threads that share a row: a warp (Warp) or the whole block, and the rows they take in turn.
struct Group {
  int rank, size;
  int64_t first, step;
};
template <bool Warp>
__device__ __forceinline__ Group row_group() {
  if (Warp) {
    const int per_block = blockDim.x >> 5;
    return {int(threadIdx.x & 31), 32, int64_t(blockIdx.x) * per_block + (threadIdx.x >> 5),
            int64_t(gridDim.x) * per_block};
  }
  return {int(threadIdx.x), int(blockDim.x), int64_t(blockIdx.x), int64_t(gridDim.x)};
}

// Reduces v over a row's group; every thread gets the same result, combined in a fixed order.
// The block case uses `shared` (32 states) and __syncthreads(): all threads of the block call it.
template <bool Warp, typename S>
__device__ __forceinline__ S group_reduce(S v, S* shared) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = combine(v, shfl_xor(v, o));
  if constexpr (!Warp) {
    __syncthreads();  // shared may still be read by a previous call
    if ((threadIdx.x & 31) == 0) shared[threadIdx.x >> 5] = v;
    __syncthreads();
    v = shared[0];
    for (int w = 1; w < int(blockDim.x >> 5); w++) v = combine(v, shared[w]);
  }
  return v;
}

// Reduces v over threadIdx.y (blockDim.y a power of two) for each threadIdx.x, in a fixed tree
// order; every thread gets its column's result. `shared` holds blockDim.x * blockDim.y states; all
// threads of the block call it.
template <typename S>
__device__ __forceinline__ S column_reduce(S v, S* shared) {
  const int tx = threadIdx.x, ty = threadIdx.y, bx = blockDim.x;
  shared[ty * bx + tx] = v;
  for (int h = blockDim.y >> 1; h > 0; h >>= 1) {
    __syncthreads();
    if (ty < h) shared[ty * bx + tx] = v = combine(v, shared[(ty + h) * bx + tx]);
  }
  __syncthreads();
  const S r = shared[tx];
  __syncthreads();  // shared is reused by the next call
  return r;
}

// Visits a row of D elements in chunks: f(i, std::integral_constant<int, n>) for the n elements
// from index i. With V > 1 the row's operands share their 16-byte phase (checked on the host), and
// the aligned body goes in chunks of V (16-byte loads) between a scalar head and tail, so rows of
// any length and offset vectorize. Thread `rank` of `size` takes every size-th chunk.
template <int V, typename T, typename F>
__device__ __forceinline__ void for_row(const T* row, int64_t D, int rank, int size, F f) {
  int64_t head = 0;
  if constexpr (V > 1) {
    head = int64_t((16 - (reinterpret_cast<uintptr_t>(row) & 15)) & 15) / int64_t(sizeof(T));
    if (head > D) head = D;
    if (rank < head) f(int64_t(rank), std::integral_constant<int, 1>{});
  }
  const int64_t nv = (D - head) / V;
#pragma unroll 4
  for (int64_t j = rank; j < nv; j += size) f(head + j * V, std::integral_constant<int, V>{});
  if constexpr (V > 1) {
    for (int64_t i = head + nv * V + rank; i < D; i += size) f(i, std::integral_constant<int, 1>{});
  }
}

// for_row passing each chunk's values, converted to A: f(i, a) with a the A[n] of operand p at i,
// or f(i, a, b) with operands p and q (which share p's phase).
template <int V, typename A, typename T, typename F>
__device__ __forceinline__ void for_row_values(const T* p, int64_t D, int rank, int size, F f) {
  for_row<V>(p, D, rank, size, [&](int64_t i, auto n) {
    A a[decltype(n)::value];
    load<decltype(n)::value>(p + i, a);
    f(i, a);
  });
}
template <int V, typename A, typename T, typename F>
__device__ __forceinline__ void for_row_values(const T* p, const T* q, int64_t D, int rank, int size, F f) {
  for_row<V>(p, D, rank, size, [&](int64_t i, auto n) {
    A a[decltype(n)::value], b[decltype(n)::value];
    load<decltype(n)::value>(p + i, a);
    load<decltype(n)::value>(q + i, b);
    f(i, a, b);
  });
}

// ---- host side ----

// A reduction along one dim of N operands of the same shape (dim < 0: none, a single element).
template <int N>
struct Plan {
  int64_t D = 1;
  int64_t sd[N] = {};       // each operand's stride along the reduced dim
  StridedMeta<N> rest{};    // the other dims: rest.numel rows
};

template <int N>
Plan<N> plan(const char* op, const Shape& shape, int64_t dim, const std::array<const Shape*, N>& strides) {
  Plan<N> p;
  Shape rshape;
  std::array<Shape, N> rs;
  for (int64_t d = 0; d < int64_t(shape.size()); d++) {
    if (d == dim) {
      p.D = shape[d];
      for (int k = 0; k < N; k++) p.sd[k] = (*strides[k])[d];
      continue;
    }
    rshape.push_back(shape[d]);
    for (int k = 0; k < N; k++) rs[k].push_back((*strides[k])[d]);
  }
  std::array<const Shape*, N> ptrs;
  for (int k = 0; k < N; k++) ptrs[k] = &rs[k];
  p.rest = make_meta<N>(op, rshape, ptrs);
  return p;
}

// Whether the first n operands are unit-stride along the reduced dim (rows are contiguous).
template <int N>
bool unit_rows(const Plan<N>& p, int n) {
  for (int k = 0; k < n; k++)
    if (p.sd[k] != 1 && p.D > 1) return false;
  return true;
}

// Whether every row of the first n operands starts at the same offset within 16 bytes, so for_row
// can use 16-byte loads on all of them at once.
template <int N>
bool same_phase(const Plan<N>& p, const std::array<const void*, N>& ptrs, size_t itemsize, int n) {
  for (int k = 1; k < n; k++) {
    if ((reinterpret_cast<uintptr_t>(ptrs[k]) - reinterpret_cast<uintptr_t>(ptrs[0])) % 16) return false;
    for (int d = 0; d < p.rest.ndim; d++)
      if (((p.rest.strides[k][d] - p.rest.strides[0][d]) * int64_t(itemsize)) % 16) return false;
  }
  return true;
}

// Whether every row of the first n operands starts 16-byte aligned and D is a whole number of
// 16-byte chunks: the row then fits the register-resident warp kernels.
template <int N>
bool aligned_rows(const Plan<N>& p, const std::array<const void*, N>& ptrs, size_t itemsize, int n) {
  const int64_t v = 16 / int64_t(itemsize);
  if (p.D % v) return false;
  for (int k = 0; k < n; k++) {
    if (reinterpret_cast<uintptr_t>(ptrs[k]) % 16) return false;
    for (int d = 0; d < p.rest.ndim; d++)
      if (p.rest.strides[k][d] % v) return false;
  }
  return true;
}

// Chunks per lane for a register-resident row of D elements in 16-byte chunks of v elements; 0 when
// the row is too long (at most kMaxChunks, and at most 32 values per lane).
inline int reg_chunks(int64_t D, int64_t v) {
  const int64_t c = (D + 32 * v - 1) / (32 * v);
  return D > 0 && D <= kWarpRowMax && c <= kMaxChunks && c * v <= 32 ? int(c) : 0;
}

// Calls f(std::integral_constant<int, C>{}) for C = c in [1, kMaxChunks] with C * V <= 32.
template <int V, typename F>
void with_chunks(int c, F f) {
  auto at = [&](auto k) {
    if constexpr (decltype(k)::value * V <= 32) f(k);
  };
  switch (c) {
    case 1: at(std::integral_constant<int, 1>{}); break;
    case 2: at(std::integral_constant<int, 2>{}); break;
    case 3: at(std::integral_constant<int, 3>{}); break;
    case 4: at(std::integral_constant<int, 4>{}); break;
    case 5: at(std::integral_constant<int, 5>{}); break;
    case 6: at(std::integral_constant<int, 6>{}); break;
    case 7: at(std::integral_constant<int, 7>{}); break;
    default: at(std::integral_constant<int, 8>{}); break;
  }
}

// Blocks for `rows` rows at rows_per_block each, capped (the kernels loop over rows).
inline unsigned row_blocks(int64_t rows, int64_t rows_per_block, Device d) {
  const int64_t b = (rows + rows_per_block - 1) / rows_per_block, cap = int64_t(sm_count(d)) * 64;
  return unsigned(b < 1 ? 1 : (b > cap ? cap : b));
}

// Calls f(warp, vec, blocks, threads) for the row kernels of plan p: warp (std::bool_constant) for
// rows up to kWarpRowMax, vec (std::integral_constant) 16-byte loads when the first n operands
// share their phase.
template <typename T, int N, typename F>
void with_rows(const Plan<N>& p, const std::array<const void*, N>& ptrs, int n, Device d, F f) {
  const bool warp = p.D <= kWarpRowMax;
  const bool vec = same_phase<N>(p, ptrs, sizeof(T), n);
  const unsigned threads = warp ? kWarps * 32 : kBlockThreads;
  const unsigned blocks = row_blocks(p.rest.numel, warp ? kWarps : 1, d);
  auto go = [&](auto w) {
    if (vec) f(w, std::integral_constant<int, kVec<T>>{}, blocks, threads);
    else f(w, std::integral_constant<int, 1>{}, blocks, threads);
  };
  if (warp) go(std::true_type{});
  else go(std::false_type{});
}

// Block shape for the column kernels: x across neighbouring rows, y (a power of two) splitting D.
inline dim3 column_block(int64_t cols, int64_t D) {
  unsigned bx = 1, by = 1;
  while (bx < 32 && bx < cols) bx <<= 1;
  while (bx * by < unsigned(kThreads) && by < D) by <<= 1;
  return dim3(bx, by);
}

}  // namespace kiln::cuda::rowwise
