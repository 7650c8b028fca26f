// CUDA fused attention (twin of native/cpu/attention.cc; the contract is native/ops/attention.h):
// plain SIMT kernels, float32 and bfloat16 inputs accumulated in float32, head dims up to kMaxDim.
// A warp owns one row (a query in the forward and the dq pass, a key in the dk/dv pass) and holds
// it and its accumulators in registers, each lane kPer = ceil(D / 32) elements; the block's warps
// share tiles of the other side's rows staged in shared memory as float32. The forward runs the
// online softmax one key at a time and saves lse; the backward recomputes p = exp(s - lse) and
// runs as two passes (dk and dv per key row, then dq per query row), each row owned by one warp:
// no atomics, results do not depend on scheduling. bfloat16 inputs of head dims 64 and 128 take
// the tensor-core kernels of attention_mma.cu instead (the backward after this file's delta kernel).
#include <algorithm>
#include <cmath>
#include "../ops/attention.h"
#include "attention.cuh"
#include "common.cuh"
#include "copy.h"

namespace kiln::cuda {

namespace {

constexpr int64_t kMaxDim = ops::kAttentionCudaMaxHeadDim;  // 4 elements per lane; two staged tiles fit 48 KiB
constexpr int kWarps = 8;     // rows per block, a warp each
constexpr int kTile = 32;     // rows of the other side staged in shared memory at once

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// A row's elements held by one lane: d = lane + 32 * e.
template <int P>
struct Frag {
  float x[P];
  template <typename T>
  __device__ void load(const T* row, int64_t D, float scale = 1.f) {
#pragma unroll
    for (int e = 0; e < P; e++) {
      const int64_t d = threadIdx.x % 32 + 32 * e;
      x[e] = d < D ? dconvert<float>(row[d]) * scale : 0.f;
    }
  }
  __device__ void zero() {
#pragma unroll
    for (int e = 0; e < P; e++) x[e] = 0.f;
  }
  // The dot product with a row of sh (shared memory, D floats), summed across the warp.
  __device__ float dot(const float* sh, int64_t D) const {
    float s = 0.f;
#pragma unroll
    for (int e = 0; e < P; e++) {
      const int64_t d = threadIdx.x % 32 + 32 * e;
      if (d < D) s += x[e] * sh[d];
    }
    return warp_sum(s);
  }
  __device__ void axpy(float a, const float* sh, int64_t D) {
#pragma unroll
    for (int e = 0; e < P; e++) {
      const int64_t d = threadIdx.x % 32 + 32 * e;
      if (d < D) x[e] += a * sh[d];
    }
  }
  template <typename T>
  __device__ void store(T* row, int64_t D, float scale = 1.f) const {
#pragma unroll
    for (int e = 0; e < P; e++) {
      const int64_t d = threadIdx.x % 32 + 32 * e;
      if (d < D) row[d] = dconvert<T>(x[e] * scale);
    }
  }
};

// Stages rows r0..r0+n of a head (n <= kTile) into sh as float32 (rows of D), times scale.
template <typename T>
__device__ void stage(float* sh, const T* base, int64_t rs, int64_t r0, int64_t n, int64_t D, float scale = 1.f) {
  for (int64_t e = threadIdx.y * 32 + threadIdx.x; e < n * D; e += kWarps * 32) {
    const int64_t r = e / D, d = e % D;
    sh[e] = dconvert<float>(base[(r0 + r) * rs + d]) * scale;
  }
}

// Rows of scalars (lse, delta) for the same rows, float32.
__device__ void stage_scalars(float* sh, const float* src, int64_t r0, int64_t n) {
  for (int64_t e = threadIdx.y * 32 + threadIdx.x; e < n; e += kWarps * 32) sh[e] = src[r0 + e];
}

// The forward's and the dq pass's walk over keys: the block's warps own queries i0 + y; the keys
// they see are staged kTile at a time into sh (k rows, then v rows, as float32) and each warp calls
// f(k_j, v_j) for the keys its query sees (none when !live). Every warp reaches every barrier.
template <typename T, typename F>
__device__ void for_keys(const Dims& n, int64_t i0, bool live, const T* kb, const T* vb, int64_t krs, int64_t vrs,
                         float* sh, F f) {
  float* ks = sh;
  float* vs = sh + kTile * n.D;
  const int64_t mine = live ? n.keys(i0 + threadIdx.y) : 0;
  const int64_t jend = n.keys(min(n.L, i0 + kWarps) - 1);
  for (int64_t j0 = 0; j0 < jend; j0 += kTile) {
    const int64_t cols = min(int64_t(kTile), n.S - j0);
    __syncthreads();
    stage(ks, kb, krs, j0, cols, n.D);
    stage(vs, vb, vrs, j0, cols, n.D);
    __syncthreads();
    const int64_t seen = min(cols, mine - j0);
    for (int64_t c = 0; c < seen; c++) f(ks + c * n.D, vs + c * n.D);
  }
}

// grid (B * H, ceil(L / kWarps)), block (32, kWarps): warp y owns query i.
template <typename T, int P>
__global__ void __launch_bounds__(kWarps * 32)
    attention_forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                             Layout lq, Layout lk, Layout lv, Dims n, float scale, T* __restrict__ out,
                             float* __restrict__ lse) {
  extern __shared__ float sh[];
  const int64_t bh = blockIdx.x, i0 = int64_t(blockIdx.y) * kWarps, i = i0 + threadIdx.y;
  const bool live = i < n.L;
  const T* kb = k + lk.base(bh, n.H);
  const T* vb = v + lv.base(bh, n.H);
  Frag<P> qf, acc;
  if (live) qf.load(q + lq.base(bh, n.H) + i * lq.rs, n.D, scale);
  acc.zero();
  float m = -INFINITY, l = 0.f;
  for_keys(n, i0, live, kb, vb, lk.rs, lv.rs, sh, [&](const float* kr, const float* vr) {
    const float s = qf.dot(kr, n.D);
    const float mx = fmaxf(m, s);
    const float corr = __expf(m - mx), p = __expf(s - mx);
#pragma unroll
    for (int e = 0; e < P; e++) acc.x[e] *= corr;
    acc.axpy(p, vr, n.D);
    l = l * corr + p;
    m = mx;
  });
  if (!live) return;
  acc.store(out + (bh * n.L + i) * n.D, n.D, 1.f / l);
  if (threadIdx.x == 0) lse[bh * n.L + i] = m + logf(l);
}

// delta_i = dout_i . out_i, a warp per row of B * H * L.
template <typename T, int P>
__global__ void __launch_bounds__(kWarps * 32)
    attention_delta_kernel(const T* __restrict__ o, const T* __restrict__ g, Layout lo, Layout lg, Dims n,
                           int64_t rows, float* __restrict__ delta) {
  const int64_t r = int64_t(blockIdx.x) * kWarps + threadIdx.y;
  if (r >= rows) return;
  const int64_t bh = r / n.L, i = r % n.L;
  Frag<P> of, gf;
  of.load(o + lo.base(bh, n.H) + i * lo.rs, n.D);
  gf.load(g + lg.base(bh, n.H) + i * lg.rs, n.D);
  float s = 0.f;
#pragma unroll
  for (int e = 0; e < P; e++) s += of.x[e] * gf.x[e];
  s = warp_sum(s);
  if (threadIdx.x == 0) delta[r] = s;
}

// grid (B * H, ceil(S / kWarps)): warp y owns key j and accumulates dk_j and dv_j over the queries
// that see it, staged kTile at a time (scaled q, dout, lse, delta).
template <typename T, int P>
__global__ void __launch_bounds__(kWarps * 32)
    attention_dkv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         const T* __restrict__ g, Layout lq, Layout lk, Layout lv, Layout lg, Dims n, float scale,
                         const float* __restrict__ lse, const float* __restrict__ delta, T* __restrict__ dk,
                         T* __restrict__ dv) {
  extern __shared__ float sh[];
  float* qs = sh;
  float* gs = sh + kTile * n.D;
  float* ls = gs + kTile * n.D;
  float* ds = ls + kTile;
  const int64_t bh = blockIdx.x, j0 = int64_t(blockIdx.y) * kWarps, j = j0 + threadIdx.y;
  const bool live = j < n.S;
  Frag<P> kf, vf, gk, gv;
  if (live) {
    kf.load(k + lk.base(bh, n.H) + j * lk.rs, n.D);
    vf.load(v + lv.base(bh, n.H) + j * lv.rs, n.D);
  }
  gk.zero();
  gv.zero();
  const T* qb = q + lq.base(bh, n.H);
  const T* gb = g + lg.base(bh, n.H);
  const int64_t first = live ? n.first_query(j) : n.L;
  for (int64_t i0 = n.first_query(j0); i0 < n.L; i0 += kTile) {
    const int64_t rows = min(int64_t(kTile), n.L - i0);
    __syncthreads();
    stage(qs, qb, lq.rs, i0, rows, n.D, scale);
    stage(gs, gb, lg.rs, i0, rows, n.D);
    stage_scalars(ls, lse + bh * n.L, i0, rows);
    stage_scalars(ds, delta + bh * n.L, i0, rows);
    __syncthreads();
    for (int64_t r = max(int64_t(0), first - i0); r < rows; r++) {
      const float p = __expf(kf.dot(qs + r * n.D, n.D) - ls[r]);
      const float dsc = p * (vf.dot(gs + r * n.D, n.D) - ds[r]);
      gv.axpy(p, gs + r * n.D, n.D);
      gk.axpy(dsc, qs + r * n.D, n.D);
    }
  }
  if (!live) return;
  gk.store(dk + (bh * n.S + j) * n.D, n.D);
  gv.store(dv + (bh * n.S + j) * n.D, n.D);
}

