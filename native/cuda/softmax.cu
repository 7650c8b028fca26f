// CUDA softmax family: softmax / log-softmax along any dim and cross-entropy fused with
// log-softmax, forward and backward side by side (twins of native/cpu/softmax.cc; the contract is
// native/ops/softmax.h). float32, float64 and bfloat16 (computed in float32).
//
// Each kernel reduces rows of length D along one dim, one row per index of the other dims (see the
// helpers in rowwise.cuh). Three traversals, picked on the host:
// - reg: contiguous, 16-byte aligned rows of up to 1024 elements (512 in float64), a warp per row
//   holding it in registers: one read and one write per element.
// - rows: other contiguous rows, a warp (D <= 1024) or a block per row; online log-sum-exp (max
//   and sum in one pass), then the writing pass, 16-byte loads over each row's aligned body.
// - cols: strided rows (softmax over a non-last dim, cross-entropy over [N, C, d...]): threads
//   along x take neighbouring rows, adjacent in memory, and walk the reduced dim with its stride;
//   threads along y split the reduced dim and combine through shared memory.
// Sums are in acc_t (float for float and bfloat16) and combined in a fixed order: results do not
// depend on timing. Cross-entropy's mean is a second one-block kernel over per-row partials (no
// atomics, no host sync).
#include <algorithm>
#include <cmath>
#include <type_traits>
#include "../ops/softmax.h"
#include "device_errors.h"
#include "rowwise.cuh"

namespace kiln::cuda {

using ops::Reduction;
using ops::with_class_dim;

namespace {

using rowwise::Group;
using rowwise::Lse;
using rowwise::Plan;
using rowwise::amax;
using rowwise::column_reduce;
using rowwise::dexp;
using rowwise::dlog;
using rowwise::for_row_values;
using rowwise::group_reduce;
using rowwise::kVec;
using rowwise::load;
using rowwise::row_group;
using rowwise::store;

// Row kernels pay off from 32 elements; shorter rows go to the column kernels, which put 32
// neighbouring rows side by side instead of leaving most of a warp idle.
template <int N>
bool use_rows(const Plan<N>& p, int n) {
  return p.D >= 32 && rowwise::unit_rows<N>(p, n);
}

// ---- softmax / log-softmax ----

template <typename A>
__device__ __forceinline__ A softmax_out(A x, const Lse<A>& st, A shift, A inv, bool log) {
  return log ? x - shift : dexp(x - st.m) * inv;
}
// The backward's row sum s adds up softmax_grad_term: gy * y for softmax, gy for log-softmax.
template <typename A>
__device__ __forceinline__ A softmax_grad_term(A y, A g, bool log) {
  return log ? g : g * y;
}
template <typename A>
__device__ __forceinline__ A softmax_grad(A y, A g, A s, bool log) {
  return log ? g - dexp(y) * s : y * (g - s);
}

// The online log-sum-exp of a row of D elements, reduced over its group (every thread gets it).
template <bool Warp, int V, typename T, typename A>
__device__ __forceinline__ Lse<A> row_lse(const T* xr, int64_t D, const Group& g, Lse<A>* shared) {
  Lse<A> st = Lse<A>::identity();
  for_row_values<V, A>(xr, D, g.rank, g.size, [&](int64_t, auto& v) { st.add(v); });
  return group_reduce<Warp>(st, shared);
}

template <typename T, int C>
__global__ void __launch_bounds__(rowwise::kWarps * 32)
    softmax_forward_reg(const T* __restrict__ x, T* __restrict__ y, StridedMeta<2> rows, int64_t D, bool log) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  const Group g = row_group<true>();
  const int64_t nv = D / V;
  for (int64_t r = g.first; r < rows.numel; r += g.step) {
    int64_t off[2];
    rows.offsets(r, off);
    A v[C][V];
    A m = neg_inf<A>();
#pragma unroll
    for (int c = 0; c < C; c++) {
      if (c * 32 + g.rank >= nv) continue;
      load<V>(x + off[0] + (c * 32 + g.rank) * V, v[c]);
#pragma unroll
      for (int j = 0; j < V; j++) m = amax(m, v[c][j]);
    }
    m = rowwise::shfl_max(m);
    A s = 0;
#pragma unroll
    for (int c = 0; c < C; c++) {
      if (c * 32 + g.rank >= nv) continue;
#pragma unroll
      for (int j = 0; j < V; j++) {
        const A e = dexp(v[c][j] - m);
        s += e;
        if (!log) v[c][j] = e;
      }
    }
    s = group_reduce<true>(s, static_cast<A*>(nullptr));
    const A shift = m + dlog(s), inv = A(1) / s;
#pragma unroll
    for (int c = 0; c < C; c++) {
      if (c * 32 + g.rank >= nv) continue;
#pragma unroll
      for (int j = 0; j < V; j++) v[c][j] = log ? v[c][j] - shift : v[c][j] * inv;
      store<V>(y + off[1] + (c * 32 + g.rank) * V, v[c]);
    }
  }
}

template <typename T, int C>
__global__ void __launch_bounds__(rowwise::kWarps * 32)
    softmax_backward_reg(const T* __restrict__ y, const T* __restrict__ gy, T* __restrict__ gx, StridedMeta<3> rows,
                         int64_t D, bool log) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  const Group g = row_group<true>();
  const int64_t nv = D / V;
  for (int64_t r = g.first; r < rows.numel; r += g.step) {
    int64_t off[3];
    rows.offsets(r, off);
    A yv[C][V], gv[C][V];
    A s = 0;
#pragma unroll
    for (int c = 0; c < C; c++) {
      if (c * 32 + g.rank >= nv) continue;
      load<V>(y + off[0] + (c * 32 + g.rank) * V, yv[c]);
      load<V>(gy + off[1] + (c * 32 + g.rank) * V, gv[c]);
#pragma unroll
      for (int j = 0; j < V; j++) s += softmax_grad_term(yv[c][j], gv[c][j], log);
    }
    s = group_reduce<true>(s, static_cast<A*>(nullptr));
#pragma unroll
    for (int c = 0; c < C; c++) {
      if (c * 32 + g.rank >= nv) continue;
#pragma unroll
      for (int j = 0; j < V; j++) gv[c][j] = softmax_grad(yv[c][j], gv[c][j], s, log);
      store<V>(gx + off[2] + (c * 32 + g.rank) * V, gv[c]);
    }
  }
}

