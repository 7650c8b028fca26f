// The bfloat16 tensor-core attention kernels (design and costs: attention_mma.cu, which launches
// them). Device code only, written against the primitives of mma.cuh (mma_16816, pack_a, cp_async_*,
// dynamic_shared), which the including file provides first: attention_mma.cu includes mma.cuh;
// test/fixtures/mma/emulate.cc includes a host emulation of them, to run these kernels on the CPU.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include "attention.cuh"
#include "mma_layout.h"

namespace kiln::cuda::attn_mma {

using mma::bf16;

constexpr int kWarps = 4;
constexpr int kBlockThreads = kWarps * 32;
constexpr int kRows = kWarps * 16;  // rows a block owns, 16 per warp

// Tile rows of the other side per step: 64 for D = 64; 32 for the backward at D = 128 (its float32
// accumulators for dk and dv, or dq, already take 64 or 128 registers a lane).
constexpr int fwd_cols(int) { return 64; }
constexpr int bwd_cols(int D) { return D == 64 ? 64 : 32; }

// Row stride of a staged tile in elements: D + 8 keeps rows 16-byte aligned (cp.async) and shifts
// each row by 4 banks, so the 8 rows a fragment load touches hit distinct banks.
template <int D>
constexpr int kPitch = D + 8;

// Dynamic shared memory of each kernel: staged tiles of kPitch<D> bfloat16 a row (and the dk/dv
// pass's lse and delta of its query tile).
template <int D>
constexpr size_t forward_shared() { return size_t(2 * fwd_cols(D) * kPitch<D>) * sizeof(bf16); }
template <int D>
constexpr size_t dkv_shared() {
  return size_t(2 * (kRows + bwd_cols(D)) * kPitch<D>) * sizeof(bf16) + 2 * bwd_cols(D) * sizeof(float);
}
template <int D>
constexpr size_t dq_shared() { return size_t(2 * (kRows + bwd_cols(D)) * kPitch<D>) * sizeof(bf16); }

// Stages rows r0..r0+R of one head (row stride rs) into sh ([R][D + 8]), zeros for rows at or past n.
template <int D, int R>
__device__ __forceinline__ void stage_rows(bf16* sh, const bf16* base, int64_t rs, int64_t r0, int64_t n) {
  constexpr int kChunks = D / 8;  // 16-byte pieces per row
  for (int c = threadIdx.x; c < R * kChunks; c += kBlockThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool ok = r0 + r < n;
    mma::cp_async_16(sh + r * kPitch<D> + col, ok ? base + (r0 + r) * rs + col : base, ok);
  }
}

// Clears M tiles of C fragments.
template <int M>
__device__ __forceinline__ void zero(float (&c)[M][4]) {
#pragma unroll
  for (int t = 0; t < M; t++) {
#pragma unroll
    for (int e = 0; e < 4; e++) c[t][e] = 0.f;
  }
}

// A's 16 rows for this warp times the staged tile's rows as B (C = A B^T, k over D): c[nt] is the
// 16 x 8 block of tile rows nt * 8 .. nt * 8 + 7.
template <int D, int N>
__device__ __forceinline__ void rows_times_tile(float (&c)[N / 8][4], const bf16* a_rows, const bf16* tile, int lane) {
  zero(c);
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
    uint32_t a[4];
    mma::load_a(a, a_rows + kk * 16, kPitch<D>, lane);
#pragma unroll
    for (int nt = 0; nt < N / 8; nt++) {
      uint32_t b[2];
      mma::load_b(b, tile + nt * 8 * kPitch<D> + kk * 16, kPitch<D>, lane);
      mma::mma_16816(c[nt], a, b);
    }
  }
}

// acc (16 x D) += P (16 x N, the C fragments p) times the staged tile's N rows (N x D).
template <int D, int N>
__device__ __forceinline__ void accumulate_rows(float (&acc)[D / 8][4], const float (&p)[N / 8][4], const bf16* tile,
                                                int lane) {
#pragma unroll
  for (int kk = 0; kk < N / 16; kk++) {
    uint32_t a[4];
    mma::pack_a(a, p[2 * kk], p[2 * kk + 1]);
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
      uint32_t b[2];
      mma::load_b_rows(b, tile + kk * 16 * kPitch<D> + dt * 8, kPitch<D>, lane);
      mma::mma_16816(acc[dt], a, b);
    }
  }
}

