// CUDA layer normalization, forward and backward side by side (twins of native/cpu/norm.cc). Rows
// are the trailing M elements of a contiguous x (a non-contiguous x or gy is copied first, as on
// the CPU). Two traversals, picked on the host:
// - reg: rows of up to 1024 elements (512 in float64), 16-byte aligned: a warp per row holds it in
//   registers, so mean and variance take two passes over registers and x is read once. The
//   backward also sums gy * xhat and gy per column in registers over the rows each warp takes,
//   then across the block's warps in shared memory: x and gy are read once in all.
// - rows: other rows, a warp (M <= 1024) or a block per row, re-reading the row for each pass; the
//   backward's column sums are then a separate kernel over tiles of rows.
// The forward sums x - x0 with x0 the row's first element, so float32 stays accurate for rows whose
// mean is large against their spread (x - x0 is exact there; the CPU kernel uses double).
// Column sums go to per-block partials in a temporary buffer that a second kernel adds up per
// column: fixed grids and fixed orders, no atomics, so results are deterministic.
// add_layer_norm_forward is the forward kernels with a residual add in front (delta and sum non-null):
// each lane adds its chunks of x and delta, rounds to T (so y normalizes the sum as stored, as
// x.add(delta).layerNorm() does) and writes sum; the reg traversal then keeps the sum in registers, the
// rows one recomputes x + delta in each pass rather than reading sum back (lanes never read what
// another lane wrote). What it saves for GPT-2 124M at batch 16 x 1024 (R = 16384 rows of M = 768;
// under bf16 autocast the residual stream and the norm are float32, 50.3 MB a tensor): unfused, the
// add reads x and delta and writes sum (151 MB), then layerNorm reads sum again and writes y (101 MB);
// fused, x and delta in, sum and y out (201 MB): one read of sum (50.3 MB) and one launch less per
// block, 604 MB per training step over 12 blocks (about 0.13 ms at H200's ~4.8 TB/s). The backward
// (layerNormBackward on sum, the add's identity) is unchanged.
#include <algorithm>
#include <initializer_list>
#include "copy.h"
#include "../ops/norm.h"
#include "rowwise.cuh"