// grid (B * H, ceil(L / kWarps)): warp y owns query i and accumulates dq_i over the keys it sees.
template <typename T, int P>
__global__ void __launch_bounds__(kWarps * 32)
    attention_dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                        const T* __restrict__ g, Layout lq, Layout lk, Layout lv, Layout lg, Dims n, float scale,
                        const float* __restrict__ lse, const float* __restrict__ delta, T* __restrict__ dq) {
  extern __shared__ float sh[];
  const int64_t bh = blockIdx.x, i0 = int64_t(blockIdx.y) * kWarps, i = i0 + threadIdx.y;
  const bool live = i < n.L;
  Frag<P> qf, gf, gq;
  float li = 0.f, di = 0.f;
  if (live) {
    qf.load(q + lq.base(bh, n.H) + i * lq.rs, n.D, scale);
    gf.load(g + lg.base(bh, n.H) + i * lg.rs, n.D);
    li = lse[bh * n.L + i];
    di = delta[bh * n.L + i];
  }
  gq.zero();
  const T* kb = k + lk.base(bh, n.H);
  const T* vb = v + lv.base(bh, n.H);
  for_keys(n, i0, live, kb, vb, lk.rs, lv.rs, sh, [&](const float* kr, const float* vr) {
    const float p = __expf(qf.dot(kr, n.D) - li);
    gq.axpy(p * (gf.dot(vr, n.D) - di), kr, n.D);
  });
  if (live) gq.store(dq + (bh * n.L + i) * n.D, n.D, scale);
}

