// CUDA fused optimizer kernels and gradient-clipping passes (twins of native/cpu/optim.cc, contract in
// native/ops/optim.h). SGD and Adam/AdamW read and write each operand of a parameter once, with
// 16-byte vector accesses of the parameter when every operand is aligned; bfloat16 and float16
// parameters compute in float32 against float32 state and only the new value is rounded. Clipping
// splits all gradients into fixed chunks, one block each: the partial pass writes one float64 value
// per chunk and one block folds them in a fixed order (deterministic, no atomics); the coefficient is
// computed by one thread and the scaling pass reads it from device memory, so the host never waits.
// Several gradients go to each launch as pointer tables passed by value.
#include <cmath>
#include "../ops/optim.h"
#include "common.cuh"
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

__host__ __device__ __forceinline__ bool aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

// What an update of a T parameter computes in, and the element type of its state.
template <typename T>
using compute_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// ---------------------------------------------------------------------------------------------
// Parameter updates: step(p, g, s) updates the parameter value p from the gradient value g and the
// S state values s at one index; all are stored back. An absent optional state is null, never touched.

template <typename T, int S>
struct UpdateOperands {
  T* param;
  const T* grad;
  compute_t<T>* state[S];
};

template <int V, typename T, int S, typename Step>
__global__ void update_kernel(UpdateOperands<T, S> ops, int64_t n, Step step) {
  using C = compute_t<T>;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t packs = n / V;
  for (int64_t i = first; i < packs; i += stride) {
    Pack<T, V> p = reinterpret_cast<const Pack<T, V>*>(ops.param)[i];
    const Pack<T, V> g = reinterpret_cast<const Pack<T, V>*>(ops.grad)[i];
    Pack<C, V> s[S] = {};
#pragma unroll
    for (int k = 0; k < S; k++)
      if (ops.state[k]) s[k] = reinterpret_cast<const Pack<C, V>*>(ops.state[k])[i];
#pragma unroll
    for (int j = 0; j < V; j++) {
      C e[S];
#pragma unroll
      for (int k = 0; k < S; k++) e[k] = s[k].v[j];
      C pj = dconvert<C>(p.v[j]);
      step(pj, dconvert<C>(g.v[j]), e);
      p.v[j] = dconvert<T>(pj);
#pragma unroll
      for (int k = 0; k < S; k++) s[k].v[j] = e[k];
    }
    reinterpret_cast<Pack<T, V>*>(ops.param)[i] = p;
#pragma unroll
    for (int k = 0; k < S; k++)
      if (ops.state[k]) reinterpret_cast<Pack<C, V>*>(ops.state[k])[i] = s[k];
  }
  for (int64_t i = packs * V + first; i < n; i += stride) {
    C e[S] = {};
#pragma unroll
    for (int k = 0; k < S; k++)
      if (ops.state[k]) e[k] = ops.state[k][i];
    C p = dconvert<C>(ops.param[i]);
    step(p, dconvert<C>(ops.grad[i]), e);
    ops.param[i] = dconvert<T>(p);
#pragma unroll
    for (int k = 0; k < S; k++)
      if (ops.state[k]) ops.state[k][i] = e[k];
  }
}

template <typename T, int S, typename Step>
void launch_update(const char* op, Device d, int64_t n, const UpdateOperands<T, S>& ops, const Step& step) {
  if (n == 0) return;
  constexpr int V = kVec<T>;
  bool vec = aligned(ops.param, alignof(Pack<T, V>)) && aligned(ops.grad, alignof(Pack<T, V>));
  for (int k = 0; k < S; k++) vec = vec && (!ops.state[k] || aligned(ops.state[k], alignof(Pack<compute_t<T>, V>)));
  if (vec) update_kernel<V><<<grid_for((n + V - 1) / V, d), kThreads, 0, stream(d)>>>(ops, n, step);
  else update_kernel<1><<<grid_for(n, d), kThreads, 0, stream(d)>>>(ops, n, step);
  KILN_CUDA_LAUNCH_CHECK(op);
}