namespace kiln::cuda {

using ops::Rows;
using ops::check_layer_norm_backward;
using ops::check_layer_norm_forward;

namespace {

using rowwise::Group;
using rowwise::column_reduce;
using rowwise::dsqrt;
using rowwise::for_row_values;
using rowwise::group_reduce;
using rowwise::kVec;
using rowwise::kWarps;
using rowwise::load;
using rowwise::row_group;
using rowwise::store;

constexpr int kBackwardWarps = 8;  // warps per block of the reg backward (they share column sums)
constexpr int kTotalRows = 32;     // threads along partial rows in layer_norm_totals

// t itself when contiguous, else a contiguous copy (kernels index rows directly).
Tensor contiguous(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor c = Tensor::empty(t.shape, t.dtype, t.device());
  copy(t, c);
  return c;
}

// ---- forward ----

template <typename T, int C>
__global__ void __launch_bounds__(kWarps * 32)
    layer_norm_forward_reg(const T* __restrict__ x, const T* __restrict__ delta, T* __restrict__ sum,
                           const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
                           T* __restrict__ mean, T* __restrict__ rstd, int64_t R, int64_t M, acc_t<T> eps) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  const Group g = row_group<true>();
  const int64_t nv = M / V;
  for (int64_t r = g.first; r < R; r += g.step) {
    const T* xr = x + r * M;
    A v[C][V];
#pragma unroll
    for (int c = 0; c < C; c++) {
      if (c * 32 + g.rank >= nv) continue;
      const int64_t i = (c * 32 + g.rank) * V;
      load<V>(xr + i, v[c]);
      if (delta) {
        A dv[V];
        load<V>(delta + r * M + i, dv);
#pragma unroll
        for (int j = 0; j < V; j++) v[c][j] = dconvert<A>(dconvert<T>(v[c][j] + dv[j]));
        store<V>(sum + r * M + i, v[c]);
      }
    }
    const A x0 = __shfl_sync(0xffffffffu, v[0][0], 0);
    A s = 0;
#pragma unroll
    for (int c = 0; c < C; c++) {
      if (c * 32 + g.rank >= nv) continue;
#pragma unroll
      for (int j = 0; j < V; j++) s += v[c][j] -= x0;
    }
    const A mu = group_reduce<true>(s, static_cast<A*>(nullptr)) / A(M);
    A q = 0;
#pragma unroll
    for (int c = 0; c < C; c++) {
      if (c * 32 + g.rank >= nv) continue;
#pragma unroll
      for (int j = 0; j < V; j++) q += (v[c][j] - mu) * (v[c][j] - mu);
    }
    const A rs = A(1) / dsqrt(group_reduce<true>(q, static_cast<A*>(nullptr)) / A(M) + eps);
    if (g.rank == 0) mean[r] = dconvert<T>(x0 + mu), rstd[r] = dconvert<T>(rs);
#pragma unroll
    for (int c = 0; c < C; c++) {
      const int64_t i = (c * 32 + g.rank) * V;
      if (i >= M) continue;
      A wv[V], bv[V];
      if (w) load<V>(w + i, wv);
      if (b) load<V>(b + i, bv);
#pragma unroll
      for (int j = 0; j < V; j++) {
        A h = (v[c][j] - mu) * rs;
        if (w) h *= wv[j];
        if (b) h += bv[j];
        v[c][j] = h;
      }
      store<V>(y + r * M + i, v[c]);
    }
  }
}

// The row's values (x + delta rounded to T, when delta is given) chunk by chunk: f(i, values).
template <int V, typename A, typename T, typename F>
__device__ __forceinline__ void for_row_inputs(const T* xr, const T* dr, int64_t M, const Group& g, F f) {
  if (!dr) return for_row_values<V, A>(xr, M, g.rank, g.size, f);
  for_row_values<V, A>(xr, dr, M, g.rank, g.size, [&](int64_t i, auto& u, auto& v) {
#pragma unroll
    for (int j = 0; j < int(sizeof(u) / sizeof(A)); j++) u[j] = dconvert<A>(dconvert<T>(u[j] + v[j]));
    f(i, u);
  });
}

template <typename T, bool Warp, int V>
__global__ void layer_norm_forward_rows(const T* __restrict__ x, const T* __restrict__ delta, T* __restrict__ sum,
                                        const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
                                        T* __restrict__ mean, T* __restrict__ rstd, int64_t R, int64_t M,
                                        acc_t<T> eps) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  const Group g = row_group<Warp>();
  for (int64_t r = g.first; r < R; r += g.step) {
    const T* xr = x + r * M;
    const T* dr = delta ? delta + r * M : nullptr;
    const A x0 = M > 0 ? (dr ? dconvert<A>(dconvert<T>(dconvert<A>(xr[0]) + dconvert<A>(dr[0]))) : dconvert<A>(xr[0]))
                       : A(0);
    A s = 0, q = 0;
    for_row_inputs<V, A>(xr, dr, M, g, [&](int64_t i, auto& v) {
      for (A e : v) s += e - x0;
      if (dr) store(sum + r * M + i, v);
    });
    const A mu = group_reduce<Warp>(s, shared) / A(M);
    for_row_inputs<V, A>(xr, dr, M, g, [&](int64_t, auto& v) {
      for (A e : v) q += (e - x0 - mu) * (e - x0 - mu);
    });
    const A rs = A(1) / dsqrt(group_reduce<Warp>(q, shared) / A(M) + eps);
    if (g.rank == 0) mean[r] = dconvert<T>(x0 + mu), rstd[r] = dconvert<T>(rs);
    for_row_inputs<V, A>(xr, dr, M, g, [&](int64_t i, auto& v) {
#pragma unroll
      for (int j = 0; j < int(sizeof(v) / sizeof(A)); j++) {
        A h = (v[j] - x0 - mu) * rs;
        if (w) h *= dconvert<A>(w[i + j]);
        if (b) h += dconvert<A>(b[i + j]);
        v[j] = h;
      }
      store(y + r * M + i, v);
    });
  }
}