// t when its last dim has unit stride, else a contiguous copy (kernels read rows of D elements).
Tensor unit_rows(const Tensor& t) {
  if (t.strides[3] == 1 || t.shape[3] <= 1) return t;
  Tensor c = Tensor::empty(t.shape, t.dtype, t.device());
  copy(t, c);
  return c;
}

// Calls f(std::integral_constant<int, P>) with P = ceil(D / 32) rounded up to 2 or 4.
template <typename F>
void with_per_lane(int64_t D, F f) {
  if (D <= 64) f(std::integral_constant<int, 2>{});
  else f(std::integral_constant<int, 4>{});
}

// Calls f(T{}) with T the element type of dt: float or __nv_bfloat16 (kAttentionCudaDTypes).
template <typename F>
void dispatch(DType dt, const char* op, F f) {
  if (dt == DType::Float32) f(float{});
  else if (dt == DType::BFloat16) f(__nv_bfloat16{});
  else throw_dtype_unsupported(op, dt);
}

// Head dims up to kMaxDim; rows (query or key tiles) up to the grid's 65535 blocks along y.
void check_cuda_limits(const char* op, const Tensor& q, const Tensor& k) {
  KILN_CHECK(q.shape[3] <= kMaxDim, Shape, op, "on CUDA takes head dims up to ", kMaxDim, ", got q ",
             shape_str(q.shape));
  const int64_t most = int64_t(65535) * kWarps;
  KILN_CHECK(q.shape[2] <= most && k.shape[2] <= most, Shape, op, "on CUDA takes up to ", most,
             " queries and keys, got q ", shape_str(q.shape), " and k ", shape_str(k.shape));
}