// State: the momentum buffer. Same arithmetic as the CPU kernel, in C.
template <typename C>
struct SgdStep {
  C lr, wd, mom, keep, sign;
  bool decay, first, nesterov, momentum;
  __device__ __forceinline__ void operator()(C& p, C g, C (&s)[1]) const {
    g = sign * g;
    if (decay) g += wd * p;
    if (momentum) {
      const C b = first ? g : mom * s[0] + keep * g;
      s[0] = b;
      g = nesterov ? g + mom * b : b;
    }
    p -= lr * g;
  }
};

// State: exp_avg, exp_avg_sq, max_exp_avg_sq. Same arithmetic as the CPU kernel, in C.
template <typename C>
struct AdamStep {
  C b1, b2, one_b1, one_b2, eps, step_size, bc2, sign, wd, shrink;
  bool l2, amsgrad;
  __device__ __forceinline__ void operator()(C& p, C g, C (&s)[3]) const {
    const C shrunk = p * shrink;
    g = sign * g;
    if (l2) g += wd * p;
    const C m = b1 * s[0] + one_b1 * g;
    C v = b2 * s[1] + one_b2 * g * g;
    s[0] = m;
    s[1] = v;
    if (amsgrad) {
      v = s[2] > v ? s[2] : v;
      s[2] = v;
    }
    p = shrunk - step_size * (m / (sqrt(v) / bc2 + eps));
  }
};

// ---------------------------------------------------------------------------------------------
// Gradient clipping.

