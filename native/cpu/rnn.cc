// CPU recurrent cells (native/ops/rnn.h), forward and backward side by side: threads split the batch
// rows, each row is one pass over its hidden units with the shared gate formulas. Every operand is a
// contiguous row-major matrix (the checks insist), so rows are plain pointer offsets.
//
// The unit loops are written to vectorize (exp and tanh dominate a cell's time): the shared formulas
// use core/vmath.h's float32 exp and tanh on the host (libm's are calls, which keep a loop scalar),
// each row is a function with __restrict parameters run under run_simd, and optional operands become
// a row of zeros (outputs: a scratch row) so that no loop branches.
#include "../ops/rnn.h"
#include <algorithm>
#include <vector>
#include "../core/parallel.h"
#include "simd.h"

namespace kiln::cpu {

namespace {

constexpr int64_t kGrain = 16384;  // elements per parallel task, at least

// f(r) for every row r in [0, n), rows split across threads in chunks of about kGrain elements.
template <typename F>
void for_rows(int64_t n, int64_t row_elems, F f) {
  parallel_for(n, std::max<int64_t>(1, kGrain / std::max<int64_t>(row_elems, 1)), [&](int64_t b, int64_t e) {
    run_simd([&] {
      for (int64_t r = b; r < e; r++) f(r);
    });
  });
}

// An optional [n, H] operand's rows: row r of the tensor, or of H zeros when it is absent (shared by
// every row: inputs only read it).
template <typename T>
struct InRows {
  const T* base;
  int64_t step;
  std::vector<T> zeros;
  InRows(const Tensor* t, int64_t H) : base(t ? t->data<T>() : nullptr), step(t ? H : 0), zeros(t ? 0 : size_t(H)) {
    if (!t) base = zeros.data();
  }
  const T* row(int64_t r) const { return base + r * step; }
};

// An optional [n, H] output's rows: row r of the tensor, or a scratch row per row when it is absent
// (threads write different rows).
template <typename T>
struct OutRows {
  T* base;
  std::vector<T> scratch;
  OutRows(const Tensor* t, int64_t n, int64_t H) : base(t ? t->data<T>() : nullptr), scratch(t ? 0 : size_t(n * H)) {
    if (!t) base = scratch.data();
  }
  T* row(int64_t r, int64_t H) { return base + r * H; }
};


// One row of each kernel: H units. Pointer parameters, so that __restrict reaches the vectorizer
// through inlining.

template <typename T>
void rnn_forward_row(const T* __restrict x, const T* __restrict g, bool relu, T* __restrict h, int64_t H) {
  for (int64_t j = 0; j < H; j++) h[j] = ops::rnn_activation<T>(x[j] + g[j], relu);
}

template <typename T>
void rnn_backward_row(const T* __restrict dh, const T* __restrict dy, const T* __restrict h, bool relu,
                      T* __restrict dpre, int64_t H) {
  for (int64_t j = 0; j < H; j++) dpre[j] = (dh[j] + dy[j]) * ops::rnn_activation_grad(h[j], relu);
}

template <typename T>
void lstm_forward_row(const T* __restrict x, const T* __restrict g, const T* __restrict c_prev, T* __restrict h,
                      T* __restrict c, T* __restrict a, int64_t H) {
  for (int64_t j = 0; j < H; j++) {
    const auto u = ops::lstm_unit<T>(x[j] + g[j], x[H + j] + g[H + j], x[2 * H + j] + g[2 * H + j],
                                              x[3 * H + j] + g[3 * H + j], c_prev[j]);
    a[j] = u.i, a[H + j] = u.f, a[2 * H + j] = u.g, a[3 * H + j] = u.o;
    c[j] = u.c;
    h[j] = u.h;
  }
}

template <typename T>
void lstm_backward_row(const T* __restrict dh, const T* __restrict dy, const T* __restrict dc, const T* __restrict a,
                       const T* __restrict c_prev, const T* __restrict c, T* __restrict dg, T* __restrict dc_prev,
                       int64_t H) {
  for (int64_t j = 0; j < H; j++) {
    const auto u = ops::lstm_unit_grad<T>(dh[j] + dy[j], dc[j], a[j], a[H + j], a[2 * H + j], a[3 * H + j],
                                                   c_prev[j], c[j]);
    dg[j] = u.i, dg[H + j] = u.f, dg[2 * H + j] = u.g, dg[3 * H + j] = u.o;
    dc_prev[j] = u.c_prev;
  }
}

template <typename T>
void gru_forward_row(const T* __restrict x, const T* __restrict g, const T* __restrict h_prev, T* __restrict h,
                     T* __restrict a, int64_t H) {
  for (int64_t j = 0; j < H; j++) {
    const auto u = ops::gru_unit<T>(x[j], x[H + j], x[2 * H + j], g[j], g[H + j], g[2 * H + j], h_prev[j]);
    a[j] = u.r, a[H + j] = u.z, a[2 * H + j] = u.n, a[3 * H + j] = g[2 * H + j];
    h[j] = u.h;
  }
}

template <typename T>
void gru_backward_row(const T* __restrict dh, const T* __restrict dy, const T* __restrict a, const T* __restrict h_prev,
                      T* __restrict dx, T* __restrict dhg, T* __restrict dh_prev, int64_t H) {
  for (int64_t j = 0; j < H; j++) {
    const auto u = ops::gru_unit_grad<T>(dh[j] + dy[j], a[j], a[H + j], a[2 * H + j], a[3 * H + j], h_prev[j]);
    dx[j] = u.r, dhg[j] = u.r;
    dx[H + j] = u.z, dhg[H + j] = u.z;
    dx[2 * H + j] = u.xn;
    dhg[2 * H + j] = u.hn;
    dh_prev[j] = u.h_prev;
  }
}

}  // namespace

void rnn_cell_forward(const Tensor& xg, const Tensor& hg, bool relu, const Tensor& h) {
  const ops::CellDims d = ops::check_rnn_cell_forward(xg, hg, h);
  const int64_t H = d.H;
  KILN_DISPATCH_FLOAT(xg.dtype, "rnnCell", {
    using T = scalar_t;
    for_rows(d.n, H, [&](int64_t r) {
      rnn_forward_row(xg.data<T>() + r * H, hg.data<T>() + r * H, relu, h.data<T>() + r * H, H);
    });
  });
}

void rnn_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor& h, bool relu, const Tensor& dpre) {
  const ops::CellDims d = ops::check_rnn_cell_backward(dh, dy, h, dpre);
  const int64_t H = d.H;
  KILN_DISPATCH_FLOAT(h.dtype, "rnnCell backward", {
    using T = scalar_t;
    const InRows<T> dys(dy, H);
    for_rows(d.n, H, [&](int64_t r) {
      rnn_backward_row(dh.data<T>() + r * H, dys.row(r), h.data<T>() + r * H, relu, dpre.data<T>() + r * H, H);
    });
  });
}