// ---- backward ----
//
// gx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = gy * weight and xhat = (x - mean) *
// rstd; gweight = sum over rows of gy * xhat, gbias = sum of gy. `part` (null when neither column
// sum is wanted) gets one row of 2 * M partial sums (gweight's, then gbias's) per block.

template <typename T, int C>
__global__ void __launch_bounds__(kBackwardWarps * 32)
    layer_norm_backward_reg(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ mean,
                            const T* __restrict__ rstd, const T* __restrict__ w, T* __restrict__ gx,
                            acc_t<T>* __restrict__ part, int64_t R, int64_t M) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  const Group g = row_group<true>();
  const int64_t nv = M / V;
  A aw[C][V] = {}, ab[C][V] = {};
  for (int64_t r = g.first; r < R; r += g.step) {
    A xv[C][V], gv[C][V];
#pragma unroll
    for (int c = 0; c < C; c++) {
      if (c * 32 + g.rank >= nv) continue;
      load<V>(x + r * M + (c * 32 + g.rank) * V, xv[c]);
      load<V>(gy + r * M + (c * 32 + g.rank) * V, gv[c]);
    }
    const A m = dconvert<A>(mean[r]), k = dconvert<A>(rstd[r]);
    A s1 = 0, s2 = 0;
#pragma unroll
    for (int c = 0; c < C; c++) {
      const int64_t i = (c * 32 + g.rank) * V;
      if (i >= M) continue;
      A wv[V];
      if (w) load<V>(w + i, wv);
#pragma unroll
      for (int j = 0; j < V; j++) {
        const A xh = (xv[c][j] - m) * k;
        if (part) aw[c][j] += gv[c][j] * xh, ab[c][j] += gv[c][j];
        if (w) gv[c][j] *= wv[j];
        s1 += gv[c][j];
        s2 += gv[c][j] * xh;
        xv[c][j] = xh;
      }
    }
    if (!gx) continue;
    const A a = group_reduce<true>(s1, static_cast<A*>(nullptr)) / A(M);
    const A cm = group_reduce<true>(s2, static_cast<A*>(nullptr)) / A(M);
#pragma unroll
    for (int c = 0; c < C; c++) {
      if (c * 32 + g.rank >= nv) continue;
#pragma unroll
      for (int j = 0; j < V; j++) gv[c][j] = k * (gv[c][j] - a - xv[c][j] * cm);
      store<V>(gx + r * M + (c * 32 + g.rank) * V, gv[c]);
    }
  }
  if (!part) return;
  // Warps w and w + h pair up, halving h each round: a fixed tree over the block's warps.
  A* sh = reinterpret_cast<A*>(smem);
  const int warp = threadIdx.x >> 5;
  for (int h = blockDim.x >> 6; h > 0; h >>= 1) {
    if (warp >= h && warp < 2 * h) {
#pragma unroll
      for (int c = 0; c < C; c++) {
        const int64_t i = (c * 32 + g.rank) * V;
        if (i >= M) continue;
#pragma unroll
        for (int j = 0; j < V; j++) {
          sh[(warp - h) * 2 * M + i + j] = aw[c][j];
          sh[(warp - h) * 2 * M + M + i + j] = ab[c][j];
        }
      }
    }
    __syncthreads();
    if (warp < h) {
#pragma unroll
      for (int c = 0; c < C; c++) {
        const int64_t i = (c * 32 + g.rank) * V;
        if (i >= M) continue;
#pragma unroll
        for (int j = 0; j < V; j++) aw[c][j] += sh[warp * 2 * M + i + j], ab[c][j] += sh[warp * 2 * M + M + i + j];
      }
    }
    __syncthreads();
  }
  if (warp != 0) return;
  A* out = part + int64_t(blockIdx.x) * 2 * M;
#pragma unroll
  for (int c = 0; c < C; c++) {
    const int64_t i = (c * 32 + g.rank) * V;
    if (i >= M) continue;
    store<V>(out + i, aw[c]);
    store<V>(out + M + i, ab[c]);
  }
}

