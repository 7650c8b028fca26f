// CUDA fused optimizer kernels and gradient-clipping passes (twins of native/cpu/optim.cc, contract in
// native/ops/optim.h). SGD and Adam/AdamW read and write each operand of a parameter once, with
// 16-byte vector accesses of the parameter when every operand is aligned, through the multi-tensor
// launches below (one parameter's update is one of them; the launch count they save for GPT-2 is
// there); the per-element formulas are native/ops/optim.h's, shared with the CPU; bfloat16 and
// float16 parameters compute in float32 against float32 state and only the new value is rounded. Clipping
// splits all gradients into fixed chunks, one block each: the partial pass writes one float64 value
// per chunk and one block folds them in a fixed order (deterministic, no atomics); the coefficient is
// computed by one thread and the scaling pass reads it from device memory, so the host never waits.
// Several gradients go to each launch as pointer tables passed by value.
#include <array>
#include <cmath>
#include "../ops/optim.h"
#include "common.cuh"
#include "reduce.cuh"

namespace kiln::cuda {

using ops::TensorList;

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

// ---------------------------------------------------------------------------------------------
// Parameter updates: step(p, g, s) updates the parameter value p from the gradient value g and the
// S state values s at one index; all are stored back. An absent optional state is null, never touched.

// Elements [begin, end) of one parameter (begin a multiple of V), thread `first` of `stride` taking
// every stride-th pack of V elements, then every stride-th element of the tail.
template <int V, typename T, int S, typename Step>
__device__ __forceinline__ void update_span(T* param, const T* grad, compute_t<T>* const (&state)[S], int64_t begin,
                                            int64_t end, int64_t first, int64_t stride, const Step& step) {
  using C = compute_t<T>;
  const int64_t packs_end = end / V;
  for (int64_t i = begin / V + first; i < packs_end; i += stride) {
    Pack<T, V> p = reinterpret_cast<const Pack<T, V>*>(param)[i];
    const Pack<T, V> g = reinterpret_cast<const Pack<T, V>*>(grad)[i];
    Pack<C, V> s[S] = {};
#pragma unroll
    for (int k = 0; k < S; k++)
      if (state[k]) s[k] = reinterpret_cast<const Pack<C, V>*>(state[k])[i];
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
    reinterpret_cast<Pack<T, V>*>(param)[i] = p;
#pragma unroll
    for (int k = 0; k < S; k++)
      if (state[k]) reinterpret_cast<Pack<C, V>*>(state[k])[i] = s[k];
  }
  for (int64_t i = packs_end * V + first; i < end; i += stride) {
    C e[S] = {};
#pragma unroll
    for (int k = 0; k < S; k++)
      if (state[k]) e[k] = state[k][i];
    C p = dconvert<C>(param[i]);
    step(p, dconvert<C>(grad[i]), e);
    param[i] = dconvert<T>(p);
#pragma unroll
    for (int k = 0; k < S; k++)
      if (state[k]) state[k][i] = e[k];
  }
}

// The element steps: the shared formulas of native/ops/optim.h with their coefficients.
template <typename C>
struct SgdStep {
  ops::SgdCoefs<C> c;
  bool decay, momentum, nesterov;
  __device__ __forceinline__ void operator()(C& p, C g, C (&s)[1]) const {
    p = ops::sgd_element(p, g, s[0], c, decay, momentum, nesterov);
  }
};

template <typename C>
struct AdamStep {
  ops::AdamCoefs<C> c;
  bool l2, amsgrad;
  __device__ __forceinline__ void operator()(C& p, C g, C (&s)[3]) const {
    p = ops::adam_element(p, g, s[0], s[1], s[2], c, l2, amsgrad);
  }
};

// ---------------------------------------------------------------------------------------------
// Multi-tensor updates (PyTorch's multi_tensor_apply): a launch takes up to kUpdateTensors parameters
// in a table passed by value (about 2 KiB with Adam's three states, well under the 4 KiB of kernel
// parameters every architecture takes), split into chunks of kUpdateChunk elements; block b updates
// chunk b - first_chunk[t] of the parameter t whose range of chunks holds b, with 16-byte vector
// accesses when all of that parameter's operands are aligned. A parameter never straddles two
// launches, so the launches a group needs are ceil(parameters / kUpdateTensors), whatever their sizes.
//
// What this saves for GPT-2 124M (148 parameter tensors, 124M elements, one group): one launch per
// parameter is 148 launches (and 148 calls from JavaScript, each with its checks), most of them tiny
// (the 98 LayerNorm and bias vectors of 768-3072 elements run a handful of blocks on a 132-SM GPU)
// and each separated by a few microseconds of launch gap, about 0.3-0.6 ms per step on a GPU against
// about 0.7 ms of memory traffic (22 bytes an element for bfloat16 parameters with float32 moments at
// ~4 TB/s). The multi-tensor step is ceil(148 / 32) = 5 launches from one call (6 from two calls with
// the usual decay / no-decay groups: 50 matrices and 98 vectors), every block a full 64Ki-element
// chunk but the last of each parameter, so the update runs at memory speed. Capturable Adam adds one
// single-block launch per table to advance the step counts (inside a CUDA graph launch gaps vanish).

constexpr int kUpdateTensors = 32;
constexpr int64_t kUpdateChunk = 1 << 16;

template <int S>
struct UpdateTable {
  void* param[kUpdateTensors];
  const void* grad[kUpdateTensors];
  void* state[S][kUpdateTensors];   // null for an absent optional state
  double* step[kUpdateTensors];     // capturable Adam: each parameter's step count; null otherwise
  int64_t numel[kUpdateTensors];
  int32_t first_chunk[kUpdateTensors + 1];
  bool vec[kUpdateTensors];
  int count;
};

static_assert(sizeof(UpdateTable<3>) + sizeof(ops::AdamOptions) + 64 <= 2560,
              "a launch's parameters (table and coefficients) stay well under the 4 KiB every architecture takes");

// Where the coefficients come from: the host, the same for every parameter...
template <typename Step>
struct HostCoefs {
  Step step;
  __device__ __forceinline__ Step at(const double*) const { return step; }
};

// ... or the device (capturable): the learning rate read from memory, and for Adam the bias
// corrections of each parameter's step count + 1.
template <typename C>
struct DeviceSgdCoefs {
  ops::SgdOptions o;
  Scalar lr;
  bool decay, momentum, nesterov;
  __device__ __forceinline__ SgdStep<C> at(const double*) const {
    return {ops::sgd_coefs<C>(lr.load(), o), decay, momentum, nesterov};
  }
};

template <typename C>
struct DeviceAdamCoefs {
  ops::AdamOptions o;
  Scalar lr;
  bool l2, amsgrad;
  __device__ __forceinline__ AdamStep<C> at(const double* step) const {
    double bc1, bc2_sqrt;
    ops::adam_bias_corrections(o.beta1, o.beta2, *step + 1, bc1, bc2_sqrt);
    return {ops::adam_coefs<C>(lr.load(), bc1, bc2_sqrt, o), l2, amsgrad};
  }
};

template <typename T, int S, typename Coefs>
__global__ void multi_update_kernel(UpdateTable<S> tab, Coefs coefs) {
  using C = compute_t<T>;
  int t = 0;
  while (int32_t(blockIdx.x) >= tab.first_chunk[t + 1]) t++;
  const int64_t begin = int64_t(int32_t(blockIdx.x) - tab.first_chunk[t]) * kUpdateChunk;
  const int64_t end = min(tab.numel[t], begin + kUpdateChunk);
  C* state[S];
#pragma unroll
  for (int k = 0; k < S; k++) state[k] = static_cast<C*>(tab.state[k][t]);
  const auto step = coefs.at(tab.step[t]);
  T* p = static_cast<T*>(tab.param[t]);
  const T* g = static_cast<const T*>(tab.grad[t]);
  if (tab.vec[t]) update_span<kVec<T>>(p, g, state, begin, end, threadIdx.x, blockDim.x, step);
  else update_span<1>(p, g, state, begin, end, threadIdx.x, blockDim.x, step);
}

// After a table's update (stream order): every parameter of it has taken its step.
template <int S>
__global__ void advance_steps(UpdateTable<S> tab) {
  if (int(threadIdx.x) < tab.count) *tab.step[threadIdx.x] += 1;
}

// Launches the update of every parameter, kUpdateTensors at a time. states: S lists, each one tensor
// per parameter or empty (absent); steps: one per parameter (advanced after the update) or empty.
template <typename T, int S, typename Coefs>
void launch_multi(const char* op, const TensorList& params, const TensorList& grads,
                  const std::array<const TensorList*, S>& states, const TensorList& steps, const Coefs& coefs) {
  using C = compute_t<T>;
  constexpr int V = kVec<T>;
  const Device d = params[0]->device();
  cudaStream_t s = stream(d);
  UpdateTable<S> tab{};
  auto flush = [&] {
    if (tab.count == 0) return;
    if (tab.first_chunk[tab.count] > 0) {
      multi_update_kernel<T><<<unsigned(tab.first_chunk[tab.count]), kThreads, 0, s>>>(tab, coefs);
      KILN_CUDA_LAUNCH_CHECK(op);
    }
    if (!steps.empty()) {
      advance_steps<<<1, kUpdateTensors, 0, s>>>(tab);
      KILN_CUDA_LAUNCH_CHECK(op);
    }
    tab = UpdateTable<S>{};
  };
  for (size_t i = 0; i < params.size(); i++) {
    const int c = tab.count;
    const int64_t n = params[i]->numel();
    tab.param[c] = params[i]->data<T>();
    tab.grad[c] = grads[i]->data<T>();
    bool vec = aligned(tab.param[c], alignof(Pack<T, V>)) && aligned(tab.grad[c], alignof(Pack<T, V>));
    for (int k = 0; k < S; k++) {
      tab.state[k][c] = states[k]->empty() ? nullptr : (*states[k])[i]->template data<C>();
      vec = vec && (!tab.state[k][c] || aligned(tab.state[k][c], alignof(Pack<C, V>)));
    }
    tab.step[c] = steps.empty() ? nullptr : steps[i]->data<double>();
    tab.numel[c] = n;
    tab.vec[c] = vec;
    const int64_t end = tab.first_chunk[c] + (n + kUpdateChunk - 1) / kUpdateChunk;
    KILN_CHECK(end <= INT32_MAX, Shape, op, "parameter ", i, " with ", n, " elements is too large");
    tab.first_chunk[c + 1] = int32_t(end);
    tab.count++;
    if (tab.count == kUpdateTensors) flush();
  }
  flush();
}

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

// One parameter takes the multi-tensor path (one launch of its chunks): one code path for every update.
void sgd_step(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, double lr, double momentum,
              double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step) {
  const char* op = "sgdStep";
  const ops::SgdOptions o = ops::check_sgd_step(param, grad, momentum_buf, lr, momentum, dampening, weight_decay,
                                                nesterov, maximize, first_step);
  if (param.numel() == 0) return;
  const TensorList bufs = momentum_buf ? TensorList{momentum_buf} : TensorList{};
  KILN_CUDA_DISPATCH_FLOATING(param.dtype, op, {
    using T = scalar_t;
    using C = compute_t<T>;
    const HostCoefs<SgdStep<C>> coefs{
        {ops::sgd_coefs<C>(o.lr, o), o.weight_decay != 0, momentum_buf != nullptr, o.nesterov}};
    launch_multi<T, 1>(op, {&param}, {&grad}, {&bufs}, {}, coefs);
  });
}

void adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
               const Tensor* max_exp_avg_sq, double lr, double beta1, double beta2, double eps, double weight_decay,
               double bias_correction1, double bias_correction2_sqrt, bool decoupled, bool maximize) {
  const char* op = "adamStep";
  const ops::AdamOptions o =
      ops::check_adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                           bias_correction1, bias_correction2_sqrt, decoupled, maximize);
  if (param.numel() == 0) return;
  const TensorList m{&exp_avg}, v{&exp_avg_sq}, vmax = max_exp_avg_sq ? TensorList{max_exp_avg_sq} : TensorList{};
  KILN_CUDA_DISPATCH_FLOATING(param.dtype, op, {
    using T = scalar_t;
    using C = compute_t<T>;
    const HostCoefs<AdamStep<C>> coefs{{ops::adam_coefs<C>(o.lr, o.bias_correction1, o.bias_correction2_sqrt, o),
                                        !o.decoupled && o.weight_decay != 0, max_exp_avg_sq != nullptr}};
    launch_multi<T, 3>(op, {&param}, {&grad}, {&m, &v, &vmax}, {}, coefs);
  });
}