unsigned blocks_for(int64_t rows) { return unsigned((rows + kWarps - 1) / kWarps); }

}  // namespace

void attention_forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, bool causal, double scale,
                       const Tensor& out, const Tensor& lse) {
  const char* op = "flashAttention";
  ops::check_attention_forward(q_in, k_in, v_in, causal, scale, out, lse);
  check_cuda_limits(op, q_in, k_in);
  const int64_t B = q_in.shape[0], H = q_in.shape[1], L = q_in.shape[2], S = k_in.shape[2], D = q_in.shape[3];
  if (B * H * L == 0) return;
  const Tensor q = unit_rows(q_in), k = unit_rows(k_in), v = unit_rows(v_in);
  const Dims n{H, L, S, D, causal};
  const Device dev = q.device();
  if (attention_mma_applies(q.dtype, D)) {
    attention_forward_mma(q, k, v, n, B * H, float(scale), out, lse, stream(dev));
    KILN_CUDA_LAUNCH_CHECK(op);
    return;
  }
  const size_t shared = size_t(2 * kTile * D) * sizeof(float);
  const dim3 grid(unsigned(B * H), blocks_for(L)), block(32, kWarps);
  dispatch(q.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    with_per_lane(D, [&](auto P) {
      attention_forward_kernel<T, decltype(P)::value><<<grid, block, shared, stream(dev)>>>(
          q.data<T>(), k.data<T>(), v.data<T>(), layout_of(q), layout_of(k), layout_of(v), n, float(scale),
          out.data<T>(), lse.data<float>());
    });
  });
  KILN_CUDA_LAUNCH_CHECK(op);
}

void attention_backward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& out_in,
                        const Tensor& dout_in, const Tensor& lse, bool causal, double scale, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv) {
  const char* op = "flashAttention backward";
  ops::check_attention_backward(q_in, k_in, v_in, out_in, dout_in, lse, causal, scale, dq, dk, dv);
  check_cuda_limits(op, q_in, k_in);
  const int64_t B = q_in.shape[0], H = q_in.shape[1], L = q_in.shape[2], S = k_in.shape[2], D = q_in.shape[3];
  if (B * H * S == 0) return;
  if (L == 0) {
    fill(dk, 0);
    fill(dv, 0);
    return;
  }
  const Tensor q = unit_rows(q_in), k = unit_rows(k_in), v = unit_rows(v_in);
  const Tensor o = unit_rows(out_in), g = unit_rows(dout_in);
  const Dims n{H, L, S, D, causal};
  const Device dev = q.device();
  cudaStream_t s = stream(dev);
  const Tensor delta = Tensor::empty({B * H * L}, DType::Float32, dev);
  const dim3 block(32, kWarps);
  dispatch(q.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    with_per_lane(D, [&](auto P) {
      constexpr int PL = decltype(P)::value;
      attention_delta_kernel<T, PL><<<blocks_for(B * H * L), block, 0, s>>>(
          o.data<T>(), g.data<T>(), layout_of(o), layout_of(g), n, B * H * L, delta.data<float>());
      if (attention_mma_applies(q.dtype, D)) {
        attention_backward_mma(q, k, v, g, lse, delta, n, B * H, float(scale), dq, dk, dv, s);
        return;
      }
      const size_t kv_shared = size_t(2 * kTile * D + 2 * kTile) * sizeof(float);
      attention_dkv_kernel<T, PL><<<dim3(unsigned(B * H), blocks_for(S)), block, kv_shared, s>>>(
          q.data<T>(), k.data<T>(), v.data<T>(), g.data<T>(), layout_of(q), layout_of(k), layout_of(v),
          layout_of(g), n, float(scale), lse.data<float>(), delta.data<float>(), dk.data<T>(), dv.data<T>());
      const size_t q_shared = size_t(2 * kTile * D) * sizeof(float);
      attention_dq_kernel<T, PL><<<dim3(unsigned(B * H), blocks_for(L)), block, q_shared, s>>>(
          q.data<T>(), k.data<T>(), v.data<T>(), g.data<T>(), layout_of(q), layout_of(k), layout_of(v),
          layout_of(g), n, float(scale), lse.data<float>(), delta.data<float>(), dq.data<T>());
    });
  });
  KILN_CUDA_LAUNCH_CHECK(op);
}

}  // namespace kiln::cuda
