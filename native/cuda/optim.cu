// CUDA fused optimizer kernels (twins of native/cpu/optim.cc). SGD and Adam/AdamW read and write each
// operand of a parameter once, with 16-byte vector accesses when every operand is aligned. Clipping
// splits all gradients into fixed chunks, one block each: the first pass writes one float64 partial
// per chunk, one block folds the partials in a fixed order into the norm (deterministic, no atomics),
// and the last pass scales the chunks, reading the norm from device memory so the host never waits.
// Several gradients go to each launch as pointer tables passed by value.
#include <cmath>
#include "common.cuh"
#include "optim.h"
#include "reduce.cuh"

namespace kiln::cuda {
namespace {

// Elements of T in one 16-byte access.
template <typename T>
constexpr int kVec = 16 / int(sizeof(T));

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

__host__ __device__ __forceinline__ bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ---------------------------------------------------------------------------------------------
// Parameter updates: step(e) updates the values e[k] of operand k at one index; the operands whose
// bit is set in Step::kWrites are stored back. Absent optional operands are null and never touched.

template <typename T, int N>
struct Operands {
  T* ptr[N];
};

template <int V, typename T, int N, typename Step>
__global__ void update_kernel(Operands<T, N> ops, int64_t n, Step step) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t packs = n / V;
  for (int64_t i = first; i < packs; i += stride) {
    Pack<T, V> x[N] = {};
#pragma unroll
    for (int k = 0; k < N; k++)
      if (ops.ptr[k]) x[k] = reinterpret_cast<const Pack<T, V>*>(ops.ptr[k])[i];
#pragma unroll
    for (int j = 0; j < V; j++) {
      T e[N];
#pragma unroll
      for (int k = 0; k < N; k++) e[k] = x[k].v[j];
      step(e);
#pragma unroll
      for (int k = 0; k < N; k++) x[k].v[j] = e[k];
    }
#pragma unroll
    for (int k = 0; k < N; k++)
      if ((Step::kWrites >> k & 1) && ops.ptr[k]) reinterpret_cast<Pack<T, V>*>(ops.ptr[k])[i] = x[k];
  }
  for (int64_t i = packs * V + first; i < n; i += stride) {
    T e[N] = {};
#pragma unroll
    for (int k = 0; k < N; k++)
      if (ops.ptr[k]) e[k] = ops.ptr[k][i];
    step(e);
#pragma unroll
    for (int k = 0; k < N; k++)
      if ((Step::kWrites >> k & 1) && ops.ptr[k]) ops.ptr[k][i] = e[k];
  }
}

template <typename T, int N, typename Step>
void launch_update(const char* op, Device d, int64_t n, const Operands<T, N>& ops, const Step& step) {
  if (n == 0) return;
  bool vec = true;
  for (int k = 0; k < N; k++) vec = vec && (!ops.ptr[k] || aligned16(ops.ptr[k]));
  constexpr int V = kVec<T>;
  if (vec) update_kernel<V><<<grid_for((n + V - 1) / V, d), kThreads, 0, stream(d)>>>(ops, n, step);
  else update_kernel<1><<<grid_for(n, d), kThreads, 0, stream(d)>>>(ops, n, step);
  KILN_CUDA_LAUNCH_CHECK(op);
}

// Operands: param, grad, momentum buffer. Same arithmetic as the CPU kernel, in T.
template <typename T>
struct SgdStep {
  static constexpr unsigned kWrites = 0b101;
  T lr, wd, mom, keep, sign;
  bool decay, first, nesterov, momentum;
  __device__ __forceinline__ void operator()(T (&e)[3]) const {
    T g = sign * e[1];
    if (decay) g += wd * e[0];
    if (momentum) {
      const T b = first ? g : mom * e[2] + keep * g;
      e[2] = b;
      g = nesterov ? g + mom * b : b;
    }
    e[0] -= lr * g;
  }
};

// Operands: param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq. Same arithmetic as the CPU kernel, in T.
template <typename T>
struct AdamStep {
  static constexpr unsigned kWrites = 0b11101;
  T b1, b2, one_b1, one_b2, eps, step_size, bc2, sign, wd, shrink;
  bool l2, amsgrad;
  __device__ __forceinline__ void operator()(T (&e)[5]) const {
    const T p = e[0] * shrink;
    T g = sign * e[1];
    if (l2) g += wd * e[0];
    const T m = b1 * e[2] + one_b1 * g;
    T v = b2 * e[3] + one_b2 * g * g;
    e[2] = m;
    e[3] = v;
    if (amsgrad) {
      v = e[4] > v ? e[4] : v;
      e[4] = v;
    }
    e[0] = p - step_size * (m / (sqrt(v) / bc2 + eps));
  }
};

// ---------------------------------------------------------------------------------------------
// Gradient clipping.

constexpr int64_t kChunk = 1 << 15;  // elements per block in both passes over the gradients
constexpr int kListTensors = 64;     // gradients per launch; keeps the parameter table under 4 KiB
constexpr int kFinishThreads = 1024;

enum NormKind { kInfNorm, kL1, kL2, kLp };

// A launch's gradients: block b handles chunk b - first_chunk[t] of the tensor t whose range holds b.
template <typename T>
struct ChunkList {
  T* data[kListTensors];
  int64_t numel[kListTensors];
  int32_t first_chunk[kListTensors + 1];
  int count;

