// CUDA recurrent cells (native/ops/rnn.h), twins of native/cpu/rnn.cc, forward and backward side by
// side. One thread per (row, hidden unit): a unit reads its gates' four (LSTM), three (GRU) or one
// (RNN) columns of its row and writes its outputs, so no thread depends on another and there is
// nothing to reduce: results are deterministic. A step's work is small (n * H units) and the step's
// matrix product dominates; the kernels only have to avoid extra passes over memory. bfloat16 is
// loaded into float and computed in float, like the CPU's float32.
#include "common.cuh"
#include "reduce.cuh"
#include "../ops/rnn.h"

namespace kiln::cuda {

namespace {

// f(r, j) for every unit (row r, hidden unit j) of an n x H cell, grid-stride.
template <typename F>
__device__ __forceinline__ void for_units(int64_t n, int64_t H, F f) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n * H; e += int64_t(gridDim.x) * blockDim.x)
    f(e / H, e % H);
}

// Element j of row r of an optional [n, H] operand, 0 when absent.
template <typename A, typename T>
__device__ __forceinline__ A opt(const T* p, int64_t r, int64_t H, int64_t j) {
  return p ? dconvert<A>(p[r * H + j]) : A(0);
}

template <typename T>
__global__ void rnn_forward_kernel(const T* __restrict__ xg, const T* __restrict__ hg, bool relu, T* __restrict__ h,
                                   int64_t n, int64_t H) {
  using A = acc_t<T>;
  for_units(n, H, [&](int64_t r, int64_t j) {
    const int64_t i = r * H + j;
    h[i] = dconvert<T>(ops::rnn_activation(dconvert<A>(xg[i]) + dconvert<A>(hg[i]), relu));
  });
}

template <typename T>
__global__ void rnn_backward_kernel(const T* __restrict__ dh, const T* __restrict__ dy, const T* __restrict__ h,
                                    bool relu, T* __restrict__ dpre, int64_t n, int64_t H) {
  using A = acc_t<T>;
  for_units(n, H, [&](int64_t r, int64_t j) {
    const int64_t i = r * H + j;
    const A g = dconvert<A>(dh[i]) + opt<A>(dy, r, H, j);
    dpre[i] = dconvert<T>(g * ops::rnn_activation_grad(dconvert<A>(h[i]), relu));
  });
}

template <typename T>
__global__ void lstm_forward_kernel(const T* __restrict__ xg, const T* __restrict__ hg, const T* __restrict__ c_prev,
                                    T* __restrict__ h, T* __restrict__ c, T* __restrict__ act, int64_t n, int64_t H) {
  using A = acc_t<T>;
  for_units(n, H, [&](int64_t r, int64_t j) {
    const int64_t g = r * 4 * H + j;  // gate i of unit j; f, g and o follow H apart
    auto pre = [&](int k) { return dconvert<A>(xg[g + k * H]) + dconvert<A>(hg[g + k * H]); };
    const auto u = ops::lstm_unit<A>(pre(0), pre(1), pre(2), pre(3), dconvert<A>(c_prev[r * H + j]));
    act[g] = dconvert<T>(u.i);
    act[g + H] = dconvert<T>(u.f);
    act[g + 2 * H] = dconvert<T>(u.g);
    act[g + 3 * H] = dconvert<T>(u.o);
    c[r * H + j] = dconvert<T>(u.c);
    h[r * H + j] = dconvert<T>(u.h);
  });
}

template <typename T>
__global__ void lstm_backward_kernel(const T* __restrict__ dh, const T* __restrict__ dy, const T* __restrict__ dc,
                                     const T* __restrict__ act, const T* __restrict__ c_prev, const T* __restrict__ c,
                                     T* __restrict__ dgates, T* __restrict__ dc_prev, int64_t n, int64_t H) {
  using A = acc_t<T>;
  for_units(n, H, [&](int64_t r, int64_t j) {
    const int64_t i = r * H + j, g = r * 4 * H + j;
    auto a = [&](int k) { return dconvert<A>(act[g + k * H]); };
    const auto u = ops::lstm_unit_grad<A>(dconvert<A>(dh[i]) + opt<A>(dy, r, H, j), opt<A>(dc, r, H, j), a(0), a(1),
                                          a(2), a(3), dconvert<A>(c_prev[i]), dconvert<A>(c[i]));
    dgates[g] = dconvert<T>(u.i);
    dgates[g + H] = dconvert<T>(u.f);
    dgates[g + 2 * H] = dconvert<T>(u.g);
    dgates[g + 3 * H] = dconvert<T>(u.o);
    if (dc_prev) dc_prev[i] = dconvert<T>(u.c_prev);
  });
}

template <typename T>
__global__ void gru_forward_kernel(const T* __restrict__ xg, const T* __restrict__ hg, const T* __restrict__ h_prev,
                                   T* __restrict__ h, T* __restrict__ act, int64_t n, int64_t H) {
  using A = acc_t<T>;
  for_units(n, H, [&](int64_t r, int64_t j) {
    const int64_t g = r * 3 * H + j, a = r * 4 * H + j;
    auto x = [&](int k) { return dconvert<A>(xg[g + k * H]); };
    auto hh = [&](int k) { return dconvert<A>(hg[g + k * H]); };
    const auto u = ops::gru_unit<A>(x(0), x(1), x(2), hh(0), hh(1), hh(2), dconvert<A>(h_prev[r * H + j]));
    act[a] = dconvert<T>(u.r);
    act[a + H] = dconvert<T>(u.z);
    act[a + 2 * H] = dconvert<T>(u.n);
    act[a + 3 * H] = hg[g + 2 * H];
    h[r * H + j] = dconvert<T>(u.h);
  });
}

