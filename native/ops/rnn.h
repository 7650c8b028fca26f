// The recurrent family's contract, shared by both backends: the fused cell kernels of nn.RNN, nn.LSTM
// and nn.GRU (one time step each, forward and backward), the dtypes each backend takes, the argument
// checks, and the per-element gate formulas both the C++ and the CUDA kernels compute with.
//
// A step's matrix products are not part of a cell: lib/ops/rnn.ts computes xg = x W_ih^T (+ biases)
// for every time step of a layer in one product and hg = h W_hh^T per step, and passes both here. All
// tensors are contiguous [n, width] rows (n batch rows, hidden size H); gate blocks are laid out in
// PyTorch's order along the row (LSTM: i, f, g, o; GRU: r, z, n).
#pragma once
#include "../core/host_device.h"
#include "../core/tensor.h"
#include "elementwise.h"

namespace kiln::ops {

// rnnCellForward: h = act(xg + hg), act = relu when `relu`, else tanh. xg, hg, h: [n, H].
using RnnCellForward = void(const Tensor& xg, const Tensor& hg, bool relu, const Tensor& h);
// rnnCellBackward: dpre = (dh + dy) * act'(pre), from the output h (dy may be null: zero).
using RnnCellBackward = void(const Tensor& dh, const Tensor* dy, const Tensor& h, bool relu, const Tensor& dpre);

// lstmCellForward: gates = xg + hg [n, 4H]; i, f, o = sigmoid, g = tanh of their blocks;
// c = f * cPrev + i * g, h = o * tanh(c). act [n, 4H] saves (i, f, g, o) for the backward.
using LstmCellForward = void(const Tensor& xg, const Tensor& hg, const Tensor& cPrev, const Tensor& h,
                             const Tensor& c, const Tensor& act);
// lstmCellBackward: from the gradients of h (dh + dy, dy may be null) and of c (dc, may be null),
// writes the gradient of the gates (the same for xg and hg) and of cPrev (dcPrev may be null).
using LstmCellBackward = void(const Tensor& dh, const Tensor* dy, const Tensor* dc, const Tensor& act,
                              const Tensor& cPrev, const Tensor& c, const Tensor& dgates, const Tensor* dcPrev);

// gruCellForward: r = sigmoid(xg_r + hg_r), z = sigmoid(xg_z + hg_z), n = tanh(xg_n + r * hg_n),
// h = (1 - z) * n + z * hPrev. xg = x W_ih^T + b_ih and hg = hPrev W_hh^T + b_hh [n, 3H] stay apart:
// r multiplies the hidden side of n only (PyTorch's GRU). act [n, 4H] saves (r, z, n, hg_n).
using GruCellForward = void(const Tensor& xg, const Tensor& hg, const Tensor& hPrev, const Tensor& h,
                            const Tensor& act);
// gruCellBackward: from the gradient of h (dh + dy, dy may be null) writes the gradients of xg and hg
// [n, 3H] and the part of hPrev's that does not pass through hg (dhPrev = (dh + dy) * z; may be null).
using GruCellBackward = void(const Tensor& dh, const Tensor* dy, const Tensor& act, const Tensor& hPrev,
                             const Tensor& dxg, const Tensor& dhg, const Tensor* dhPrev);

// What each backend computes natively (lib/ runs other floating dtypes through float32). CUDA's
// bfloat16 kernels do their arithmetic in float32.
inline constexpr DTypeSet kRnnCpuDTypes = kFloat32And64;
inline constexpr DTypeSet kRnnCudaDTypes{DType::Float32, DType::Float64, DType::BFloat16};

// A cell's size: n rows of hidden size H.
struct CellDims {
  int64_t n, H;
};
// Every check of each kernel (shapes, dtypes, contiguity of inputs, outputs and saved activations);
// returns the cell's size.
CellDims check_rnn_cell_forward(const Tensor& xg, const Tensor& hg, const Tensor& h);
CellDims check_rnn_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor& h, const Tensor& dpre);
CellDims check_lstm_cell_forward(const Tensor& xg, const Tensor& hg, const Tensor& cPrev, const Tensor& h,
                                 const Tensor& c, const Tensor& act);
CellDims check_lstm_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor* dc, const Tensor& act,
                                  const Tensor& cPrev, const Tensor& c, const Tensor& dgates, const Tensor* dcPrev);
CellDims check_gru_cell_forward(const Tensor& xg, const Tensor& hg, const Tensor& hPrev, const Tensor& h,
                                const Tensor& act);