constexpr int64_t kChunk = 1 << 15;  // elements per block in both passes over the gradients
constexpr int kListTensors = 64;     // gradients per launch; keeps the parameter table under 4 KiB
constexpr int kFinishThreads = 1024;

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
    KILN_CUDA_DISPATCH_FLOATING(dt, op, {
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

using ops::NormKind;

template <NormKind K>
__device__ __forceinline__ double norm_term(double a, double p) {
  if constexpr (K == NormKind::Inf || K == NormKind::L1) return a;
  else if constexpr (K == NormKind::L2) return a * a;
  else return pow(a, p);
}

template <NormKind K>
__device__ __forceinline__ double norm_combine(double acc, double t) {
  if constexpr (K == NormKind::Inf) return MaxOp()(acc, t);
  else return acc + t;
}

template <NormKind K>
__device__ __forceinline__ double block_norm_reduce(double acc, double* shared) {
  if constexpr (K == NormKind::Inf) return block_reduce(acc, MaxOp(), 0.0, shared);
  else return block_reduce(acc, SumOp(), 0.0, shared);
}

template <NormKind K, typename T>
__global__ void norm_partials(ChunkList<T> l, double p, double* __restrict__ partial) {
  __shared__ double shared[32];
  T* x;
  int64_t begin, end;
  l.locate(x, begin, end);
  double acc = 0;
  constexpr int V = kVec<T>;
  int64_t i = begin;
  if (aligned(x, 16)) {  // chunks start at multiples of kChunk, so every pack of the chunk is aligned
    const int64_t packs = (end - begin) / V;
    const Pack<T, V>* px = reinterpret_cast<const Pack<T, V>*>(x + begin);
    for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
      const Pack<T, V> v = px[j];
#pragma unroll
      for (int k = 0; k < V; k++) acc = norm_combine<K>(acc, norm_term<K>(fabs(dconvert<double>(v.v[k])), p));
    }
    i = begin + packs * V;
  }
  for (i += threadIdx.x; i < end; i += blockDim.x) acc = norm_combine<K>(acc, norm_term<K>(fabs(dconvert<double>(x[i])), p));
  acc = block_norm_reduce<K>(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// One block: folds the chunks' partials in a fixed order into out.
template <NormKind K, typename Out>
__global__ void fold_partials(const double* __restrict__ partial, int64_t count, Out* __restrict__ out) {
  __shared__ double shared[32];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc = norm_combine<K>(acc, partial[i]);
  acc = block_norm_reduce<K>(acc, shared);
  if (threadIdx.x == 0) *out = dconvert<Out>(acc);
}

template <NormKind K>
void partial_passes(const char* op, const std::vector<const Tensor*>& grads, int64_t chunks, double p,
                    double* partial, const Tensor& out, Device d) {
  cudaStream_t s = stream(d);
  for_chunk_lists(op, grads, [&](const auto& l, int64_t first) {
    norm_partials<K><<<unsigned(l.first_chunk[l.count]), kThreads, 0, s>>>(l, p, partial + first);
    KILN_CUDA_LAUNCH_CHECK(op);
  });
  KILN_DISPATCH_FLOAT(out.dtype, op, { fold_partials<K><<<1, kFinishThreads, 0, s>>>(partial, chunks, out.data<scalar_t>()); });
  KILN_CUDA_LAUNCH_CHECK(op);
}

// A one-element float32 or float64 tensor's value, on the device.
struct Scalar {
  void* ptr;
  bool f64;
  __device__ __forceinline__ double load() const { return f64 ? *static_cast<const double*>(ptr) : *static_cast<const float*>(ptr); }
  __device__ __forceinline__ void store(double v) const {
    if (f64) *static_cast<double*>(ptr) = v;
    else *static_cast<float*>(ptr) = float(v);
  }
};

Scalar scalar_of(const Tensor& t) { return {t.data_ptr(), t.dtype == DType::Float64}; }

// One thread: as the CPU kernel, norm = partial^(1/p) and coef = max_norm / (norm + 1e-6) capped at 1.
__global__ void coefficient_kernel(Scalar partial, NormKind kind, double p, double max_norm, Scalar norm, Scalar coef) {
  const double s = partial.load();
  const double n = kind == NormKind::L2 ? sqrt(s) : kind == NormKind::Lp ? pow(s, 1 / p) : s;
  const double c = max_norm / (n + 1e-6);
  norm.store(n);
  coef.store(c >= 1 ? 1.0 : c);  // NaN fails the comparison and stays NaN
}

// Each block scales one chunk by the scale it reads from device memory; a scale of exactly 1 returns.
template <typename T>
__global__ void scale_chunks(ChunkList<T> l, Scalar scale) {
  using C = compute_t<T>;
  const double sv = scale.load();
  if (sv == 1) return;
  const C c = C(sv);
  T* x;
  int64_t begin, end;
  l.locate(x, begin, end);
  constexpr int V = kVec<T>;
  int64_t i = begin;
  if (aligned(x, 16)) {
    const int64_t packs = (end - begin) / V;
    Pack<T, V>* px = reinterpret_cast<Pack<T, V>*>(x + begin);
    for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
      Pack<T, V> v = px[j];
#pragma unroll
      for (int k = 0; k < V; k++) v.v[k] = dconvert<T>(dconvert<C>(v.v[k]) * c);
      px[j] = v;
    }
    i = begin + packs * V;
  }
  for (i += threadIdx.x; i < end; i += blockDim.x) x[i] = dconvert<T>(dconvert<C>(x[i]) * c);
}

}  // namespace

void sgd_step(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, double lr, double momentum,
              double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step) {
  const char* op = "sgdStep";
  const ops::SgdOptions o = ops::check_sgd_step(param, grad, momentum_buf, lr, momentum, dampening, weight_decay,
                                                nesterov, maximize, first_step);
  KILN_CUDA_DISPATCH_FLOATING(param.dtype, op, {
    using T = scalar_t;
    using C = compute_t<T>;
    const SgdStep<C> step{C(o.lr), C(o.weight_decay), C(o.momentum), C(1 - o.dampening), o.maximize ? C(-1) : C(1),
                          o.weight_decay != 0, o.first_step, o.nesterov, momentum_buf != nullptr};
    const UpdateOperands<T, 1> ptrs{param.data<T>(), grad.data<T>(), {momentum_buf ? momentum_buf->data<C>() : nullptr}};
    launch_update(op, param.device(), param.numel(), ptrs, step);
  });
}

void adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
               const Tensor* max_exp_avg_sq, double lr, double beta1, double beta2, double eps, double weight_decay,
               double bias_correction1, double bias_correction2_sqrt, bool decoupled, bool maximize) {
  const char* op = "adamStep";
  const ops::AdamOptions o =
      ops::check_adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                           bias_correction1, bias_correction2_sqrt, decoupled, maximize);
  KILN_CUDA_DISPATCH_FLOATING(param.dtype, op, {
    using T = scalar_t;
    using C = compute_t<T>;
    // AdamW multiplies by exactly 1 when there is no decay, which leaves every value unchanged.
    const AdamStep<C> step{C(o.beta1), C(o.beta2), C(1 - o.beta1), C(1 - o.beta2), C(o.eps),
                           C(o.lr / o.bias_correction1), C(o.bias_correction2_sqrt), o.maximize ? C(-1) : C(1),
                           C(o.weight_decay), o.decoupled ? C(1 - o.lr * o.weight_decay) : C(1),
                           !o.decoupled && o.weight_decay != 0, max_exp_avg_sq != nullptr};
    const UpdateOperands<T, 3> ptrs{param.data<T>(), grad.data<T>(),
                                    {exp_avg.data<C>(), exp_avg_sq.data<C>(),
                                     max_exp_avg_sq ? max_exp_avg_sq->data<C>() : nullptr}};
    launch_update(op, param.device(), param.numel(), ptrs, step);
  });
}