  __device__ __forceinline__ void locate(T*& x, int64_t& begin, int64_t& end) const {
    int t = 0;
    while (int32_t(blockIdx.x) >= first_chunk[t + 1]) t++;
    x = data[t];
    begin = int64_t(int32_t(blockIdx.x) - first_chunk[t]) * kChunk;
    end = min(numel[t], begin + kChunk);
  }
};

// Calls f(list, index of its first chunk among all) for the nonempty gradients in order, grouped in
// runs of one dtype of at most kListTensors.
template <typename F>
int64_t for_chunk_lists(const char* op, const std::vector<const Tensor*>& grads, F f) {
  int64_t chunks = 0;
  size_t i = 0;
  while (i < grads.size()) {
    const DType dt = grads[i]->dtype;
    KILN_DISPATCH_FLOAT(dt, op, {
      ChunkList<scalar_t> l{};
      for (; i < grads.size() && grads[i]->dtype == dt && l.count < kListTensors; i++) {
        const int64_t n = grads[i]->numel();
        if (n == 0) continue;
        l.data[l.count] = grads[i]->data<scalar_t>();
        l.numel[l.count] = n;
        const int64_t end = l.first_chunk[l.count] + (n + kChunk - 1) / kChunk;
        KILN_CHECK(end <= INT32_MAX, Shape, op, "gradient ", i, " with ", n, " elements is too large");
        l.first_chunk[l.count + 1] = int32_t(end);
        l.count++;
      }
      if (l.count) {
        f(l, chunks);
        chunks += l.first_chunk[l.count];
      }
    });
  }
  return chunks;
}

template <int Kind>
__device__ __forceinline__ double norm_term(double a, double p) {
  if constexpr (Kind == kInfNorm || Kind == kL1) return a;
  else if constexpr (Kind == kL2) return a * a;
  else return pow(a, p);
}

template <int Kind>
__device__ __forceinline__ double norm_combine(double acc, double t) {
  if constexpr (Kind == kInfNorm) return MaxOp()(acc, t);
  else return acc + t;
}

template <int Kind>
__device__ __forceinline__ double block_norm_reduce(double acc, double* shared) {
  if constexpr (Kind == kInfNorm) return block_reduce(acc, MaxOp(), 0.0, shared);
  else return block_reduce(acc, SumOp(), 0.0, shared);
}

template <int Kind, typename T>
__global__ void norm_partials(ChunkList<T> l, double p, double* __restrict__ partial) {
  __shared__ double shared[32];
  T* x;
  int64_t begin, end;
  l.locate(x, begin, end);
  double acc = 0;
  constexpr int V = kVec<T>;
  int64_t i = begin;
  if (aligned16(x)) {  // chunks start at multiples of kChunk, so every pack of the chunk is aligned
    const int64_t packs = (end - begin) / V;
    const Pack<T, V>* px = reinterpret_cast<const Pack<T, V>*>(x + begin);
    for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
      const Pack<T, V> v = px[j];
#pragma unroll
      for (int k = 0; k < V; k++) acc = norm_combine<Kind>(acc, norm_term<Kind>(fabs(double(v.v[k])), p));
    }
    i = begin + packs * V;
  }
  for (i += threadIdx.x; i < end; i += blockDim.x) acc = norm_combine<Kind>(acc, norm_term<Kind>(fabs(double(x[i])), p));
  acc = block_norm_reduce<Kind>(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// One block: folds the partials into the norm, kept in float64 for the scaling pass and written to total.
template <int Kind, typename Out>
__global__ void norm_finish(const double* __restrict__ partial, int64_t count, double p, double* __restrict__ norm,
                            Out* __restrict__ total) {
  __shared__ double shared[32];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc = norm_combine<Kind>(acc, partial[i]);
  acc = block_norm_reduce<Kind>(acc, shared);
  if (threadIdx.x == 0) {
    const double r = Kind == kL2 ? sqrt(acc) : Kind == kLp ? pow(acc, 1 / p) : acc;
    *norm = r;
    *total = dconvert<Out, double>(r);
  }
}

// As the CPU kernel: nothing to do when max_norm / (norm + 1e-6) >= 1, and a NaN norm scales by NaN.
template <typename T>
__global__ void scale_chunks(ChunkList<T> l, const double* __restrict__ norm, double max_norm) {
  const double coef = max_norm / (*norm + 1e-6);
  if (coef >= 1) return;
  const T c = T(coef);
  T* x;
  int64_t begin, end;
  l.locate(x, begin, end);
  constexpr int V = kVec<T>;
  int64_t i = begin;
  if (aligned16(x)) {
    const int64_t packs = (end - begin) / V;
    Pack<T, V>* px = reinterpret_cast<Pack<T, V>*>(x + begin);
    for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
      Pack<T, V> v = px[j];
#pragma unroll
      for (int k = 0; k < V; k++) v.v[k] *= c;
      px[j] = v;
    }
    i = begin + packs * V;
  }
  for (i += threadIdx.x; i < end; i += blockDim.x) x[i] *= c;
}

template <int Kind>
void clip_passes(const char* op, const std::vector<const Tensor*>& grads, int64_t chunks, double p, double* partial,
                 double* norm, const Tensor& total, Device d) {
  cudaStream_t s = stream(d);
  for_chunk_lists(op, grads, [&](const auto& l, int64_t first) {
    norm_partials<Kind><<<unsigned(l.first_chunk[l.count]), kThreads, 0, s>>>(l, p, partial + first);
    KILN_CUDA_LAUNCH_CHECK(op);
  });
  KILN_DISPATCH_FLOAT(total.dtype, op, {
    norm_finish<Kind><<<1, kFinishThreads, 0, s>>>(partial, chunks, p, norm, total.data<scalar_t>());
  });
  KILN_CUDA_LAUNCH_CHECK(op);
}

}  // namespace