template <typename T, bool Warp, int V>
__global__ void softmax_forward_rows(const T* __restrict__ x, T* __restrict__ y, StridedMeta<2> rows, int64_t D,
                                     bool log) {
  using A = acc_t<T>;
  __shared__ Lse<A> shared[32];
  const Group g = row_group<Warp>();
  for (int64_t r = g.first; r < rows.numel; r += g.step) {
    int64_t off[2];
    rows.offsets(r, off);
    const T* xr = x + off[0];
    const Lse<A> st = row_lse<Warp, V>(xr, D, g, shared);
    const A shift = st.m + dlog(st.s), inv = A(1) / st.s;
    for_row_values<V, A>(xr, D, g.rank, g.size, [&](int64_t i, auto& v) {
#pragma unroll
      for (A& e : v) e = softmax_out(e, st, shift, inv, log);
      store(y + off[1] + i, v);
    });
  }
}

template <typename T, bool Warp, int V>
__global__ void softmax_backward_rows(const T* __restrict__ y, const T* __restrict__ gy, T* __restrict__ gx,
                                      StridedMeta<3> rows, int64_t D, bool log) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  const Group g = row_group<Warp>();
  for (int64_t r = g.first; r < rows.numel; r += g.step) {
    int64_t off[3];
    rows.offsets(r, off);
    const T *yr = y + off[0], *gr = gy + off[1];
    A s = 0;
    for_row_values<V, A>(yr, gr, D, g.rank, g.size, [&](int64_t, auto& a, auto& b) {
#pragma unroll
      for (int j = 0; j < int(sizeof(a) / sizeof(A)); j++) s += softmax_grad_term(a[j], b[j], log);
    });
    s = group_reduce<Warp>(s, shared);
    for_row_values<V, A>(yr, gr, D, g.rank, g.size, [&](int64_t i, auto& a, auto& b) {
#pragma unroll
      for (int j = 0; j < int(sizeof(a) / sizeof(A)); j++) b[j] = softmax_grad(a[j], b[j], s, log);
      store(gx + off[2] + i, b);
    });
  }
}