CellDims check_gru_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor& act, const Tensor& hPrev,
                                 const Tensor& dxg, const Tensor& dhg, const Tensor* dhPrev);

// ---- per-element formulas, in the compute type A (float for bfloat16) ----
//
// sigmoid, exp and tanh are the elementwise family's: on the host float32 versions the compiler
// vectorizes, on the device the CUDA math library. sigmoid(-large) is 1 / inf = 0, never NaN.

template <typename A>
KILN_HOST_DEVICE A rnn_activation(A pre, bool relu) {
  return relu ? (pre > A(0) ? pre : A(0)) : ew::tanh(pre);
}
// The activation's derivative from its output y (tanh' = 1 - y^2; relu' = 1 where y > 0).
template <typename A>
KILN_HOST_DEVICE A rnn_activation_grad(A y, bool relu) {
  return relu ? A(y > A(0)) : A(1) - y * y;
}

// One LSTM unit: gate pre-activations in, activations and new state out.
template <typename A>
struct LstmUnit {
  A i, f, g, o, c, h;
};
template <typename A>
KILN_HOST_DEVICE LstmUnit<A> lstm_unit(A pi, A pf, A pg, A po, A c_prev) {
  LstmUnit<A> u;
  u.i = ew::sigmoid(pi);
  u.f = ew::sigmoid(pf);
  u.g = ew::tanh(pg);
  u.o = ew::sigmoid(po);
  u.c = u.f * c_prev + u.i * u.g;
  u.h = u.o * ew::tanh(u.c);
  return u;
}
// Gradients of one LSTM unit's gate pre-activations and of c_prev, from those of h and c.
template <typename A>
struct LstmUnitGrad {
  A i, f, g, o, c_prev;
};
template <typename A>
KILN_HOST_DEVICE LstmUnitGrad<A> lstm_unit_grad(A dh, A dc, A i, A f, A g, A o, A c_prev, A c) {
  const A tc = ew::tanh(c);
  const A dct = dc + dh * o * (A(1) - tc * tc);  // c reaches the loss directly and through h
  LstmUnitGrad<A> d;
  d.i = dct * g * i * (A(1) - i);
  d.f = dct * c_prev * f * (A(1) - f);
  d.g = dct * i * (A(1) - g * g);
  d.o = dh * tc * o * (A(1) - o);
  d.c_prev = dct * f;
  return d;
}

// One GRU unit: the x-side and h-side pre-activations of r, z, n in, activations and new h out.
template <typename A>
struct GruUnit {
  A r, z, n, h;
};
template <typename A>
KILN_HOST_DEVICE GruUnit<A> gru_unit(A xr, A xz, A xn, A hr, A hz, A hn, A h_prev) {
  GruUnit<A> u;
  u.r = ew::sigmoid(xr + hr);
  u.z = ew::sigmoid(xz + hz);
  u.n = ew::tanh(xn + u.r * hn);
  u.h = (A(1) - u.z) * u.n + u.z * h_prev;
  return u;
}
// Gradients of one GRU unit's pre-activations (r and z: the same for both sides; n: x side xn, h
// side hn) and of h_prev's direct path, from that of h.
template <typename A>
struct GruUnitGrad {
  A r, z, xn, hn, h_prev;
};
template <typename A>
KILN_HOST_DEVICE GruUnitGrad<A> gru_unit_grad(A dh, A r, A z, A n, A hn, A h_prev) {
  const A dn = dh * (A(1) - z) * (A(1) - n * n);
  GruUnitGrad<A> d;
  d.xn = dn;
  d.hn = dn * r;
  d.r = dn * hn * r * (A(1) - r);
  d.z = dh * (h_prev - n) * z * (A(1) - z);
  d.h_prev = dh * z;
  return d;
}

}  // namespace kiln::ops

namespace kiln::cpu {
ops::RnnCellForward rnn_cell_forward;
ops::RnnCellBackward rnn_cell_backward;
ops::LstmCellForward lstm_cell_forward;
ops::LstmCellBackward lstm_cell_backward;
ops::GruCellForward gru_cell_forward;
ops::GruCellBackward gru_cell_backward;
}  // namespace kiln::cpu

namespace kiln::cuda {
ops::RnnCellForward rnn_cell_forward;
ops::RnnCellBackward rnn_cell_backward;
ops::LstmCellForward lstm_cell_forward;
ops::LstmCellBackward lstm_cell_backward;
ops::GruCellForward gru_cell_forward;
ops::GruCellBackward gru_cell_backward;
}  // namespace kiln::cuda