void sgd_step_multi(const TensorList& params, const TensorList& grads, const TensorList& momentum_bufs,
                    const Tensor* lr_device, double lr, double momentum, double dampening, double weight_decay,
                    bool nesterov, bool maximize, bool first_step) {
  const char* op = "sgdStepMulti";
  const ops::SgdOptions o = ops::check_sgd_step_multi(params, grads, momentum_bufs, lr_device, lr, momentum, dampening,
                                                      weight_decay, nesterov, maximize, first_step);
  if (params.empty()) return;
  const bool decay = o.weight_decay != 0, has_momentum = !momentum_bufs.empty();
  KILN_CUDA_DISPATCH_FLOATING(params[0]->dtype, op, {
    using T = scalar_t;
    using C = compute_t<T>;
    if (lr_device) {
      const DeviceSgdCoefs<C> coefs{o, scalar_of(*lr_device), decay, has_momentum, o.nesterov};
      launch_multi<T, 1>(op, params, grads, {&momentum_bufs}, {}, coefs);
    } else {
      const HostCoefs<SgdStep<C>> coefs{{ops::sgd_coefs<C>(o.lr, o), decay, has_momentum, o.nesterov}};
      launch_multi<T, 1>(op, params, grads, {&momentum_bufs}, {}, coefs);
    }
  });
}