// Column kernels: thread x of a block takes row `index` of a tile of blockDim.x neighbouring rows
// (ok when it exists); the loop over tiles is uniform across the block, as column_reduce needs.
template <int N>
struct Column {
  int64_t index;
  bool ok;
  int64_t off[N];
};
template <int N>
__device__ __forceinline__ Column<N> column_at(const StridedMeta<N>& cols, int64_t tile) {
  Column<N> c{tile + threadIdx.x, false, {}};
  c.ok = c.index < cols.numel;
  if (c.ok) cols.offsets(c.index, c.off);
  return c;
}
// The online log-sum-exp of a column's row of D elements at stride sd (nothing when !ok), reduced
// over threadIdx.y; all threads of the block call it.
template <typename T, typename A>
__device__ __forceinline__ Lse<A> column_lse(const T* xc, int64_t D, int64_t sd, bool ok, Lse<A>* shared) {
  Lse<A> st = Lse<A>::identity();
  for (int64_t k = threadIdx.y; ok && k < D; k += blockDim.y) {
    const A v[1] = {dconvert<A>(xc[k * sd])};
    st.add(v);
  }
  return column_reduce(st, shared);
}
#define KILN_FOR_TILES(cols) \
  for (int64_t tile = int64_t(blockIdx.x) * blockDim.x; tile < (cols).numel; tile += int64_t(gridDim.x) * blockDim.x)

template <typename T>
__global__ void softmax_forward_cols(const T* __restrict__ x, T* __restrict__ y, StridedMeta<2> cols, int64_t D,
                                     int64_t xsd, int64_t ysd, bool log) {
  using A = acc_t<T>;
  __shared__ Lse<A> shared[kThreads];
  KILN_FOR_TILES(cols) {
    const Column<2> c = column_at(cols, tile);
    const Lse<A> st = column_lse(x + c.off[0], D, xsd, c.ok, shared);
    const A shift = st.m + dlog(st.s), inv = A(1) / st.s;
    for (int64_t k = threadIdx.y; c.ok && k < D; k += blockDim.y)
      y[c.off[1] + k * ysd] = dconvert<T>(softmax_out(dconvert<A>(x[c.off[0] + k * xsd]), st, shift, inv, log));
  }
}

template <typename T>
__global__ void softmax_backward_cols(const T* __restrict__ y, const T* __restrict__ gy, T* __restrict__ gx,
                                      StridedMeta<3> cols, int64_t D, int64_t ysd, int64_t gsd, int64_t xsd,
                                      bool log) {
  using A = acc_t<T>;
  __shared__ A shared[kThreads];
  KILN_FOR_TILES(cols) {
    const Column<3> c = column_at(cols, tile);
    A s = 0;
    for (int64_t k = threadIdx.y; c.ok && k < D; k += blockDim.y)
      s += softmax_grad_term(dconvert<A>(y[c.off[0] + k * ysd]), dconvert<A>(gy[c.off[1] + k * gsd]), log);
    s = column_reduce(s, shared);
    for (int64_t k = threadIdx.y; c.ok && k < D; k += blockDim.y)
      gx[c.off[2] + k * xsd] =
          dconvert<T>(softmax_grad(dconvert<A>(y[c.off[0] + k * ysd]), dconvert<A>(gy[c.off[1] + k * gsd]), s, log));
  }
}

// Launches the column kernel f(blocks, block) over plan p's rows.
template <int N, typename F>
void launch_cols(const Plan<N>& p, Device d, F f) {
  const dim3 block = rowwise::column_block(p.rest.numel, p.D);
  f(rowwise::row_blocks(p.rest.numel, block.x, d), block);
}

}  // namespace

