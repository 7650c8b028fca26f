// bfloat16 fused attention on tensor cores (mma.sync m16n8k16, float32 accumulation) for head dims 64
// and 128: the path attention.cu's entry points take for bfloat16 inputs of those head dims. The
// contract is native/ops/attention.h; the design is FlashAttention-2's.
//
// A block is 4 warps (128 threads) and owns 64 rows of one head (queries in the forward and the dq
// pass, keys in the dk/dv pass), 16 per warp; it walks tiles of the other side staged in shared
// memory as bfloat16 (rows padded to D + 8 elements so fragment loads do not collide on banks) by
// cp.async, zero-filled past the end. Products run on tensor cores: S = Q K^T, then P (or dS) is
// rounded to bfloat16 and fed from the accumulator registers as the A operand of the next product
// (mma.cuh: pack_a), as FlashAttention-2 does; everything else (scale, masks, softmax, exp) is float32.
// Causal tiles wholly above the diagonal are skipped; causal forward and dq blocks start with the
// heaviest (last) query tiles. The backward is two passes as in the SIMT kernels: a block owns a
// tile of keys and accumulates dk and dv over the queries, then a block owns a tile of queries and
// accumulates dq; no atomics, results do not depend on scheduling.
//
// Cost (B H heads, L queries, S keys, head dim D; halve the FLOPs for causal L = S):
//   forward:      4 B H L S D FLOPs (S = QK^T, O = PV); reads q, k, v once from HBM and k, v once
//                 per 64-query tile (from L2 mostly), writes out and lse. GPT-2 124M per layer at
//                 B=2, H=12, T=1024, D=64 causal: 3.2 GFLOP, ~12.6 MB of HBM traffic: compute bound.
//   backward:     14 B H L S D FLOPs: the dk/dv pass 8 (recomputes S and dP, dV, dK), the dq pass 6
//                 (recomputes S and dP, dQ), plus the delta kernel (2 B H L D bytes x2 read).
//                 GPT-2 shape above: 11.3 GFLOP.
// Expected: mma.sync bf16 on an H100/H200 peaks near 660 TFLOP/s dense (wgmma's 990 is not reachable
// from mma.sync); simple FA2-style kernels like these (no ldmatrix, single-buffered tiles, V and the
// backward's transposed operands gathered one bfloat16 at a time) should land around 100-250 TFLOP/s:
// forward ~15-30 us, backward ~60-120 us for the GPT-2 shape per layer. The SIMT kernels (a warp per
// row, a 5-step shuffle reduction per key and per dot) run at a few TFLOP/s of float32: expect 20-50x.
#include <cstdint>
#include "../ops/attention.h"
#include "attention.cuh"
#include "common.cuh"
#include "copy.h"
#include "mma.cuh"