template <typename T>
__global__ void gru_backward_kernel(const T* __restrict__ dh, const T* __restrict__ dy, const T* __restrict__ act,
                                    const T* __restrict__ h_prev, T* __restrict__ dxg, T* __restrict__ dhg,
                                    T* __restrict__ dh_prev, int64_t n, int64_t H) {
  using A = acc_t<T>;
  for_units(n, H, [&](int64_t r, int64_t j) {
    const int64_t i = r * H + j, g = r * 3 * H + j, a = r * 4 * H + j;
    auto s = [&](int k) { return dconvert<A>(act[a + k * H]); };
    const auto u = ops::gru_unit_grad<A>(dconvert<A>(dh[i]) + opt<A>(dy, r, H, j), s(0), s(1), s(2), s(3),
                                         dconvert<A>(h_prev[i]));
    dxg[g] = dhg[g] = dconvert<T>(u.r);
    dxg[g + H] = dhg[g + H] = dconvert<T>(u.z);
    dxg[g + 2 * H] = dconvert<T>(u.xn);
    dhg[g + 2 * H] = dconvert<T>(u.hn);
    if (dh_prev) dh_prev[i] = dconvert<T>(u.h_prev);
  });
}

// The data of an optional operand (null stays null).
template <typename T>
T* data_or_null(const Tensor* t) {
  return t ? t->data<T>() : nullptr;
}

// Launches kernel over the n x H units of a cell on dev's stream (nothing when the cell is empty).
template <typename K, typename... Args>
void launch(const char* op, const Tensor& any, ops::CellDims d, K kernel, Args... args) {
  if (d.n * d.H == 0) return;
  const Device dev = any.device();
  kernel<<<grid_for(d.n * d.H, dev), kThreads, 0, stream(dev)>>>(args..., d.n, d.H);
  KILN_CUDA_LAUNCH_CHECK(op);
}

}  // namespace

void rnn_cell_forward(const Tensor& xg, const Tensor& hg, bool relu, const Tensor& h) {
  const char* op = "rnnCell";
  const ops::CellDims d = ops::check_rnn_cell_forward(xg, hg, h);
  KILN_CUDA_DISPATCH_FLOAT(xg.dtype, op, {
    using T = scalar_t;
    launch(op, xg, d, rnn_forward_kernel<T>, xg.data<T>(), hg.data<T>(), relu, h.data<T>());
  });
}

void rnn_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor& h, bool relu, const Tensor& dpre) {
  const char* op = "rnnCell backward";
  const ops::CellDims d = ops::check_rnn_cell_backward(dh, dy, h, dpre);
  KILN_CUDA_DISPATCH_FLOAT(h.dtype, op, {
    using T = scalar_t;
    launch(op, h, d, rnn_backward_kernel<T>, dh.data<T>(), data_or_null<T>(dy), h.data<T>(), relu, dpre.data<T>());
  });
}

void lstm_cell_forward(const Tensor& xg, const Tensor& hg, const Tensor& cPrev, const Tensor& h, const Tensor& c,
                       const Tensor& act) {
  const char* op = "lstmCell";
  const ops::CellDims d = ops::check_lstm_cell_forward(xg, hg, cPrev, h, c, act);
  KILN_CUDA_DISPATCH_FLOAT(xg.dtype, op, {
    using T = scalar_t;
    launch(op, xg, d, lstm_forward_kernel<T>, xg.data<T>(), hg.data<T>(), cPrev.data<T>(), h.data<T>(), c.data<T>(),
           act.data<T>());
  });
}

void lstm_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor* dc, const Tensor& act, const Tensor& cPrev,
                        const Tensor& c, const Tensor& dgates, const Tensor* dcPrev) {
  const char* op = "lstmCell backward";
  const ops::CellDims d = ops::check_lstm_cell_backward(dh, dy, dc, act, cPrev, c, dgates, dcPrev);
  KILN_CUDA_DISPATCH_FLOAT(act.dtype, op, {
    using T = scalar_t;
    launch(op, act, d, lstm_backward_kernel<T>, dh.data<T>(), data_or_null<T>(dy), data_or_null<T>(dc),
           act.data<T>(), cPrev.data<T>(), c.data<T>(), dgates.data<T>(), data_or_null<T>(dcPrev));
  });
}

void gru_cell_forward(const Tensor& xg, const Tensor& hg, const Tensor& hPrev, const Tensor& h, const Tensor& act) {
  const char* op = "gruCell";
  const ops::CellDims d = ops::check_gru_cell_forward(xg, hg, hPrev, h, act);
  KILN_CUDA_DISPATCH_FLOAT(xg.dtype, op, {
    using T = scalar_t;
    launch(op, xg, d, gru_forward_kernel<T>, xg.data<T>(), hg.data<T>(), hPrev.data<T>(), h.data<T>(),
           act.data<T>());
  });
}

void gru_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor& act, const Tensor& hPrev, const Tensor& dxg,
                       const Tensor& dhg, const Tensor* dhPrev) {
  const char* op = "gruCell backward";
  const ops::CellDims d = ops::check_gru_cell_backward(dh, dy, act, hPrev, dxg, dhg, dhPrev);
  KILN_CUDA_DISPATCH_FLOAT(act.dtype, op, {
    using T = scalar_t;
    launch(op, act, d, gru_backward_kernel<T>, dh.data<T>(), data_or_null<T>(dy), act.data<T>(), hPrev.data<T>(),
           dxg.data<T>(), dhg.data<T>(), data_or_null<T>(dhPrev));
  });
}

}  // namespace kiln::cuda