void adam_step_multi(const TensorList& params, const TensorList& grads, const TensorList& exp_avgs,
                     const TensorList& exp_avg_sqs, const TensorList& max_exp_avg_sqs, const TensorList& steps,
                     const Tensor* lr_device, double lr, double beta1, double beta2, double eps, double weight_decay,
                     double bias_correction1, double bias_correction2_sqrt, bool decoupled, bool maximize) {
  const char* op = "adamStepMulti";
  const ops::AdamOptions o = ops::check_adam_step_multi(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
                                                        lr_device, lr, beta1, beta2, eps, weight_decay,
                                                        bias_correction1, bias_correction2_sqrt, decoupled, maximize);
  if (params.empty()) return;
  const bool l2 = !o.decoupled && o.weight_decay != 0, amsgrad = !max_exp_avg_sqs.empty();
  KILN_CUDA_DISPATCH_FLOATING(params[0]->dtype, op, {
    using T = scalar_t;
    using C = compute_t<T>;
    const std::array<const TensorList*, 3> states{&exp_avgs, &exp_avg_sqs, &max_exp_avg_sqs};
    if (lr_device) {
      const DeviceAdamCoefs<C> coefs{o, scalar_of(*lr_device), l2, amsgrad};
      launch_multi<T, 3>(op, params, grads, states, steps, coefs);
    } else {
      const HostCoefs<AdamStep<C>> coefs{
          {ops::adam_coefs<C>(o.lr, o.bias_correction1, o.bias_correction2_sqrt, o), l2, amsgrad}};
      launch_multi<T, 3>(op, params, grads, states, steps, coefs);
    }
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
