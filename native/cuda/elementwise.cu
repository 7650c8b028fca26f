// CUDA elementwise kernels, twins of native/cpu/elementwise.cc. One kernel template serves every
// arity: the op's formula (the shared host/device functors of native/ops/elementwise.h) is a template
// parameter, so each op and dtype gets its own instantiation and no per-element switch. Two paths:
// when every operand is one dense run (or a broadcast value) and aligned, 16-byte vector loads and
// stores; otherwise a grid-stride loop with strided offsets (32-bit index math when it fits).
#include <utility>
#include "common.cuh"
#include "elementwise.cuh"

namespace kiln::cuda {

using ops::BinaryOp;
using ops::UnaryOp;
using ops::compute_t;
namespace ew = ops::ew;

namespace {

// An operand: a strided tensor, or (p null) one value standing for every element. `inner` is its
// stride on the vector path: 1 (dense) or 0 (broadcast).
template <typename T>
struct Arg {
  const T* p;
  T v;
  int64_t inner;
  __device__ __forceinline__ T at(int64_t off) const { return p ? p[off] : v; }
};

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T x[V];
};

template <int V, typename T>
__device__ __forceinline__ Pack<T, V> load_pack(const Arg<T>& a, int64_t i) {
  if (a.p && a.inner) return *reinterpret_cast<const Pack<T, V>*>(a.p + i);
  Pack<T, V> r;
  const T v = a.p ? a.p[0] : a.v;
#pragma unroll
  for (int j = 0; j < V; j++) r.x[j] = v;
  return r;
}

template <int V, typename O, typename Fn, typename... A>
__device__ __forceinline__ void apply_pack(O* out, int64_t i, const Fn& f, const Pack<A, V>&... in) {
  Pack<O, V> r;
#pragma unroll
  for (int j = 0; j < V; j++) r.x[j] = f(in.x[j]...);
  *reinterpret_cast<Pack<O, V>*>(out + i) = r;
}

// Operand offsets of element i; 32-bit division when the index fits (the offsets stay 64-bit).
template <int N>
__device__ __forceinline__ void offsets(const StridedMeta<N>& m, int64_t i, int64_t (&off)[N]) {
  if (m.numel > int64_t(UINT32_MAX)) return m.offsets(i, off);
#pragma unroll
  for (int k = 0; k < N; k++) off[k] = 0;
  uint32_t r = uint32_t(i);
  for (int d = m.ndim - 1; d >= 0; d--) {
    const uint32_t s = uint32_t(m.sizes[d]);
    const uint32_t idx = r % s;
    r /= s;
#pragma unroll
    for (int k = 0; k < N; k++) off[k] += int64_t(idx) * m.strides[k][d];
  }
}

template <typename O, typename Fn, typename... A, size_t... K>
__device__ __forceinline__ void apply_at(O* out, const int64_t* off, const Fn& f, std::index_sequence<K...>,
                                         const Arg<A>&... in) {
  out[off[0]] = f(in.at(off[K + 1])...);
}

template <typename... A>
constexpr int pack_width(size_t out_size) {
  size_t m = out_size;
  ((m = sizeof(A) > m ? sizeof(A) : m), ...);
  return int(16 / m);
}

// out = f(in...) over out's elements. `vec`: one dense run, aligned for Pack<_, V> (host-checked).
template <int V, typename O, typename Fn, typename... A>
__global__ void __launch_bounds__(kThreads) ew_kernel(O* __restrict__ out, StridedMeta<1 + sizeof...(A)> m, bool vec,
                                                      Fn f, Arg<A>... in) {
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, step = int64_t(gridDim.x) * blockDim.x;
  if (vec) {
    const int64_t nv = m.numel / V;
    for (int64_t v = tid; v < nv; v += step) apply_pack<V>(out, v * V, f, load_pack<V>(in, v * V)...);
    for (int64_t i = nv * V + tid; i < m.numel; i += step) out[i] = f(in.at(i * in.inner)...);
    return;
  }
  for (int64_t i = tid; i < m.numel; i += step) {
    int64_t off[1 + sizeof...(A)];
    offsets(m, i, off);
    apply_at(out, off, f, std::index_sequence_for<A...>{}, in...);
  }
}

template <typename O, typename Fn, typename... A>
void launch(const char* name, const Tensor& out, const std::array<const Shape*, 1 + sizeof...(A)>& strides, Fn f,
            Arg<A>... in) {
  constexpr int N = 1 + sizeof...(A);
  constexpr int V = pack_width<A...>(sizeof(O));
  const int64_t n = out.numel();
  if (n == 0) return;
  const Device d = out.device();
  StridedMeta<N> m = make_meta<N>(name, out.shape, strides);
  auto aligned = [](const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; };
  bool vec = m.ndim == 1 && m.strides[0][0] == 1 && aligned(out.data_ptr(), sizeof(O) * V);
  int k = 1;
  auto fit = [&](auto& a) {
    using T = std::remove_reference_t<decltype(*a.p)>;
    const int64_t st = m.strides[k++][0];
    a.inner = st;
    vec = vec && (!a.p || st == 0 || (st == 1 && aligned(a.p, sizeof(T) * V)));
  };
  (fit(in), ...);
  const int64_t work = vec ? (n + V - 1) / V : n;
  ew_kernel<V, O, Fn, A...><<<grid_for(work, d), kThreads, 0, stream(d)>>>(out.data<O>(), m, vec, f, in...);
  KILN_CUDA_LAUNCH_CHECK(name);
}

// A scalar parameter as C; integers refuse values they cannot hold (as the CPU kernels do).
template <typename C>
C scalar_as(double v, const char* name) {
  ew::check_scalar_fits<C>(v, name);
  return dconvert<C, double>(v);
}

template <typename T, typename F>
using result_t = std::conditional_t<F::result == ew::Result::BOOL, uint8_t, T>;

// The formulas, fed and stored in storage types, computing in compute_t.
template <typename F, typename T>
struct UnaryCall {
  using C = compute_t<T>;
  C s0, s1;
  __device__ __forceinline__ result_t<T, F> operator()(T x) const {
    return dconvert<result_t<T, F>>(F()(dconvert<C>(x), s0, s1));
  }
};

template <typename F, typename T>
struct BinaryCall {
  using C = compute_t<T>;
  C s0, s1;
  __device__ __forceinline__ result_t<T, F> operator()(T a, T b) const {
    return dconvert<result_t<T, F>>(F()(dconvert<C>(a), dconvert<C>(b), s0, s1));
  }
};

struct WhereCall {
  template <typename T>
  __device__ __forceinline__ T operator()(uint8_t c, T a, T b) const { return c ? a : b; }
};

}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out, double s0, double s1) {
  const char* name = ops::unary_op_name(op);
  ops::check_unary(op, x, out);
  ew::with_formula(op, name, [&](auto f) {
    using F = decltype(f);
    dispatch<F::dtypes>(x.dtype, name, [&](auto tag) {
      using T = T_of<decltype(tag)>;
      using C = compute_t<T>;
      launch<result_t<T, F>>(name, out, {&out.strides, &x.strides},
                             UnaryCall<F, T>{scalar_as<C>(s0, name), scalar_as<C>(s1, name)},
                             Arg<T>{x.data<T>(), T{}, 0});
    });
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double s0, double s1) {
  const char* name = ops::binary_op_name(op);
  ops::check_binary(op, a, b, out);
  ew::with_formula(op, name, [&](auto f) {
    using F = decltype(f);
    dispatch<F::dtypes>(a.dtype, name, [&](auto tag) {
      using T = T_of<decltype(tag)>;
      using C = compute_t<T>;
      launch<result_t<T, F>>(name, out, {&out.strides, &a.strides, &b.strides},
                             BinaryCall<F, T>{scalar_as<C>(s0, name), scalar_as<C>(s1, name)},
                             Arg<T>{a.data<T>(), T{}, 0}, Arg<T>{b.data<T>(), T{}, 0});
    });
  });
}

void where(const Tensor& cond, const Tensor* a, const Tensor* b, double sa, double sb, const Tensor& out) {
  const char* name = "where";
  ops::check_where(cond, a, b, out);
  // A missing value operand is a scalar walked with stride 0.
  const Shape zero(out.shape.size(), 0);
  dispatch<ew::DTypes::ANY>(out.dtype, name, [&](auto tag) {
    using T = T_of<decltype(tag)>;
    launch<T>(name, out, {&out.strides, &cond.strides, a ? &a->strides : &zero, b ? &b->strides : &zero}, WhereCall{},
              Arg<uint8_t>{cond.data<uint8_t>(), 0, 0},
              Arg<T>{a ? a->data<T>() : nullptr, scalar_as<T>(sa, name), 0},
              Arg<T>{b ? b->data<T>() : nullptr, scalar_as<T>(sb, name), 0});
  });
}

}  // namespace kiln::cuda