void softmax_forward(const Tensor& x, int64_t dim, bool log, const Tensor& y) {
  const char* op = log ? "logSoftmax" : "softmax";
  const int64_t d = ops::check_softmax_forward(x, dim, log, y);
  if (x.numel() == 0) return;
  const auto p = rowwise::plan<2>(op, x.shape, d, {&x.strides, &y.strides});
  const Device dev = x.device();
  cudaStream_t s = stream(dev);
  KILN_CUDA_DISPATCH_FLOAT(x.dtype, op, {
    using T = scalar_t;
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    const std::array<const void*, 2> ptrs{xp, yp};
    if (use_rows(p, 2)) {
      const int c = rowwise::aligned_rows<2>(p, ptrs, sizeof(T), 2) ? rowwise::reg_chunks(p.D, kVec<T>) : 0;
      if (c) {
        rowwise::with_chunks<kVec<T>>(c, [&](auto C) {
          softmax_forward_reg<T, decltype(C)::value>
              <<<rowwise::row_blocks(p.rest.numel, rowwise::kWarps, dev), rowwise::kWarps * 32, 0, s>>>(
                  xp, yp, p.rest, p.D, log);
        });
      } else {
        rowwise::with_rows<T, 2>(p, ptrs, 2, dev, [&](auto warp, auto vec, unsigned blocks, unsigned threads) {
          softmax_forward_rows<T, decltype(warp)::value, decltype(vec)::value>
              <<<blocks, threads, 0, s>>>(xp, yp, p.rest, p.D, log);
        });
      }
    } else {
      launch_cols(p, dev, [&](unsigned blocks, dim3 block) {
        softmax_forward_cols<T><<<blocks, block, 0, s>>>(xp, yp, p.rest, p.D, p.sd[0], p.sd[1], log);
      });
    }
  });
  KILN_CUDA_LAUNCH_CHECK(op);
}

void softmax_backward(const Tensor& y, const Tensor& gy, int64_t dim, bool log, const Tensor& gx) {
  const char* op = log ? "logSoftmax backward" : "softmax backward";
  const int64_t d = ops::check_softmax_backward(y, gy, dim, log, gx);
  if (y.numel() == 0) return;
  const auto p = rowwise::plan<3>(op, y.shape, d, {&y.strides, &gy.strides, &gx.strides});
  const Device dev = y.device();
  cudaStream_t s = stream(dev);
  KILN_CUDA_DISPATCH_FLOAT(y.dtype, op, {
    using T = scalar_t;
    const T* yp = y.data<T>();
    const T* gp = gy.data<T>();
    T* xp = gx.data<T>();
    const std::array<const void*, 3> ptrs{yp, gp, xp};
    if (use_rows(p, 3)) {
      const int c = rowwise::aligned_rows<3>(p, ptrs, sizeof(T), 3) ? rowwise::reg_chunks(p.D, kVec<T>) : 0;
      if (c) {
        rowwise::with_chunks<kVec<T>>(c, [&](auto C) {
          softmax_backward_reg<T, decltype(C)::value>
              <<<rowwise::row_blocks(p.rest.numel, rowwise::kWarps, dev), rowwise::kWarps * 32, 0, s>>>(
                  yp, gp, xp, p.rest, p.D, log);
        });
      } else {
        rowwise::with_rows<T, 3>(p, ptrs, 3, dev, [&](auto warp, auto vec, unsigned blocks, unsigned threads) {
          softmax_backward_rows<T, decltype(warp)::value, decltype(vec)::value>
              <<<blocks, threads, 0, s>>>(yp, gp, xp, p.rest, p.D, log);
        });
      }
    } else {
      launch_cols(p, dev, [&](unsigned blocks, dim3 block) {
        softmax_backward_cols<T>
            <<<blocks, block, 0, s>>>(yp, gp, xp, p.rest, p.D, p.sd[0], p.sd[1], p.sd[2], log);
      });
    }
  });
  KILN_CUDA_LAUNCH_CHECK(op);
}

// ---- cross-entropy ----
//
// Per row: lse = logsumexp(x), loss = lse - (1 - eps) * x[target] - eps * mean(x); gradient
// softmax(x) - (1 - eps) * onehot(target) - eps / C, times the row's upstream gradient. Row losses
// for Sum and Mean, and every row's weight (1, or 0 when ignored), go to a float64 buffer that one
// block then sums in a fixed order. T is the logits' type, L the results' (lse, loss, total weight,
// loss gradient): T, or float for half logits under autocast.