// What the backward needs of one (row, col) pair of a 16 x N block: whether the query sees the key,
// and the query's lse and delta.
struct PairStats {
  bool seen;
  float lse, delta;
};

// The backward's scores of this warp's 16 rows against a staged tile of N rows: p = exp(s scale - lse)
// (0 where the pair is not seen) with s = s_rows . s_tile rows, and ds = p (dp - delta) with
// dp = dp_rows . dp_tile rows; at(e, row, col) gives the PairStats of C element e at (row, col).
template <int D, int N, typename At>
__device__ __forceinline__ void backward_scores(float (&p)[N / 8][4], float (&ds)[N / 8][4], const bf16* s_rows,
                                                const bf16* s_tile, const bf16* dp_rows, const bf16* dp_tile,
                                                float scale, int lane, At at) {
  rows_times_tile<D, N>(p, s_rows, s_tile, lane);
  rows_times_tile<D, N>(ds, dp_rows, dp_tile, lane);
#pragma unroll
  for (int nt = 0; nt < N / 8; nt++) {
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const mma::Coord c = mma::c_coord(lane, e);
      const PairStats st = at(e, c.row, nt * 8 + c.col);
      const float pe = st.seen ? __expf(p[nt][e] * scale - st.lse) : 0.f;
      p[nt][e] = pe;
      ds[nt][e] = pe * (ds[nt][e] - st.delta);
    }
  }
}

// Writes the 16 x D accumulator rows r0, r0 + 8 of this lane (row stride D, rows at or past n
// skipped) times scale as bfloat16 pairs.
template <int D>
__device__ __forceinline__ void store_rows(bf16* dst, const float (&acc)[D / 8][4], int64_t r0, int64_t n,
                                           const float (&scale)[2], int lane) {
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int64_t r = r0 + 8 * h;
    if (r >= n) continue;
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
      *reinterpret_cast<__nv_bfloat162*>(dst + r * D + dt * 8 + 2 * (lane % 4)) =
          __floats2bfloat162_rn(acc[dt][2 * h] * scale[h], acc[dt][2 * h + 1] * scale[h]);
    }
  }
}

// grid (B * H, ceil(L / 64)): a block owns 64 queries, warp w rows 16 w .. 16 w + 15.
template <int D>
__global__ void __launch_bounds__(kBlockThreads)
    forward_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, Layout lq,
                   Layout lk, Layout lv, Dims n, float scale, bf16* __restrict__ out, float* __restrict__ lse) {
  constexpr int N = fwd_cols(D);
  bf16* ks = mma::dynamic_shared<bf16>();
  bf16* vs = ks + N * kPitch<D>;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bh = blockIdx.x;
  // Causal: the last query tiles (the most keys) start first, so the short ones fill the tail.
  const int64_t tile = n.causal ? gridDim.y - 1 - blockIdx.y : blockIdx.y;
  const int64_t i0 = tile * kRows, row0 = i0 + warp * 16 + lane / 4;  // this lane's rows: row0, row0 + 8
  const bf16* kb = k + lk.base(bh, n.H);
  const bf16* vb = v + lv.base(bh, n.H);

  // Q through shared memory (ks, which holds kRows >= 64 rows) into this warp's A fragments.
  static_assert(N >= kRows, "the Q tile is staged in the key buffer");
  stage_rows<D, kRows>(ks, q + lq.base(bh, n.H), lq.rs, i0, n.L);
  mma::cp_async_commit();
  mma::cp_async_wait<0>();
  __syncthreads();
  uint32_t qa[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) mma::load_a(qa[kk], ks + warp * 16 * kPitch<D> + kk * 16, kPitch<D>, lane);

  float o[D / 8][4];
  zero(o);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // l: this lane's share of the row sums
  const int64_t jend = n.keys((i0 + kRows < n.L ? i0 + kRows : n.L) - 1);
  for (int64_t j0 = 0; j0 < jend; j0 += N) {
    __syncthreads();  // every warp is done reading the previous tile (or Q) from ks and vs
    stage_rows<D, N>(ks, kb, lk.rs, j0, n.S);
    mma::cp_async_commit();
    stage_rows<D, N>(vs, vb, lv.rs, j0, n.S);
    mma::cp_async_commit();
    mma::cp_async_wait<1>();  // K has landed; V may still be in flight
    __syncthreads();

    float s[N / 8][4];
    zero(s);
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
#pragma unroll
      for (int nt = 0; nt < N / 8; nt++) {
        uint32_t b[2];
        mma::load_b(b, ks + nt * 8 * kPitch<D> + kk * 16, kPitch<D>, lane);
        mma::mma_16816(s[nt], qa[kk], b);
      }
    }
    // Scale and mask (keys past S, and above the diagonal), then the online softmax per row.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < N / 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const mma::Coord c = mma::c_coord(lane, e);
        const int64_t i = i0 + warp * 16 + c.row, j = j0 + nt * 8 + c.col;
        s[nt][e] = j < n.S && n.sees(i, j) ? s[nt][e] * scale : -INFINITY;
        mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);
      }
    }
    float ref[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      // The quad (lanes 4 g .. 4 g + 3) holds row g's 2 N / 8 columns between them.
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      const float mnew = fmaxf(m[h], mx[h]);
      ref[h] = mnew == -INFINITY ? 0.f : mnew;  // a row that has seen no key yet keeps p = 0, not NaN
      const float corr = __expf(m[h] - ref[h]);
      m[h] = mnew;
      l[h] *= corr;
#pragma unroll
      for (int dt = 0; dt < D / 8; dt++) {
        o[dt][2 * h] *= corr;
        o[dt][2 * h + 1] *= corr;
      }
    }