void sgd_step(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, const SgdOptions& o) {
  const char* op = "sgdStep";
  check_sgd_step(param, grad, momentum_buf, o);
  KILN_DISPATCH_FLOAT(param.dtype, op, {
    using T = scalar_t;
    const SgdStep<T> step{T(o.lr), T(o.weight_decay), T(o.momentum), T(1 - o.dampening), o.maximize ? T(-1) : T(1),
                          o.weight_decay != 0, o.first_step, o.nesterov, momentum_buf != nullptr};
    const Operands<T, 3> ptrs{{param.data<T>(), grad.data<T>(), momentum_buf ? momentum_buf->data<T>() : nullptr}};
    launch_update(op, param.device(), param.numel(), ptrs, step);
  });
}

void adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
               const Tensor* max_exp_avg_sq, const AdamOptions& o) {
  const char* op = "adamStep";
  check_adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, o);
  KILN_DISPATCH_FLOAT(param.dtype, op, {
    using T = scalar_t;
    // AdamW multiplies by exactly 1 when there is no decay, which leaves every value unchanged.
    const AdamStep<T> step{T(o.beta1), T(o.beta2), T(1 - o.beta1), T(1 - o.beta2), T(o.eps),
                           T(o.lr / o.bias_correction1), T(o.bias_correction2_sqrt), o.maximize ? T(-1) : T(1),
                           T(o.weight_decay), o.decoupled ? T(1 - o.lr * o.weight_decay) : T(1),
                           !o.decoupled && o.weight_decay != 0, max_exp_avg_sq != nullptr};
    const Operands<T, 5> ptrs{{param.data<T>(), grad.data<T>(), exp_avg.data<T>(), exp_avg_sq.data<T>(),
                               max_exp_avg_sq ? max_exp_avg_sq->data<T>() : nullptr}};
    launch_update(op, param.device(), param.numel(), ptrs, step);
  });
}

void clip_grad_norm(const std::vector<const Tensor*>& grads, double max_norm, double norm_type, const Tensor& total,
                    bool error_if_nonfinite) {
  const char* op = "clipGradNorm";
  check_clip_grad_norm(grads, max_norm, norm_type, total);
  const Device d = total.device();
  int64_t chunks = 0;
  for (const Tensor* g : grads) chunks += (g->numel() + kChunk - 1) / kChunk;
  // The partials, then the norm in float64.
  Tensor scratch = Tensor::empty({chunks + 1}, DType::Float64, d);
  double* partial = scratch.data<double>();
  double* norm = partial + chunks;
  if (std::isinf(norm_type)) clip_passes<kInfNorm>(op, grads, chunks, norm_type, partial, norm, total, d);
  else if (norm_type == 1) clip_passes<kL1>(op, grads, chunks, norm_type, partial, norm, total, d);
  else if (norm_type == 2) clip_passes<kL2>(op, grads, chunks, norm_type, partial, norm, total, d);
  else clip_passes<kLp>(op, grads, chunks, norm_type, partial, norm, total, d);
  if (error_if_nonfinite) {
    double h = 0;
    copy_to_host(&h, norm, sizeof(h), d);
    KILN_CHECK(std::isfinite(h), Value, op, "the total norm of order ", norm_type, " of the gradients is ", h,
               " (not finite); pass errorIfNonfinite: false to clip anyway");
  }
  cudaStream_t s = stream(d);
  for_chunk_lists(op, grads, [&](const auto& l, int64_t) {
    scale_chunks<<<unsigned(l.first_chunk[l.count]), kThreads, 0, s>>>(l, norm, max_norm);
    KILN_CUDA_LAUNCH_CHECK(op);
  });
}

}  // namespace kiln::cuda