namespace {

// Finishes a row's forward from its reduced state; xr is the row, xsd its stride.
template <typename T, typename L, typename I, typename A>
__device__ __forceinline__ void cross_entropy_row(const Lse<A>& st, const T* xr, int64_t xsd, I target, int64_t C,
                                                  int64_t ignore, A eps, L* lse, L* loss, double* part, int64_t row,
                                                  int64_t rows, const IndexGuard& guard) {
  const A l = st.m + dlog(st.s);
  *lse = dconvert<L>(l);
  const int64_t tg = int64_t(target);
  A out = 0;
  if (tg != ignore) {
    // An out-of-range target is recorded (an IndexError at the next synchronization) and poisons the loss.
    const bool ok = guard.ok(tg);
    if (!ok) guard.report(tg, row);
    const A xt = ok ? dconvert<A>(xr[tg * xsd]) : A(NAN);
    // The smoothing term only when smoothing (0 * sum would be NaN for a -inf logit).
    out = l - (A(1) - eps) * xt - (eps > A(0) ? eps * st.sx / A(C) : A(0));
  }
  if (loss) *loss = dconvert<L>(out);
  else part[row] = double(out);
  part[rows + row] = tg != ignore ? 1.0 : 0.0;
}

// Operands (rows / cols meta): logits, target, lse, loss (None; zero strides otherwise).
template <typename T, typename L, typename I, bool Warp, int V>
__global__ void cross_entropy_forward_rows(const T* __restrict__ x, const I* __restrict__ t, L* __restrict__ lse,
                                           L* __restrict__ loss, double* __restrict__ part, StridedMeta<4> rows,
                                           int64_t C, int64_t ignore, acc_t<T> eps, IndexGuard guard) {
  using A = acc_t<T>;
  __shared__ Lse<A> shared[32];
  const Group g = row_group<Warp>();
  for (int64_t r = g.first; r < rows.numel; r += g.step) {
    int64_t off[4];
    rows.offsets(r, off);
    const T* xr = x + off[0];
    const Lse<A> st = row_lse<Warp, V>(xr, C, g, shared);
    if (g.rank == 0)
      cross_entropy_row(st, xr, 1, t[off[1]], C, ignore, eps, lse + off[2], loss ? loss + off[3] : nullptr, part, r,
                        rows.numel, guard);
  }
}

template <typename T, typename L, typename I>
__global__ void cross_entropy_forward_cols(const T* __restrict__ x, const I* __restrict__ t, L* __restrict__ lse,
                                           L* __restrict__ loss, double* __restrict__ part, StridedMeta<4> cols,
                                           int64_t C, int64_t xsd, int64_t ignore, acc_t<T> eps, IndexGuard guard) {
  using A = acc_t<T>;
  __shared__ Lse<A> shared[kThreads];
  KILN_FOR_TILES(cols) {
    const Column<4> c = column_at(cols, tile);
    const Lse<A> st = column_lse(x + c.off[0], C, xsd, c.ok, shared);
    if (c.ok && threadIdx.y == 0)
      cross_entropy_row(st, x + c.off[0], xsd, t[c.off[1]], C, ignore, eps, lse + c.off[2],
                        loss ? loss + c.off[3] : nullptr, part, c.index, cols.numel, guard);
  }
}

// Sums the row losses (unless `none`) and weights of part in a fixed order; writes the loss (sum,
// or mean over the weights) and the total weight.
template <typename L>
__global__ void cross_entropy_total(const double* __restrict__ part, int64_t rows, bool none, bool mean,
                                    L* __restrict__ loss, L* __restrict__ total_weight) {
  __shared__ double shared[32];
  double s = 0, w = 0;
  for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) {
    if (!none) s += part[i];
    w += part[rows + i];
  }
  s = block_reduce(s, SumOp{}, 0.0, shared);
  w = block_reduce(w, SumOp{}, 0.0, shared);
  if (threadIdx.x != 0) return;
  if (!none) *loss = dconvert<L>(mean ? s / w : s);
  *total_weight = dconvert<L>(w);
}

// The row's upstream gradient (0 when ignored; NaN for an out-of-range target, which is recorded);
// sets tg. Only one thread per row (report) records.
template <typename L, typename I, typename A>
__device__ __forceinline__ A cross_entropy_row_grad(I target, const L* gl, const L* total_weight, int64_t ignore,
                                                    bool mean, int64_t& tg, const IndexGuard& guard, int64_t row,
                                                    bool report) {
  tg = int64_t(target);
  if (tg == ignore) return A(0);
  if (!guard.ok(tg)) {
    if (report) guard.report(tg, row);
    return A(NAN);
  }
  const A g = dconvert<A>(*gl);
  return mean ? g / dconvert<A>(*total_weight) : g;
}