#pragma unroll
    for (int nt = 0; nt < N / 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        s[nt][e] = __expf(s[nt][e] - ref[e / 2]);
        l[e / 2] += s[nt][e];
      }
    }
    mma::cp_async_wait<0>();
    __syncthreads();  // V has landed for every thread
    accumulate_rows<D, N>(o, s, vs, lane);
  }

#pragma unroll
  for (int h = 0; h < 2; h++) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
  const float inv[2] = {1.f / l[0], 1.f / l[1]};
  store_rows<D>(out + bh * n.L * D, o, row0, n.L, inv, lane);
  if (lane % 4 == 0) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
      if (row0 + 8 * h < n.L) lse[bh * n.L + row0 + 8 * h] = m[h] + logf(l[h]);
    }
  }
}

// grid (B * H, ceil(S / 64)): a block owns 64 keys, warp w keys 16 w .. 16 w + 15, and walks the
// queries that see them N at a time. Per step, with this warp's keys as rows: S^T = K Q^T,
// P^T = exp(S^T scale - lse), dP^T = V dO^T, dS^T = P^T (dP^T - delta); dV += P^T dO, dK += dS^T Q.
template <int D>
__global__ void __launch_bounds__(kBlockThreads)
    dkv_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
               const bf16* __restrict__ g, Layout lq, Layout lk, Layout lv, Layout lg, Dims n, float scale,
               const float* __restrict__ lse, const float* __restrict__ delta, bf16* __restrict__ dk,
               bf16* __restrict__ dv) {
  constexpr int N = bwd_cols(D);
  bf16* ks = mma::dynamic_shared<bf16>();
  bf16* vs = ks + kRows * kPitch<D>;
  bf16* qs = vs + kRows * kPitch<D>;
  bf16* gs = qs + N * kPitch<D>;
  float* ls = reinterpret_cast<float*>(gs + N * kPitch<D>);
  float* ds = ls + N;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bh = blockIdx.x, j0 = int64_t(blockIdx.y) * kRows, key0 = j0 + warp * 16 + lane / 4;
  const bf16* qb = q + lq.base(bh, n.H);
  const bf16* gb = g + lg.base(bh, n.H);
  stage_rows<D, kRows>(ks, k + lk.base(bh, n.H), lk.rs, j0, n.S);
  stage_rows<D, kRows>(vs, v + lv.base(bh, n.H), lv.rs, j0, n.S);
  mma::cp_async_commit();

  float gk[D / 8][4], gv[D / 8][4];
  zero(gk);
  zero(gv);
  for (int64_t i0 = n.first_query(j0); i0 < n.L; i0 += N) {
    __syncthreads();  // every warp is done with the previous query tile
    stage_rows<D, N>(qs, qb, lq.rs, i0, n.L);
    stage_rows<D, N>(gs, gb, lg.rs, i0, n.L);
    mma::cp_async_commit();
    for (int r = threadIdx.x; r < N; r += kBlockThreads) {
      const bool ok = i0 + r < n.L;
      ls[r] = ok ? lse[bh * n.L + i0 + r] : 0.f;
      ds[r] = ok ? delta[bh * n.L + i0 + r] : 0.f;
    }
    mma::cp_async_wait<0>();
    __syncthreads();

    float p[N / 8][4], dsc[N / 8][4];
    const bf16* mine = ks + warp * 16 * kPitch<D>;
    backward_scores<D, N>(p, dsc, mine, qs, vs + warp * 16 * kPitch<D>, gs, scale, lane, [&](int, int row, int col) {
      const int64_t i = i0 + col, j = j0 + warp * 16 + row;
      return PairStats{i < n.L && j < n.S && n.sees(i, j), ls[col], ds[col]};
    });
    accumulate_rows<D, N>(gv, p, gs, lane);
    accumulate_rows<D, N>(gk, dsc, qs, lane);
  }

  const float one[2] = {1.f, 1.f}, sc[2] = {scale, scale};
  store_rows<D>(dk + bh * n.S * D, gk, key0, n.S, sc, lane);
  store_rows<D>(dv + bh * n.S * D, gv, key0, n.S, one, lane);
}