void lstm_cell_forward(const Tensor& xg, const Tensor& hg, const Tensor& cPrev, const Tensor& h, const Tensor& c,
                       const Tensor& act) {
  const ops::CellDims d = ops::check_lstm_cell_forward(xg, hg, cPrev, h, c, act);
  const int64_t H = d.H;
  KILN_DISPATCH_FLOAT(xg.dtype, "lstmCell", {
    using T = scalar_t;
    for_rows(d.n, 4 * H, [&](int64_t r) {
      lstm_forward_row(xg.data<T>() + r * 4 * H, hg.data<T>() + r * 4 * H, cPrev.data<T>() + r * H,
                       h.data<T>() + r * H, c.data<T>() + r * H, act.data<T>() + r * 4 * H, H);
    });
  });
}

void lstm_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor* dc, const Tensor& act, const Tensor& cPrev,
                        const Tensor& c, const Tensor& dgates, const Tensor* dcPrev) {
  const ops::CellDims d = ops::check_lstm_cell_backward(dh, dy, dc, act, cPrev, c, dgates, dcPrev);
  const int64_t H = d.H;
  KILN_DISPATCH_FLOAT(act.dtype, "lstmCell backward", {
    using T = scalar_t;
    const InRows<T> dys(dy, H), dcs(dc, H);
    OutRows<T> dcps(dcPrev, d.n, H);
    for_rows(d.n, 4 * H, [&](int64_t r) {
      lstm_backward_row(dh.data<T>() + r * H, dys.row(r), dcs.row(r), act.data<T>() + r * 4 * H,
                        cPrev.data<T>() + r * H, c.data<T>() + r * H, dgates.data<T>() + r * 4 * H, dcps.row(r, H), H);
    });
  });
}

void gru_cell_forward(const Tensor& xg, const Tensor& hg, const Tensor& hPrev, const Tensor& h, const Tensor& act) {
  const ops::CellDims d = ops::check_gru_cell_forward(xg, hg, hPrev, h, act);
  const int64_t H = d.H;
  KILN_DISPATCH_FLOAT(xg.dtype, "gruCell", {
    using T = scalar_t;
    for_rows(d.n, 3 * H, [&](int64_t r) {
      gru_forward_row(xg.data<T>() + r * 3 * H, hg.data<T>() + r * 3 * H, hPrev.data<T>() + r * H,
                      h.data<T>() + r * H, act.data<T>() + r * 4 * H, H);
    });
  });
}

void gru_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor& act, const Tensor& hPrev, const Tensor& dxg,
                       const Tensor& dhg, const Tensor* dhPrev) {
  const ops::CellDims d = ops::check_gru_cell_backward(dh, dy, act, hPrev, dxg, dhg, dhPrev);
  const int64_t H = d.H;
  KILN_DISPATCH_FLOAT(act.dtype, "gruCell backward", {
    using T = scalar_t;
    const InRows<T> dys(dy, H);
    OutRows<T> dhps(dhPrev, d.n, H);
    for_rows(d.n, 4 * H, [&](int64_t r) {
      gru_backward_row(dh.data<T>() + r * H, dys.row(r), act.data<T>() + r * 4 * H, hPrev.data<T>() + r * H,
                       dxg.data<T>() + r * 3 * H, dhg.data<T>() + r * 3 * H, dhps.row(r, H), H);
    });
  });
}

}  // namespace kiln::cpu