template <typename T, bool Warp, int V>
__global__ void layer_norm_backward_rows(const T* __restrict__ gy, const T* __restrict__ x,
                                         const T* __restrict__ mean, const T* __restrict__ rstd,
                                         const T* __restrict__ w, T* __restrict__ gx, int64_t R, int64_t M) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  const Group g = row_group<Warp>();
  for (int64_t r = g.first; r < R; r += g.step) {
    const T *xr = x + r * M, *gr = gy + r * M;
    const A m = dconvert<A>(mean[r]), k = dconvert<A>(rstd[r]);
    // g = gy * weight at element i
    auto gw = [&](int64_t i, A v) { return w ? v * dconvert<A>(w[i]) : v; };
    A s1 = 0, s2 = 0;
    for_row_values<V, A>(xr, gr, M, g.rank, g.size, [&](int64_t i, auto& u, auto& v) {
#pragma unroll
      for (int j = 0; j < int(sizeof(u) / sizeof(A)); j++) {
        s1 += gw(i + j, v[j]);
        s2 += gw(i + j, v[j]) * (u[j] - m) * k;
      }
    });
    const A a = group_reduce<Warp>(s1, shared) / A(M);
    const A cm = group_reduce<Warp>(s2, shared) / A(M);
    for_row_values<V, A>(xr, gr, M, g.rank, g.size, [&](int64_t i, auto& u, auto& v) {
#pragma unroll
      for (int j = 0; j < int(sizeof(u) / sizeof(A)); j++) v[j] = k * (gw(i + j, v[j]) - a - (u[j] - m) * k * cm);
      store(gx + r * M + i, v);
    });
  }
}

// Column sums for the rows traversal: block (32 columns, kThreads / 32 row slices) over a tile of
// rows_per_tile rows (blockIdx.y); writes the tile's row of `part`.
template <typename T>
__global__ void layer_norm_backward_cols(const T* __restrict__ gy, const T* __restrict__ x,
                                         const T* __restrict__ mean, const T* __restrict__ rstd,
                                         acc_t<T>* __restrict__ part, int64_t R, int64_t M, int64_t rows_per_tile) {
  using A = acc_t<T>;
  __shared__ A shared[kThreads];
  const int64_t col = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_tile, r1 = min(R, r0 + rows_per_tile);
  A sw = 0, sb = 0;
  for (int64_t r = r0 + threadIdx.y; col < M && r < r1; r += blockDim.y) {
    const A gv = dconvert<A>(gy[r * M + col]);
    sw += gv * (dconvert<A>(x[r * M + col]) - dconvert<A>(mean[r])) * dconvert<A>(rstd[r]);
    sb += gv;
  }
  sw = column_reduce(sw, shared);
  sb = column_reduce(sb, shared);
  if (col >= M || threadIdx.y != 0) return;
  part[int64_t(blockIdx.y) * 2 * M + col] = sw;
  part[int64_t(blockIdx.y) * 2 * M + M + col] = sb;
}