// grid (B * H, ceil(L / 64)): a block owns 64 queries, warp w rows 16 w .. 16 w + 15, and walks the
// keys they see N at a time: S = Q K^T, P = exp(S scale - lse), dP = dO V^T, dS = P (dP - delta),
// dQ += dS K (times scale at the end).
template <int D>
__global__ void __launch_bounds__(kBlockThreads)
    dq_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
              const bf16* __restrict__ g, Layout lq, Layout lk, Layout lv, Layout lg, Dims n, float scale,
              const float* __restrict__ lse, const float* __restrict__ delta, bf16* __restrict__ dq) {
  constexpr int N = bwd_cols(D);
  bf16* qs = mma::dynamic_shared<bf16>();
  bf16* gs = qs + kRows * kPitch<D>;
  bf16* ks = gs + kRows * kPitch<D>;
  bf16* vs = ks + N * kPitch<D>;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bh = blockIdx.x;
  const int64_t tile = n.causal ? gridDim.y - 1 - blockIdx.y : blockIdx.y;
  const int64_t i0 = tile * kRows, row0 = i0 + warp * 16 + lane / 4;
  const bf16* kb = k + lk.base(bh, n.H);
  const bf16* vb = v + lv.base(bh, n.H);
  stage_rows<D, kRows>(qs, q + lq.base(bh, n.H), lq.rs, i0, n.L);
  stage_rows<D, kRows>(gs, g + lg.base(bh, n.H), lg.rs, i0, n.L);
  mma::cp_async_commit();
  float lr[2], dr[2];  // lse and delta of rows row0, row0 + 8
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int64_t i = row0 + 8 * h;
    lr[h] = i < n.L ? lse[bh * n.L + i] : 0.f;
    dr[h] = i < n.L ? delta[bh * n.L + i] : 0.f;
  }

  float gq[D / 8][4];
  zero(gq);
  const int64_t jend = n.keys((i0 + kRows < n.L ? i0 + kRows : n.L) - 1);
  for (int64_t j0 = 0; j0 < jend; j0 += N) {
    __syncthreads();  // every warp is done with the previous key tile
    stage_rows<D, N>(ks, kb, lk.rs, j0, n.S);
    stage_rows<D, N>(vs, vb, lv.rs, j0, n.S);
    mma::cp_async_commit();
    mma::cp_async_wait<0>();
    __syncthreads();

    float p[N / 8][4], dsc[N / 8][4];
    const bf16* mine = qs + warp * 16 * kPitch<D>;
    backward_scores<D, N>(p, dsc, mine, ks, gs + warp * 16 * kPitch<D>, vs, scale, lane, [&](int e, int row, int col) {
      const int64_t i = i0 + warp * 16 + row, j = j0 + col;
      return PairStats{i < n.L && j < n.S && n.sees(i, j), lr[e / 2], dr[e / 2]};
    });
    accumulate_rows<D, N>(gq, dsc, ks, lane);
  }
  const float sc[2] = {scale, scale};
  store_rows<D>(dq + bh * n.L * D, gq, row0, n.L, sc, lane);
}

}  // namespace kiln::cuda::attn_mma