namespace kiln::cuda {

namespace {

using mma::bf16;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = kWarps * 16;  // rows a block owns, 16 per warp

// Tile rows of the other side per step: 64 for D = 64; 32 for the backward at D = 128 (its float32
// accumulators for dk and dv, or dq, already take 64 or 128 registers a lane).
constexpr int fwd_cols(int) { return 64; }
constexpr int bwd_cols(int D) { return D == 64 ? 64 : 32; }

// Row stride of a staged tile in elements: D + 8 keeps rows 16-byte aligned (cp.async) and shifts
// each row by 4 banks, so the 8 rows a fragment load touches hit distinct banks.
template <int D>
constexpr int kPitch = D + 8;

// Stages rows r0..r0+R of one head (row stride rs) into sh ([R][D + 8]), zeros for rows at or past n.
template <int D, int R>
__device__ __forceinline__ void stage_rows(bf16* sh, const bf16* base, int64_t rs, int64_t r0, int64_t n) {
  constexpr int kChunks = D / 8;  // 16-byte pieces per row
  for (int c = threadIdx.x; c < R * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool ok = r0 + r < n;
    mma::cp_async_16(sh + r * kPitch<D> + col, ok ? base + (r0 + r) * rs + col : base, ok);
  }
}

// A's 16 rows for this warp times the staged tile's rows as B (C = A B^T, k over D): c[nt] is the
// 16 x 8 block of tile rows nt * 8 .. nt * 8 + 7.
template <int D, int N>
__device__ __forceinline__ void rows_times_tile(float (&c)[N / 8][4], const bf16* a_rows, const bf16* tile, int lane) {
#pragma unroll
  for (int nt = 0; nt < N / 8; nt++) {
#pragma unroll
    for (int e = 0; e < 4; e++) c[nt][e] = 0.f;
  }
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

template <int D>
__device__ __forceinline__ void zero(float (&acc)[D / 8][4]) {
#pragma unroll
  for (int dt = 0; dt < D / 8; dt++) {
#pragma unroll
    for (int e = 0; e < 4; e++) acc[dt][e] = 0.f;
  }
}

// grid (B * H, ceil(L / 64)): a block owns 64 queries, warp w rows 16 w .. 16 w + 15.
template <int D>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, Layout lq,
                   Layout lk, Layout lv, Dims n, float scale, bf16* __restrict__ out, float* __restrict__ lse) {
  constexpr int N = fwd_cols(D);
  extern __shared__ uint4 smem[];
  bf16* ks = reinterpret_cast<bf16*>(smem);
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
  zero<D>(o);
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
#pragma unroll
    for (int nt = 0; nt < N / 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) s[nt][e] = 0.f;
    }
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
__global__ void __launch_bounds__(kThreads)
    dkv_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
               const bf16* __restrict__ g, Layout lq, Layout lk, Layout lv, Layout lg, Dims n, float scale,
               const float* __restrict__ lse, const float* __restrict__ delta, bf16* __restrict__ dk,
               bf16* __restrict__ dv) {
  constexpr int N = bwd_cols(D);
  extern __shared__ uint4 smem[];
  bf16* ks = reinterpret_cast<bf16*>(smem);
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
  zero<D>(gk);
  zero<D>(gv);
  for (int64_t i0 = n.first_query(j0); i0 < n.L; i0 += N) {
    __syncthreads();  // every warp is done with the previous query tile
    stage_rows<D, N>(qs, qb, lq.rs, i0, n.L);
    stage_rows<D, N>(gs, gb, lg.rs, i0, n.L);
    mma::cp_async_commit();
    for (int r = threadIdx.x; r < N; r += kThreads) {
      const bool ok = i0 + r < n.L;
      ls[r] = ok ? lse[bh * n.L + i0 + r] : 0.f;
      ds[r] = ok ? delta[bh * n.L + i0 + r] : 0.f;
    }
    mma::cp_async_wait<0>();
    __syncthreads();

    float p[N / 8][4], dp[N / 8][4];
    rows_times_tile<D, N>(p, ks + warp * 16 * kPitch<D>, qs, lane);
    rows_times_tile<D, N>(dp, vs + warp * 16 * kPitch<D>, gs, lane);
#pragma unroll
    for (int nt = 0; nt < N / 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const mma::Coord c = mma::c_coord(lane, e);
        const int col = nt * 8 + c.col;
        const int64_t j = j0 + warp * 16 + c.row, i = i0 + col;
        const float pe = i < n.L && j < n.S && n.sees(i, j) ? __expf(p[nt][e] * scale - ls[col]) : 0.f;
        p[nt][e] = pe;
        dp[nt][e] = pe * (dp[nt][e] - ds[col]);
      }
    }
    accumulate_rows<D, N>(gv, p, gs, lane);
    accumulate_rows<D, N>(gk, dp, qs, lane);
  }

  const float one[2] = {1.f, 1.f}, sc[2] = {scale, scale};
  store_rows<D>(dk + bh * n.S * D, gk, key0, n.S, sc, lane);
  store_rows<D>(dv + bh * n.S * D, gv, key0, n.S, one, lane);
}

// grid (B * H, ceil(L / 64)): a block owns 64 queries, warp w rows 16 w .. 16 w + 15, and walks the
// keys they see N at a time: S = Q K^T, P = exp(S scale - lse), dP = dO V^T, dS = P (dP - delta),
// dQ += dS K (times scale at the end).
template <int D>
__global__ void __launch_bounds__(kThreads)
    dq_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
              const bf16* __restrict__ g, Layout lq, Layout lk, Layout lv, Layout lg, Dims n, float scale,
              const float* __restrict__ lse, const float* __restrict__ delta, bf16* __restrict__ dq) {
  constexpr int N = bwd_cols(D);
  extern __shared__ uint4 smem[];
  bf16* qs = reinterpret_cast<bf16*>(smem);
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
  zero<D>(gq);
  const int64_t jend = n.keys((i0 + kRows < n.L ? i0 + kRows : n.L) - 1);
  for (int64_t j0 = 0; j0 < jend; j0 += N) {
    __syncthreads();  // every warp is done with the previous key tile
    stage_rows<D, N>(ks, kb, lk.rs, j0, n.S);
    stage_rows<D, N>(vs, vb, lv.rs, j0, n.S);
    mma::cp_async_commit();
    mma::cp_async_wait<0>();
    __syncthreads();

    float p[N / 8][4], dp[N / 8][4];
    rows_times_tile<D, N>(p, qs + warp * 16 * kPitch<D>, ks, lane);
    rows_times_tile<D, N>(dp, gs + warp * 16 * kPitch<D>, vs, lane);
#pragma unroll
    for (int nt = 0; nt < N / 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const mma::Coord c = mma::c_coord(lane, e);
        const int64_t i = i0 + warp * 16 + c.row, j = j0 + nt * 8 + c.col;
        const float pe = i < n.L && j < n.S && n.sees(i, j) ? __expf(p[nt][e] * scale - lr[e / 2]) : 0.f;
        dp[nt][e] = pe * (dp[nt][e] - dr[e / 2]);
      }
    }
    accumulate_rows<D, N>(gq, dp, ks, lane);
  }
  const float sc[2] = {scale, scale};
  store_rows<D>(dq + bh * n.L * D, gq, row0, n.L, sc, lane);
}