// Adds up the P rows of partial sums per column into gweight (blockIdx.y 0) and gbias (1), either
// of which may be null: block (32 columns, kTotalRows partial rows).
template <typename T>
__global__ void layer_norm_totals(const acc_t<T>* __restrict__ part, int64_t P, int64_t M, T* __restrict__ gw,
                                  T* __restrict__ gb) {
  using A = acc_t<T>;
  __shared__ A shared[32 * kTotalRows];
  T* out = blockIdx.y ? gb : gw;
  if (!out) return;
  const int64_t col = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const A* src = part + int64_t(blockIdx.y) * M;
  A s = 0;
  for (int64_t p = threadIdx.y; col < M && p < P; p += blockDim.y) s += src[p * 2 * M + col];
  s = column_reduce(s, shared);
  if (col < M && threadIdx.y == 0) out[col] = dconvert<T>(s);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Chunks per lane of the reg kernels for rows of M elements of type T whose operands (null
// entries skipped) all start 16-byte aligned; 0 when the rows traversal must be used.
template <typename T>
int reg_chunks(int64_t M, std::initializer_list<const void*> ptrs) {
  if (M % kVec<T>) return 0;
  for (const void* p : ptrs)
    if (p && !aligned16(p)) return 0;
  return rowwise::reg_chunks(M, kVec<T>);
}

// The rows plan of n contiguous R x M operands for rowwise::with_rows.
template <int N>
rowwise::Plan<N> rows_plan(const char* op, int64_t R, int64_t M) {
  const Shape shape{R, M}, strides = contiguous_strides(shape);
  std::array<const Shape*, N> s;
  s.fill(&strides);
  return rowwise::plan<N>(op, shape, 1, s);
}

}  // namespace

namespace {

// The forward on x (copied when not contiguous), plus delta into sum when delta is given.
void forward(const char* op, const Tensor& x_in, const Tensor* delta_in, const Tensor* sum, const Tensor* weight,
             const Tensor* bias, const Rows& rows, double eps, const Tensor& y, const Tensor& mean,
             const Tensor& rstd) {
  const int64_t R = rows.R, M = rows.M;
  if (R == 0) return;
  const Tensor x = contiguous(x_in);
  const Tensor delta = delta_in ? contiguous(*delta_in) : Tensor();
  const Tensor w = weight ? contiguous(*weight) : Tensor();
  const Tensor b = bias ? contiguous(*bias) : Tensor();
  const Device dev = x.device();
  cudaStream_t s = stream(dev);
  KILN_CUDA_DISPATCH_FLOAT(x.dtype, op, {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* xp = x.data<T>();
    const T* dp = delta_in ? delta.data<T>() : nullptr;
    T* sp = sum ? sum->data<T>() : nullptr;
    const T* wp = weight ? w.data<T>() : nullptr;
    const T* bp = bias ? b.data<T>() : nullptr;
    T* yp = y.data<T>();
    T *mp = mean.data<T>(), *rp = rstd.data<T>();
    if (const int c = reg_chunks<T>(M, {xp, dp, sp, yp, wp, bp})) {
      rowwise::with_chunks<kVec<T>>(c, [&](auto C) {
        layer_norm_forward_reg<T, decltype(C)::value><<<rowwise::row_blocks(R, kWarps, dev), kWarps * 32, 0, s>>>(
            xp, dp, sp, wp, bp, yp, mp, rp, R, M, A(eps));
      });
    } else {
      // Every row operand shares the phase checked here, so each lane's chunks are the same in all of them.
      rowwise::with_rows<T, 4>(rows_plan<4>(op, R, M), {xp, yp, dp ? dp : xp, sp ? sp : yp}, 4, dev,
                               [&](auto warp, auto vec, unsigned blocks, unsigned threads) {
                                 layer_norm_forward_rows<T, decltype(warp)::value, decltype(vec)::value>
                                     <<<blocks, threads, 0, s>>>(xp, dp, sp, wp, bp, yp, mp, rp, R, M, A(eps));
                               });
    }
  });
  KILN_CUDA_LAUNCH_CHECK(op);
}

}  // namespace

void layer_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias, int64_t norm_dims, double eps,
                        const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  const Rows rows = check_layer_norm_forward(x, weight, bias, norm_dims, y, mean, rstd);
  forward("layerNorm", x, nullptr, nullptr, weight, bias, rows, eps, y, mean, rstd);
}

void add_layer_norm_forward(const Tensor& x, const Tensor& delta, const Tensor* weight, const Tensor* bias,
                            double eps, const Tensor& sum, const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  const Rows rows = ops::check_add_layer_norm_forward(x, delta, weight, bias, sum, y, mean, rstd);
  forward("addLayerNorm", x, &delta, &sum, weight, bias, rows, eps, y, mean, rstd);
}

