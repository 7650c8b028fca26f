// CPU recurrent cells (native/ops/rnn.h), forward and backward side by side: threads split the batch
// rows, each row is one pass over its hidden units with the shared gate formulas. Every operand is a
// contiguous row-major matrix (the checks insist), so rows are plain pointer offsets.
#include "../ops/rnn.h"
#include <algorithm>
#include "../core/parallel.h"

namespace kiln::cpu {

namespace {

constexpr int64_t kGrain = 16384;  // elements per parallel task, at least

// f(r) for every row r in [0, n), rows split across threads in chunks of about kGrain elements.
template <typename F>
void for_rows(int64_t n, int64_t row_elems, F f) {
  parallel_for(n, std::max<int64_t>(1, kGrain / std::max<int64_t>(row_elems, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) f(r);
  });
}

// Row r of an optional operand (null stays null).
template <typename T>
const T* row_or_null(const Tensor* t, int64_t r, int64_t width) {
  return t ? t->data<T>() + r * width : nullptr;
}

}  // namespace

void rnn_cell_forward(const Tensor& xg, const Tensor& hg, bool relu, const Tensor& h) {
  const ops::CellDims d = ops::check_rnn_cell_forward(xg, hg, h);
  const int64_t H = d.H;
  KILN_DISPATCH_FLOAT(xg.dtype, "rnnCell", {
    using T = scalar_t;
    for_rows(d.n, H, [&](int64_t r) {
      const T* x = xg.data<T>() + r * H;
      const T* g = hg.data<T>() + r * H;
      T* out = h.data<T>() + r * H;
      for (int64_t j = 0; j < H; j++) out[j] = ops::rnn_activation(x[j] + g[j], relu);
    });
  });
}

void rnn_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor& h, bool relu, const Tensor& dpre) {
  const ops::CellDims d = ops::check_rnn_cell_backward(dh, dy, h, dpre);
  const int64_t H = d.H;
  KILN_DISPATCH_FLOAT(h.dtype, "rnnCell backward", {
    using T = scalar_t;
    for_rows(d.n, H, [&](int64_t r) {
      const T* g = dh.data<T>() + r * H;
      const T* gy = row_or_null<T>(dy, r, H);
      const T* y = h.data<T>() + r * H;
      T* out = dpre.data<T>() + r * H;
      for (int64_t j = 0; j < H; j++) out[j] = (g[j] + (gy ? gy[j] : T(0))) * ops::rnn_activation_grad(y[j], relu);
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
      const T* x = xg.data<T>() + r * 4 * H;
      const T* g = hg.data<T>() + r * 4 * H;
      const T* cp = cPrev.data<T>() + r * H;
      T *ho = h.data<T>() + r * H, *co = c.data<T>() + r * H, *a = act.data<T>() + r * 4 * H;
      for (int64_t j = 0; j < H; j++) {
        const auto u = ops::lstm_unit<T>(x[j] + g[j], x[H + j] + g[H + j], x[2 * H + j] + g[2 * H + j],
                                         x[3 * H + j] + g[3 * H + j], cp[j]);
        a[j] = u.i, a[H + j] = u.f, a[2 * H + j] = u.g, a[3 * H + j] = u.o;
        co[j] = u.c;
        ho[j] = u.h;
      }
    });
  });
}

void lstm_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor* dc, const Tensor& act, const Tensor& cPrev,
                        const Tensor& c, const Tensor& dgates, const Tensor* dcPrev) {
  const ops::CellDims d = ops::check_lstm_cell_backward(dh, dy, dc, act, cPrev, c, dgates, dcPrev);
  const int64_t H = d.H;
  KILN_DISPATCH_FLOAT(act.dtype, "lstmCell backward", {
    using T = scalar_t;
    for_rows(d.n, 4 * H, [&](int64_t r) {
      const T* g = dh.data<T>() + r * H;
      const T* gy = row_or_null<T>(dy, r, H);
      const T* gc = row_or_null<T>(dc, r, H);
      const T* a = act.data<T>() + r * 4 * H;
      const T *cp = cPrev.data<T>() + r * H, *cn = c.data<T>() + r * H;
      T* dg = dgates.data<T>() + r * 4 * H;
      T* dcp = dcPrev ? dcPrev->data<T>() + r * H : nullptr;
      for (int64_t j = 0; j < H; j++) {
        const auto u = ops::lstm_unit_grad<T>(g[j] + (gy ? gy[j] : T(0)), gc ? gc[j] : T(0), a[j], a[H + j],
                                              a[2 * H + j], a[3 * H + j], cp[j], cn[j]);
        dg[j] = u.i, dg[H + j] = u.f, dg[2 * H + j] = u.g, dg[3 * H + j] = u.o;
        if (dcp) dcp[j] = u.c_prev;
      }
    });
  });
}

void gru_cell_forward(const Tensor& xg, const Tensor& hg, const Tensor& hPrev, const Tensor& h, const Tensor& act) {
  const ops::CellDims d = ops::check_gru_cell_forward(xg, hg, hPrev, h, act);
  const int64_t H = d.H;
  KILN_DISPATCH_FLOAT(xg.dtype, "gruCell", {
    using T = scalar_t;
    for_rows(d.n, 3 * H, [&](int64_t r) {
      const T* x = xg.data<T>() + r * 3 * H;
      const T* g = hg.data<T>() + r * 3 * H;
      const T* hp = hPrev.data<T>() + r * H;
      T *ho = h.data<T>() + r * H, *a = act.data<T>() + r * 4 * H;
      for (int64_t j = 0; j < H; j++) {
        const auto u = ops::gru_unit<T>(x[j], x[H + j], x[2 * H + j], g[j], g[H + j], g[2 * H + j], hp[j]);
        a[j] = u.r, a[H + j] = u.z, a[2 * H + j] = u.n, a[3 * H + j] = g[2 * H + j];
        ho[j] = u.h;
      }
    });
  });
}

void gru_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor& act, const Tensor& hPrev, const Tensor& dxg,
                       const Tensor& dhg, const Tensor* dhPrev) {
  const ops::CellDims d = ops::check_gru_cell_backward(dh, dy, act, hPrev, dxg, dhg, dhPrev);
  const int64_t H = d.H;
  KILN_DISPATCH_FLOAT(act.dtype, "gruCell backward", {
    using T = scalar_t;
    for_rows(d.n, 4 * H, [&](int64_t r) {
      const T* g = dh.data<T>() + r * H;
      const T* gy = row_or_null<T>(dy, r, H);
      const T* a = act.data<T>() + r * 4 * H;
      const T* hp = hPrev.data<T>() + r * H;
      T *dx = dxg.data<T>() + r * 3 * H, *dhh = dhg.data<T>() + r * 3 * H;
      T* dhp = dhPrev ? dhPrev->data<T>() + r * H : nullptr;
      for (int64_t j = 0; j < H; j++) {
        const auto u = ops::gru_unit_grad<T>(g[j] + (gy ? gy[j] : T(0)), a[j], a[H + j], a[2 * H + j], a[3 * H + j],
                                             hp[j]);
        dx[j] = dhh[j] = u.r;
        dx[H + j] = dhh[H + j] = u.z;
        dx[2 * H + j] = u.xn;
        dhh[2 * H + j] = u.hn;
        if (dhp) dhp[j] = u.h_prev;
      }
    });
  });
}

}  // namespace kiln::cpu