// t when its rows can be staged 16 bytes at a time (data pointer 16-byte aligned, unit last stride,
// other strides multiples of 8 elements), else a contiguous copy. The [B, T, H, D] -> [B, H, T, D]
// views nn makes, and slices of a fused qkv projection, pass as they are.
Tensor aligned_rows(const Tensor& t) {
  bool ok = reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.strides[3] == 1;
  for (int d = 0; d < 3; d++) ok = ok && (t.shape[d] <= 1 || t.strides[d] % 8 == 0);
  if (ok) return t;
  Tensor c = Tensor::empty(t.shape, t.dtype, t.device());
  copy(t, c);
  return c;
}

// Launches kernel on grid (BH, ceil(rows / 64)) with `shared` bytes of dynamic shared memory (over
// the default 48 KiB for the backward at D = 128, which needs the opt-in).
template <typename K, typename... Args>
void launch(K kernel, int64_t BH, int64_t rows, size_t shared, cudaStream_t s, Args... args) {
  KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)),
                  "flashAttention");
  const dim3 grid(unsigned(BH), unsigned((rows + kRows - 1) / kRows));
  kernel<<<grid, kThreads, shared, s>>>(args...);
}

// Calls f(std::integral_constant<int, D>) for D = 64 or 128 (attention_mma_applies).
template <typename F>
void with_head_dim(int64_t D, F f) {
  if (D == 64) f(std::integral_constant<int, 64>{});
  else f(std::integral_constant<int, 128>{});
}

}  // namespace

bool attention_mma_applies(DType dt, int64_t D) { return dt == DType::BFloat16 && (D == 64 || D == 128); }

void attention_forward_mma(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Dims& n, int64_t BH,
                           float scale, const Tensor& out, const Tensor& lse, cudaStream_t s) {
  const Tensor q = aligned_rows(q_in), k = aligned_rows(k_in), v = aligned_rows(v_in);
  with_head_dim(n.D, [&](auto d) {
    constexpr int D = decltype(d)::value;
    const size_t shared = size_t(2 * fwd_cols(D) * kPitch<D>) * sizeof(bf16);
    launch(forward_kernel<D>, BH, n.L, shared, s, q.data<bf16>(), k.data<bf16>(), v.data<bf16>(), layout_of(q),
           layout_of(k), layout_of(v), n, scale, out.data<bf16>(), lse.data<float>());
  });
}

void attention_backward_mma(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& dout,
                            const Tensor& lse, const Tensor& delta, const Dims& n, int64_t BH, float scale,
                            const Tensor& dq, const Tensor& dk, const Tensor& dv, cudaStream_t s) {
  const Tensor q = aligned_rows(q_in), k = aligned_rows(k_in), v = aligned_rows(v_in), g = aligned_rows(dout);
  with_head_dim(n.D, [&](auto d) {
    constexpr int D = decltype(d)::value, N = bwd_cols(D);
    const size_t kv_shared = size_t(2 * (kRows + N) * kPitch<D>) * sizeof(bf16) + 2 * N * sizeof(float);
    launch(dkv_kernel<D>, BH, n.S, kv_shared, s, q.data<bf16>(), k.data<bf16>(), v.data<bf16>(), g.data<bf16>(),
           layout_of(q), layout_of(k), layout_of(v), layout_of(g), n, scale, lse.data<float>(),
           delta.data<float>(), dk.data<bf16>(), dv.data<bf16>());
    const size_t q_shared = size_t(2 * (kRows + N) * kPitch<D>) * sizeof(bf16);
    launch(dq_kernel<D>, BH, n.L, q_shared, s, q.data<bf16>(), k.data<bf16>(), v.data<bf16>(), g.data<bf16>(),
           layout_of(q), layout_of(k), layout_of(v), layout_of(g), n, scale, lse.data<float>(),
           delta.data<float>(), dq.data<bf16>());
  });
}

}  // namespace kiln::cuda