void layer_norm_backward(const Tensor& gy_in, const Tensor& x_in, const Tensor& mean_in, const Tensor& rstd_in,
                         const Tensor* weight, int64_t norm_dims, const Tensor* gx, const Tensor* gweight,
                         const Tensor* gbias) {
  const char* op = "layerNorm backward";
  const Rows rows = check_layer_norm_backward(gy_in, x_in, mean_in, rstd_in, weight, norm_dims, gx, gweight, gbias);
  const int64_t R = rows.R, M = rows.M;
  const bool sums = gweight || gbias;
  if (R == 0) {
    // No rows: the column sums are empty sums.
    for (const Tensor* t : {gweight, gbias})
      if (t) fill(*t, 0);
    return;
  }
  if (M == 0 || !(gx || sums)) return;
  const Tensor x = contiguous(x_in), gy = contiguous(gy_in), mean = contiguous(mean_in), rstd = contiguous(rstd_in);
  const Tensor w = weight ? contiguous(*weight) : Tensor();
  const Device dev = x.device();
  cudaStream_t s = stream(dev);
  KILN_CUDA_DISPATCH_FLOAT(x.dtype, op, {
    using T = scalar_t;
    using A = acc_t<T>;
    const T *xp = x.data<T>(), *gp = gy.data<T>(), *mp = mean.data<T>(), *rp = rstd.data<T>();
    const T* wp = weight ? w.data<T>() : nullptr;
    T* gxp = gx ? gx->data<T>() : nullptr;
    Tensor part;  // partial column sums, P rows of 2 * M
    int64_t P = 0;
    auto alloc_part = [&](int64_t rows) {
      P = rows;
      part = Tensor::empty({P, 2 * M}, sizeof(A) == 8 ? DType::Float64 : DType::Float32, dev);
    };
    if (const int c = reg_chunks<T>(M, {xp, gp, gxp, wp})) {
      rowwise::with_chunks<kVec<T>>(c, [&](auto C) {
        auto kernel = layer_norm_backward_reg<T, decltype(C)::value>;
        const size_t shared = sums ? size_t(kBackwardWarps / 2) * 2 * size_t(M) * sizeof(A) : 0;
        int per_sm = 0;
        KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kBackwardWarps * 32, shared),
                        op);
        const int64_t resident = int64_t(std::max(per_sm, 1)) * sm_count(dev);
        const unsigned blocks = unsigned(std::min<int64_t>((R + kBackwardWarps - 1) / kBackwardWarps, resident));
        if (sums) alloc_part(blocks);
        kernel<<<blocks, kBackwardWarps * 32, shared, s>>>(gp, xp, mp, rp, wp, gxp, sums ? part.data<A>() : nullptr,
                                                          R, M);
      });
    } else {
      if (gx) {
        rowwise::with_rows<T, 3>(rows_plan<3>(op, R, M), {xp, gp, gxp}, 3, dev,
                                 [&](auto warp, auto vec, unsigned blocks, unsigned threads) {
                                   layer_norm_backward_rows<T, decltype(warp)::value, decltype(vec)::value>
                                       <<<blocks, threads, 0, s>>>(gp, xp, mp, rp, wp, gxp, R, M);
                                 });
      }
      if (sums) {
        const int64_t tiles = (M + 31) / 32;
        const int64_t want = std::max<int64_t>(1, int64_t(sm_count(dev)) * 8 / tiles);
        const int64_t per_tile = std::max<int64_t>((R + want - 1) / want, 32);
        alloc_part((R + per_tile - 1) / per_tile);
        layer_norm_backward_cols<T><<<dim3(unsigned(tiles), unsigned(P)), dim3(32, kThreads / 32), 0, s>>>(
            gp, xp, mp, rp, part.data<A>(), R, M, per_tile);
      }
    }
    KILN_CUDA_LAUNCH_CHECK(op);
    if (sums) {
      layer_norm_totals<T><<<dim3(unsigned((M + 31) / 32), 2), dim3(32, kTotalRows), 0, s>>>(
          part.data<A>(), P, M, gweight ? gweight->data<T>() : nullptr, gbias ? gbias->data<T>() : nullptr);
    }
  });
  KILN_CUDA_LAUNCH_CHECK(op);
}

}  // namespace kiln::cuda