void grad_norm_partial(const std::vector<const Tensor*>& grads, double norm_type, const Tensor& out) {
  const char* op = "gradNormPartial";
  ops::check_grad_norm_partial(grads, norm_type, out);
  const Device d = out.device();
  int64_t chunks = 0;
  for (const Tensor* g : grads) chunks += (g->numel() + kChunk - 1) / kChunk;
  Tensor scratch = Tensor::empty({chunks > 0 ? chunks : 1}, DType::Float64, d);  // one partial per chunk
  double* partial = scratch.data<double>();
  switch (ops::norm_kind(norm_type)) {
    case NormKind::Inf: partial_passes<NormKind::Inf>(op, grads, chunks, norm_type, partial, out, d); break;
    case NormKind::L1: partial_passes<NormKind::L1>(op, grads, chunks, norm_type, partial, out, d); break;
    case NormKind::L2: partial_passes<NormKind::L2>(op, grads, chunks, norm_type, partial, out, d); break;
    case NormKind::Lp: partial_passes<NormKind::Lp>(op, grads, chunks, norm_type, partial, out, d); break;
  }
}

void clip_coefficient(const Tensor& partial, double norm_type, double max_norm, const Tensor& norm,
                      const Tensor& coef) {
  const char* op = "clipCoefficient";
  ops::check_clip_coefficient(partial, norm_type, max_norm, norm, coef);
  coefficient_kernel<<<1, 1, 0, stream(partial.device())>>>(scalar_of(partial), ops::norm_kind(norm_type), norm_type,
                                                             max_norm, scalar_of(norm), scalar_of(coef));
  KILN_CUDA_LAUNCH_CHECK(op);
}

void scale_grads(const std::vector<const Tensor*>& grads, const Tensor& scale) {
  const char* op = "scaleGrads";
  ops::check_scale_grads(grads, scale);
  cudaStream_t s = stream(scale.device());
  const Scalar sc = scalar_of(scale);
  for_chunk_lists(op, grads, [&](const auto& l, int64_t) {
    scale_chunks<<<unsigned(l.first_chunk[l.count]), kThreads, 0, s>>>(l, sc);
    KILN_CUDA_LAUNCH_CHECK(op);
  });
}

}  // namespace kiln::cuda
