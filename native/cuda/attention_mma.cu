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
// ptxas (sm_90, D = 64 / 128): forward 128 / 173 registers, dk/dv 166 / 244, dq 164 / 165, no spills;
// dynamic shared memory 18 / 34 KiB, 37 / 51 KiB, 36 / 51 KiB (above 48 KiB needs the opt-in launch
// sets). The kernels are in attention_mma_kernels.cuh; test/ops/attention_mma_host.test.ts runs them
// on the host in an emulation, test/cuda/attention.test.ts on a GPU against the CPU twin.
#include <cstdint>
#include <mutex>
#include <set>
#include <utility>
#include "../ops/attention.h"
#include "attention.cuh"
#include "common.cuh"
#include "copy.h"
#include "mma.cuh"
#include "attention_mma_kernels.cuh"

namespace kiln::cuda {

namespace {

using namespace attn_mma;

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
// The opt-in is per function and device, set on each one's first launch (a cudaFuncSetAttribute per
// launch would cost host time every step); kernels within the default need none.
template <typename K, typename... Args>
void launch(K kernel, int64_t BH, int64_t rows, size_t shared, cudaStream_t s, Args... args) {
  static std::mutex mutex;
  static std::set<std::pair<const void*, int>> raised;
  constexpr size_t kDefaultSharedBytes = 48 << 10;
  if (shared > kDefaultSharedBytes) {
    int device = 0;
    KILN_CUDA_CHECK(cudaGetDevice(&device), "flashAttention");
    std::lock_guard<std::mutex> lock(mutex);
    if (raised.insert({reinterpret_cast<const void*>(kernel), device}).second) {
      const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared));
      if (e != cudaSuccess) raised.erase({reinterpret_cast<const void*>(kernel), device});
      KILN_CUDA_CHECK(e, "flashAttention");
    }
  }
  const dim3 grid(unsigned(BH), unsigned((rows + kRows - 1) / kRows));
  kernel<<<grid, kBlockThreads, shared, s>>>(args...);
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
    launch(forward_kernel<D>, BH, n.L, forward_shared<D>(), s, q.data<bf16>(), k.data<bf16>(), v.data<bf16>(), layout_of(q),
           layout_of(k), layout_of(v), n, scale, out.data<bf16>(), lse.data<float>());
  });
}

void attention_backward_mma(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& dout,
                            const Tensor& lse, const Tensor& delta, const Dims& n, int64_t BH, float scale,
                            const Tensor& dq, const Tensor& dk, const Tensor& dv, cudaStream_t s) {
  const Tensor q = aligned_rows(q_in), k = aligned_rows(k_in), v = aligned_rows(v_in), g = aligned_rows(dout);
  with_head_dim(n.D, [&](auto d) {
    constexpr int D = decltype(d)::value;
    launch(dkv_kernel<D>, BH, n.S, dkv_shared<D>(), s, q.data<bf16>(), k.data<bf16>(), v.data<bf16>(), g.data<bf16>(),
           layout_of(q), layout_of(k), layout_of(v), layout_of(g), n, scale, lse.data<float>(),
           delta.data<float>(), dk.data<bf16>(), dv.data<bf16>());
    launch(dq_kernel<D>, BH, n.L, dq_shared<D>(), s, q.data<bf16>(), k.data<bf16>(), v.data<bf16>(), g.data<bf16>(),
           layout_of(q), layout_of(k), layout_of(v), layout_of(g), n, scale, lse.data<float>(),
           delta.data<float>(), dq.data<bf16>());
  });
}

}  // namespace kiln::cuda