// Operands (rows / cols meta): logits, grad_logits, target, lse, grad_loss (zero strides unless None).
template <typename T, typename L, typename I, bool Warp, int V>
__global__ void cross_entropy_backward_rows(const T* __restrict__ x, T* __restrict__ gx, const I* __restrict__ t,
                                            const L* __restrict__ lse, const L* __restrict__ gl,
                                            const L* __restrict__ total_weight, StridedMeta<5> rows, int64_t C,
                                            int64_t ignore, acc_t<T> eps, bool mean, IndexGuard guard) {
  using A = acc_t<T>;
  const Group g = row_group<Warp>();
  const A smooth = eps / A(C), keep = A(1) - eps;
  for (int64_t r = g.first; r < rows.numel; r += g.step) {
    int64_t off[5];
    rows.offsets(r, off);
    int64_t tg;
    const A gr = cross_entropy_row_grad<L, I, A>(t[off[2]], gl + off[4], total_weight, ignore, mean, tg, guard, r,
                                                 g.rank == 0);
    const A l = dconvert<A>(lse[off[3]]);
    for_row_values<V, A>(x + off[0], C, g.rank, g.size, [&](int64_t i, auto& v) {
#pragma unroll
      for (int j = 0; j < int(sizeof(v) / sizeof(A)); j++)
        v[j] = gr * (dexp(v[j] - l) - smooth) - (i + j == tg ? gr * keep : A(0));
      store(gx + off[1] + i, v);
    });
  }
}

template <typename T, typename L, typename I>
__global__ void cross_entropy_backward_cols(const T* __restrict__ x, T* __restrict__ gx, const I* __restrict__ t,
                                            const L* __restrict__ lse, const L* __restrict__ gl,
                                            const L* __restrict__ total_weight, StridedMeta<5> cols, int64_t C,
                                            int64_t xsd, int64_t gxsd, int64_t ignore, acc_t<T> eps, bool mean,
                                            IndexGuard guard) {
  using A = acc_t<T>;
  const A smooth = eps / A(C), keep = A(1) - eps;
  KILN_FOR_TILES(cols) {
    const Column<5> c = column_at(cols, tile);
    if (!c.ok) continue;
    int64_t tg;
    const A gr = cross_entropy_row_grad<L, I, A>(t[c.off[2]], gl + c.off[4], total_weight, ignore, mean, tg, guard,
                                                 c.index, threadIdx.y == 0);
    const A l = dconvert<A>(lse[c.off[3]]);
    for (int64_t k = threadIdx.y; k < C; k += blockDim.y)
      gx[c.off[1] + k * gxsd] =
          dconvert<T>(gr * (dexp(dconvert<A>(x[c.off[0] + k * xsd]) - l) - smooth) - (k == tg ? gr * keep : A(0)));
  }
}

#undef KILN_FOR_TILES

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<L>{}) with L the results' type: T, or float for half logits with float32 results
// (the checks allowed no other pairing).
template <typename T, typename F>
void with_result_type(DType results, F f) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    f(TypeTag<T>{});
  } else {
    if (results == DType::Float32) f(TypeTag<float>{});
    else f(TypeTag<T>{});
  }
}

}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& target, int64_t ignore_index, double smoothing,
                           Reduction reduction, const Tensor& loss, const Tensor& lse, const Tensor& total_weight) {
  const char* op = "crossEntropy";
  const bool none = reduction == Reduction::None;
  const int64_t cdim = ops::check_cross_entropy_forward(logits, target, smoothing, reduction, loss, lse, total_weight);
  const int64_t C = logits.shape[cdim];
  const Shape ts = with_class_dim(target.strides, cdim), ls = with_class_dim(lse.strides, cdim);
  const Shape os = none ? with_class_dim(loss.strides, cdim) : Shape(logits.shape.size(), 0);
  const auto p = rowwise::plan<4>(op, logits.shape, cdim, {&logits.strides, &ts, &ls, &os});
  const int64_t rows = target.numel();
  const Device dev = logits.device();
  cudaStream_t s = stream(dev);
  const Tensor part = Tensor::empty({2 * rows}, DType::Float64, dev);
  const IndexGuard guard = index_guard(dev, op, C, cdim);
  KILN_CUDA_DISPATCH_FLOAT(logits.dtype, op, {
    using T = scalar_t;
    using A = acc_t<T>;
    with_result_type<T>(lse.dtype, [&](auto result) {
      using L = typename decltype(result)::type;
      const T* xp = logits.data<T>();
      L* lp = lse.data<L>();
      L* op_loss = none ? loss.data<L>() : nullptr;
      double* pp = part.data<double>();
      KILN_DISPATCH_INDEX(target.dtype, op, {
        using I = scalar_t;
        const I* tp = target.data<I>();
        if (rows > 0 && use_rows(p, 1)) {
          rowwise::with_rows<T, 4>(p, {xp, tp, lp, op_loss}, 1, dev,
                                   [&](auto warp, auto vec, unsigned blocks, unsigned threads) {
                                     cross_entropy_forward_rows<T, L, I, decltype(warp)::value, decltype(vec)::value>
                                         <<<blocks, threads, 0, s>>>(xp, tp, lp, op_loss, pp, p.rest, C,
                                                                     ignore_index, A(smoothing), guard);
                                   });
        } else if (rows > 0) {
          launch_cols(p, dev, [&](unsigned blocks, dim3 block) {
            cross_entropy_forward_cols<T, L, I>
                <<<blocks, block, 0, s>>>(xp, tp, lp, op_loss, pp, p.rest, C, p.sd[0], ignore_index, A(smoothing),
                                          guard);
          });
        }
      });
      KILN_CUDA_LAUNCH_CHECK(op);
      cross_entropy_total<L><<<1, 1024, 0, s>>>(pp, rows, none, reduction == Reduction::Mean, loss.data<L>(),
                                                total_weight.data<L>());
    });
  });
  KILN_CUDA_LAUNCH_CHECK(op);
}

void cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse, const Tensor& total_weight,
                            const Tensor& grad_loss, int64_t ignore_index, double smoothing, Reduction reduction,
                            const Tensor& grad_logits) {
  const char* op = "crossEntropy backward";
  const bool none = reduction == Reduction::None;
  const int64_t cdim =
      ops::check_cross_entropy_backward(logits, target, lse, total_weight, grad_loss, smoothing, reduction, grad_logits);
  if (logits.numel() == 0) return;
  const int64_t C = logits.shape[cdim];
  const Shape ts = with_class_dim(target.strides, cdim), ls = with_class_dim(lse.strides, cdim);
  // A scalar loss gradient is read through zero strides: every row sees the same element.
  const Shape gs = none ? with_class_dim(grad_loss.strides, cdim) : Shape(logits.shape.size(), 0);
  const auto p = rowwise::plan<5>(op, logits.shape, cdim, {&logits.strides, &grad_logits.strides, &ts, &ls, &gs});
  const Device dev = logits.device();
  cudaStream_t s = stream(dev);
  const bool mean = reduction == Reduction::Mean;
  const IndexGuard guard = index_guard(dev, op, C, cdim);
  KILN_CUDA_DISPATCH_FLOAT(logits.dtype, op, {
    using T = scalar_t;
    using A = acc_t<T>;
    with_result_type<T>(lse.dtype, [&](auto result) {
      using L = typename decltype(result)::type;
      const T* xp = logits.data<T>();
      T* gxp = grad_logits.data<T>();
      const L* lp = lse.data<L>();
      const L* gp = grad_loss.data<L>();
      const L* wp = total_weight.data<L>();
      KILN_DISPATCH_INDEX(target.dtype, op, {
        using I = scalar_t;
        const I* tp = target.data<I>();
        if (use_rows(p, 2)) {
          rowwise::with_rows<T, 5>(p, {xp, gxp, tp, lp, gp}, 2, dev,
                                   [&](auto warp, auto vec, unsigned blocks, unsigned threads) {
                                     cross_entropy_backward_rows<T, L, I, decltype(warp)::value, decltype(vec)::value>
                                         <<<blocks, threads, 0, s>>>(xp, gxp, tp, lp, gp, wp, p.rest, C,
                                                                     ignore_index, A(smoothing), mean, guard);
                                   });
        } else {
          launch_cols(p, dev, [&](unsigned blocks, dim3 block) {
            cross_entropy_backward_cols<T, L, I><<<blocks, block, 0, s>>>(xp, gxp, tp, lp, gp, wp, p.rest, C,
                                                                          p.sd[0], p.sd[1], ignore_index,
                                                                          A(smoothing), mean, guard);
          });
        }
      });
    });
  });
  KILN_CUDA_LAUNCH_CHECK(op);
}

}  // namespace kiln::cuda
