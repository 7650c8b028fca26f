// CPU softmax family (the contract is native/ops/softmax.h): softmax / log-softmax along any dim
// and cross-entropy fused with log-softmax, forward and backward side by side.
//
// Every kernel is a reduction along one dim ("rows" of length D at stride sd) repeated over the
// other dims, one row per index of those. The other dims are merged where all operands allow
// (plan_strided); neighbouring rows along the last merged dim sit at a uniform stride sc, the rest
// are found by index arithmetic, so transposed, sliced or broadcast operands need no copy. Rows
// that are contiguous in every operand walked along them (the usual case: the last dim) run the
// *_row kernels: plain loops over the row in blocks, vectorized (run_simd, vm::exp), sums in float
// lanes folded into double per block. Otherwise a tile of up to kTile neighbouring rows is processed
// together (*_tile), so the inner loop walks memory contiguously instead of jumping by the dim's
// stride; those sums accumulate in double.
#include "../ops/softmax.h"
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>
#include "../core/strided.h"
#include "../core/vmath.h"
#include "simd.h"

namespace kiln::cpu {

using ops::Reduction;
using ops::with_class_dim;

namespace {

constexpr int64_t kTile = 64;       // rows processed together when the reduced dim is strided
constexpr int64_t kGrain = 16384;   // elements per parallel task, at least
constexpr int64_t kBlock = 1024;    // elements of a row handled per block by the *_row kernels

// A reduction along one dim of N operands of the same shape.
template <size_t N>
struct DimPlan {
  int64_t D = 1;                  // size of the reduced dim
  std::array<int64_t, N> sd{};    // each operand's stride along it
  StridedPlan<N> rest;            // the other dims, merged
  int64_t outer = 1, inner = 1;   // rows: rest = outer x inner (the last merged dim)
  std::array<int64_t, N> sc{};    // each operand's stride between neighbouring inner rows
};

// dim < 0 means there is no reduced dim (a 0-d tensor, reduced as a single element).
template <size_t N>
DimPlan<N> plan_dim(const Shape& shape, int64_t dim, const std::array<const Shape*, N>& strides) {
  DimPlan<N> p;
  Shape rshape;
  std::array<Shape, N> rstrides;
  for (int64_t d = 0; d < int64_t(shape.size()); d++) {
    if (d == dim) {
      p.D = shape[d];
      for (size_t k = 0; k < N; k++) p.sd[k] = (*strides[k])[d];
      continue;
    }
    rshape.push_back(shape[d]);
    for (size_t k = 0; k < N; k++) rstrides[k].push_back((*strides[k])[d]);
  }
  std::array<const Shape*, N> ptrs;
  for (size_t k = 0; k < N; k++) ptrs[k] = &rstrides[k];
  p.rest = plan_strided<N>(rshape, ptrs);
  p.inner = p.rest.shape.back();
  for (size_t d = 0; d + 1 < p.rest.shape.size(); d++) p.outer *= p.rest.shape[d];
  for (size_t k = 0; k < N; k++) p.sc[k] = p.rest.strides[k].back();
  return p;
}

// Calls body(off, w) in parallel for tiles of up to `tile` neighbouring rows, where off[k] is
// operand k's element offset of the tile's first row.
template <size_t N, typename Body>
void for_tiles(const DimPlan<N>& p, int64_t tile, Body body) {
  if (p.outer == 0 || p.inner == 0) return;
  const int64_t per_outer = (p.inner + tile - 1) / tile;
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, tile * p.D));
  const int64_t nd = int64_t(p.rest.shape.size());
  parallel_for(p.outer * per_outer, grain, [&](int64_t tb, int64_t te) {
    std::array<int64_t, N> off;
    for (int64_t t = tb; t < te; t++) {
      int64_t o = t / per_outer, c0 = (t % per_outer) * tile;
      for (size_t k = 0; k < N; k++) off[k] = c0 * p.sc[k];
      for (int64_t d = nd - 2; d >= 0; d--) {
        int64_t i = o % p.rest.shape[d];
        o /= p.rest.shape[d];
        for (size_t k = 0; k < N; k++) off[k] += i * p.rest.strides[k][d];
      }
      body(off, std::min(tile, p.inner - c0));
    }
  });
}



// ---- softmax / log-softmax ----
//
// Row kernels: one contiguous row of length D.

template <typename T>
void softmax_forward_row(const T* __restrict x, T* __restrict y, int64_t D, bool log) {
  const T m = lane_max(x, D);
  double s = 0;
  T buf[kBlock];
  for (int64_t b = 0; b < D; b += kBlock) {
    const int64_t n = std::min(kBlock, D - b);
    T* __restrict e = log ? buf : y + b;
    for (int64_t i = 0; i < n; i++) e[i] = vm::exp(x[b + i] - m);
    s += lane_sum(e, n);
  }
  if (log) {
    const T shift = T(double(m) + std::log(s));
    for (int64_t i = 0; i < D; i++) y[i] = x[i] - shift;
  } else {
    const T inv = T(1.0 / s);
    for (int64_t i = 0; i < D; i++) y[i] *= inv;
  }
}

template <typename T>
void softmax_backward_row(const T* __restrict y, const T* __restrict gy, T* __restrict gx, int64_t D, bool log) {
  double s = 0;
  if (log) {
    s = lane_sum(gy, D);
  } else {
    T buf[kBlock];
    for (int64_t b = 0; b < D; b += kBlock) {
      const int64_t n = std::min(kBlock, D - b);
      for (int64_t i = 0; i < n; i++) buf[i] = gy[b + i] * y[b + i];
      s += lane_sum(buf, n);
    }
  }
  const T st = T(s);
  if (log) {
    for (int64_t i = 0; i < D; i++) gx[i] = gy[i] - vm::exp(y[i]) * st;
  } else {
    for (int64_t i = 0; i < D; i++) gx[i] = y[i] * (gy[i] - st);
  }
}

// Tile kernels: W rows of length D (W == 1 when Row), row j's element k at x[k * xsd + j * xsc].

template <typename T, bool Row>
void softmax_forward_tile(const T* __restrict x, T* __restrict y, int64_t D, int64_t W, int64_t xsd, int64_t xsc,
                          int64_t ysd, int64_t ysc, bool log) {
  const int64_t w = Row ? 1 : W;
  T m[Row ? 1 : kTile];
  double s[Row ? 1 : kTile];
  for (int64_t j = 0; j < w; j++) m[j] = -std::numeric_limits<T>::infinity(), s[j] = 0;
  for (int64_t k = 0; k < D; k++)
    for (int64_t j = 0; j < w; j++) m[j] = std::max(m[j], x[k * xsd + j * xsc]);
  for (int64_t k = 0; k < D; k++)
    for (int64_t j = 0; j < w; j++) {
      T e = std::exp(x[k * xsd + j * xsc] - m[j]);
      s[j] += e;
      if (!log) y[k * ysd + j * ysc] = e;
    }
  if (log) {
    T shift[Row ? 1 : kTile];
    for (int64_t j = 0; j < w; j++) shift[j] = T(m[j] + std::log(s[j]));
    for (int64_t k = 0; k < D; k++)
      for (int64_t j = 0; j < w; j++) y[k * ysd + j * ysc] = x[k * xsd + j * xsc] - shift[j];
  } else {
    T inv[Row ? 1 : kTile];
    for (int64_t j = 0; j < w; j++) inv[j] = T(1.0 / s[j]);
    for (int64_t k = 0; k < D; k++)
      for (int64_t j = 0; j < w; j++) y[k * ysd + j * ysc] *= inv[j];
  }
}

template <typename T, bool Row>
void softmax_backward_tile(const T* __restrict y, const T* __restrict gy, T* __restrict gx, int64_t D, int64_t W,
                           int64_t ysd, int64_t ysc, int64_t gsd, int64_t gsc, int64_t xsd, int64_t xsc, bool log) {
  const int64_t w = Row ? 1 : W;
  double s[Row ? 1 : kTile];
  for (int64_t j = 0; j < w; j++) s[j] = 0;
  for (int64_t k = 0; k < D; k++)
    for (int64_t j = 0; j < w; j++) {
      T g = gy[k * gsd + j * gsc];
      s[j] += log ? g : g * y[k * ysd + j * ysc];
    }
  T st[Row ? 1 : kTile];
  for (int64_t j = 0; j < w; j++) st[j] = T(s[j]);
  for (int64_t k = 0; k < D; k++)
    for (int64_t j = 0; j < w; j++) {
      T yv = y[k * ysd + j * ysc], g = gy[k * gsd + j * gsc];
      gx[k * xsd + j * xsc] = log ? g - std::exp(yv) * st[j] : yv * (g - st[j]);
    }
}

// Runs plan p's rows: row(off) for each row when the first n_row operands (those walked along the
// rows) all have stride 1 along the reduced dim, vectorized; otherwise tile(Row, off, w) over tiles
// of up to kTile neighbouring rows, or one row at a time (Row = std::true_type) when the first
// operand's reduced dim is contiguous or the rows have no neighbours. off[k] is operand k's offset.
template <size_t N, typename RowF, typename TileF>
void for_rows(const DimPlan<N>& p, size_t n_row, RowF row, TileF tile) {
  bool unit = true;
  for (size_t k = 0; k < n_row; k++) unit = unit && (p.sd[k] == 1 || p.D <= 1);
  using Off = std::array<int64_t, N>;
  if (unit) {
    for_tiles<N>(p, 1, [&](const Off& o, int64_t) { run_simd([&] { row(o); }); });
  } else if (p.sd[0] == 1 || p.inner == 1 || p.D <= 1) {
    for_tiles<N>(p, 1, [&](const Off& o, int64_t w) { tile(std::true_type{}, o, w); });
  } else {
    for_tiles<N>(p, kTile, [&](const Off& o, int64_t w) { tile(std::false_type{}, o, w); });
  }
}

}  // namespace

void softmax_forward(const Tensor& x, int64_t dim, bool log, const Tensor& y) {
  const char* op = log ? "logSoftmax" : "softmax";
  const int64_t d = ops::check_softmax_forward(x, dim, log, y);
  const auto p = plan_dim<2>(x.shape, d, {&x.strides, &y.strides});
  KILN_DISPATCH_FLOAT(x.dtype, op, {
    const scalar_t* xp = x.data<scalar_t>();
    scalar_t* yp = y.data<scalar_t>();
    for_rows<2>(
        p, 2, [&](const auto& o) { softmax_forward_row(xp + o[0], yp + o[1], p.D, log); },
        [&](auto row, const auto& o, int64_t w) {
          softmax_forward_tile<scalar_t, decltype(row)::value>(xp + o[0], yp + o[1], p.D, w, p.sd[0], p.sc[0], p.sd[1],
                                                               p.sc[1], log);
        });
  });
}

void softmax_backward(const Tensor& y, const Tensor& gy, int64_t dim, bool log, const Tensor& gx) {
  const char* op = log ? "logSoftmax backward" : "softmax backward";
  const int64_t d = ops::check_softmax_backward(y, gy, dim, log, gx);
  const auto p = plan_dim<3>(y.shape, d, {&y.strides, &gy.strides, &gx.strides});
  KILN_DISPATCH_FLOAT(y.dtype, op, {
    const scalar_t* yp = y.data<scalar_t>();
    const scalar_t* gp = gy.data<scalar_t>();
    scalar_t* xp = gx.data<scalar_t>();
    for_rows<3>(
        p, 3, [&](const auto& o) { softmax_backward_row(yp + o[0], gp + o[1], xp + o[2], p.D, log); },
        [&](auto row, const auto& o, int64_t w) {
          softmax_backward_tile<scalar_t, decltype(row)::value>(yp + o[0], gp + o[1], xp + o[2], p.D, w, p.sd[0],
                                                                p.sc[0], p.sd[1], p.sc[1], p.sd[2], p.sc[2], log);
        });
  });
}

// ---- cross-entropy ----
//
// Per row: lse = logsumexp(x), loss = lse - (1 - eps) * x[target] - eps * mean(x), which is
// (1 - eps) * nll + eps * mean_c(-log p_c) as in PyTorch; its gradient is
// softmax(x) - (1 - eps) * onehot(target) - eps / C.

namespace {

// One contiguous row of C logits with its target tg: writes lse and the row's loss.
template <typename T, typename I, typename O>
void cross_entropy_forward_row(const T* __restrict x, I tg, T* lse, O* out, int64_t C, int64_t ignore, double eps) {
  const T m = lane_max(x, C);
  double s = 0;
  T buf[kBlock];
  for (int64_t b = 0; b < C; b += kBlock) {
    const int64_t n = std::min(kBlock, C - b);
    for (int64_t i = 0; i < n; i++) buf[i] = vm::exp(x[b + i] - m);
    s += lane_sum(buf, n);
  }
  const double l = double(m) + std::log(s);
  *lse = T(l);
  // tg was checked to be ignore or in [0, C) before the kernel ran.
  const double sx = eps > 0 ? lane_sum(x, C) : 0;
  *out = int64_t(tg) == ignore ? O(0) : O(l - (1 - eps) * double(x[int64_t(tg)]) - eps * sx / double(C));
}

// Its gradient: gx = gr * (exp(x - lse) - eps / C - (1 - eps) onehot(tg)), gr = g * scale (0 when ignored).
template <typename T, typename I>
void cross_entropy_backward_row(const T* __restrict x, T* __restrict gx, I tg, T lse, T g, int64_t C, int64_t ignore,
                                double eps, double scale) {
  const bool ignored = int64_t(tg) == ignore;
  const T gr = ignored ? T(0) : T(double(g) * scale), smooth = T(eps / double(C));
  for (int64_t i = 0; i < C; i++) gx[i] = gr * (vm::exp(x[i] - lse) - smooth);
  if (!ignored) gx[int64_t(tg)] -= gr * T(1 - eps);
}

template <typename T, typename I, typename O, bool Row>
void cross_entropy_forward_tile(const T* __restrict x, const I* t, T* lse, O* out, int64_t C, int64_t W, int64_t xsd,
                                int64_t xsc, int64_t tsc, int64_t lsc, int64_t osc, int64_t ignore, double eps) {
  const int64_t w = Row ? 1 : W;
  T m[Row ? 1 : kTile];
  double s[Row ? 1 : kTile], sx[Row ? 1 : kTile];
  for (int64_t j = 0; j < w; j++) m[j] = -std::numeric_limits<T>::infinity(), s[j] = 0, sx[j] = 0;
  for (int64_t k = 0; k < C; k++)
    for (int64_t j = 0; j < w; j++) m[j] = std::max(m[j], x[k * xsd + j * xsc]);
  for (int64_t k = 0; k < C; k++)
    for (int64_t j = 0; j < w; j++) {
      T v = x[k * xsd + j * xsc];
      s[j] += std::exp(v - m[j]);
      sx[j] += v;
    }
  for (int64_t j = 0; j < w; j++) {
    const double l = double(m[j]) + std::log(s[j]);
    lse[j * lsc] = T(l);
    const int64_t tg = int64_t(t[j * tsc]);
    // tg was checked to be ignore or in [0, C) before the kernel ran.
    // The smoothing term only when smoothing (0 * sum would be NaN for a -inf logit).
    const double smooth = eps > 0 ? eps * sx[j] / double(C) : 0;
    out[j * osc] = tg == ignore ? O(0) : O(l - (1 - eps) * double(x[tg * xsd + j * xsc]) - smooth);
  }
}

template <typename T, typename I, bool Row>
void cross_entropy_backward_tile(const T* __restrict x, T* __restrict gx, const I* t, const T* lse, const T* g,
                                 int64_t C, int64_t W, int64_t xsd, int64_t xsc, int64_t gxsd, int64_t gxsc, int64_t tsc,
                                 int64_t lsc, int64_t gsc, int64_t ignore, double eps, double scale) {
  const int64_t w = Row ? 1 : W;
  T gr[Row ? 1 : kTile], l[Row ? 1 : kTile];
  int64_t tg[Row ? 1 : kTile];
  for (int64_t j = 0; j < w; j++) {
    tg[j] = int64_t(t[j * tsc]);
    gr[j] = tg[j] == ignore ? T(0) : T(double(g[j * gsc]) * scale);
    l[j] = lse[j * lsc];
  }
  const T smooth = T(eps / double(C));
  for (int64_t k = 0; k < C; k++)
    for (int64_t j = 0; j < w; j++) gx[k * gxsd + j * gxsc] = gr[j] * (std::exp(x[k * xsd + j * xsc] - l[j]) - smooth);
  for (int64_t j = 0; j < w; j++)
    if (tg[j] != ignore) gx[tg[j] * gxsd + j * gxsc] -= gr[j] * T(1 - eps);
}

// Checks every target against [0, C) (ignore_index aside) before any kernel indexes with it;
// returns the number of non-ignored targets.
template <typename I>
int64_t check_targets(const char* op, const Tensor& target, int64_t C, int64_t ignore) {
  const I* tp = target.data<I>();
  int64_t count = 0, bad = 0;
  bool any_bad = false;
  // Serial (grain = max): the body records the first bad target instead of throwing.
  strided_for<1>(
      target.shape, {&target.strides},
      [&](int64_t n, const std::array<int64_t, 1>& off, const std::array<int64_t, 1>& st) {
        for (int64_t i = 0; i < n; i++) {
          const int64_t v = int64_t(tp[off[0] + i * st[0]]);
          if (v == ignore) continue;
          if (v >= 0 && v < C) count++;
          else if (!any_bad) any_bad = true, bad = v;
        }
      },
      std::numeric_limits<int64_t>::max());
  KILN_CHECK(!any_bad, Index, op, "target ", bad, " is out of bounds for ", C, " classes (expected 0 to ", C - 1,
             ", or ignoreIndex ", ignore, ")");
  return count;
}



}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& target, int64_t ignore_index, double smoothing,
                           Reduction reduction, const Tensor& loss, const Tensor& lse, const Tensor& total_weight) {
  const char* op = "crossEntropy";
  const bool none = reduction == Reduction::None;
  const int64_t cdim = ops::check_cross_entropy_forward(logits, target, smoothing, reduction, loss, lse, total_weight);
  const int64_t C = logits.shape[cdim];
  const Shape ts = with_class_dim(target.strides, cdim), ls = with_class_dim(lse.strides, cdim);
  // Sum and Mean collect row losses in a contiguous buffer and add them up in a fixed order.
  const Shape os = with_class_dim(none ? loss.strides : contiguous_strides(target.shape), cdim);
  const auto p = plan_dim<4>(logits.shape, cdim, {&logits.strides, &ts, &ls, &os});
  KILN_DISPATCH_FLOAT(logits.dtype, op, {
    using T = scalar_t;
    const T* xp = logits.data<T>();
    T* lp = lse.data<T>();
    KILN_DISPATCH_INDEX(target.dtype, op, {
      using I = scalar_t;
      const I* tp = target.data<I>();
      const int64_t count = check_targets<I>(op, target, C, ignore_index);
      auto run = [&](auto* out) {
        using O = std::remove_pointer_t<decltype(out)>;
        for_rows<4>(
            p, 1,
            [&](const auto& o) {
              cross_entropy_forward_row(xp + o[0], tp[o[1]], lp + o[2], out + o[3], C, ignore_index, smoothing);
            },
            [&](auto row, const auto& o, int64_t w) {
              cross_entropy_forward_tile<T, I, O, decltype(row)::value>(xp + o[0], tp + o[1], lp + o[2], out + o[3], C,
                                                                        w, p.sd[0], p.sc[0], p.sc[1], p.sc[2], p.sc[3],
                                                                        ignore_index, smoothing);
            });
      };
      if (none) {
        run(loss.data<T>());
      } else {
        std::vector<double> rows(size_t(target.numel()));
        run(rows.data());
        double total = 0;
        for (double v : rows) total += v;
        loss.data<T>()[0] = T(reduction == Reduction::Mean ? total / double(count) : total);
      }
      total_weight.data<T>()[0] = T(count);
    });
  });
}

void cross_entropy_backward(const Tensor& logits, const Tensor& target, const Tensor& lse, const Tensor& total_weight,
                            const Tensor& grad_loss, int64_t ignore_index, double smoothing, Reduction reduction,
                            const Tensor& grad_logits) {
  const char* op = "crossEntropy backward";
  const bool none = reduction == Reduction::None;
  const int64_t cdim =
      ops::check_cross_entropy_backward(logits, target, lse, total_weight, grad_loss, smoothing, reduction, grad_logits);
  const int64_t C = logits.shape[cdim];
  const Shape ts = with_class_dim(target.strides, cdim), ls = with_class_dim(lse.strides, cdim);
  // A scalar loss gradient is read through zero strides: every row sees the same element.
  const Shape gs = none ? with_class_dim(grad_loss.strides, cdim) : Shape(logits.shape.size(), 0);
  const auto p = plan_dim<5>(logits.shape, cdim, {&logits.strides, &grad_logits.strides, &ts, &ls, &gs});
  KILN_DISPATCH_FLOAT(logits.dtype, op, {
    using T = scalar_t;
    const T* xp = logits.data<T>();
    T* gxp = grad_logits.data<T>();
    const T* lp = lse.data<T>();
    const T* gp = grad_loss.data<T>();
    const double scale = reduction == Reduction::Mean ? 1.0 / double(total_weight.data<T>()[0]) : 1.0;
    KILN_DISPATCH_INDEX(target.dtype, op, {
      using I = scalar_t;
      const I* tp = target.data<I>();
      check_targets<I>(op, target, C, ignore_index);
      for_rows<5>(
          p, 2,
          [&](const auto& o) {
            cross_entropy_backward_row(xp + o[0], gxp + o[1], tp[o[2]], lp[o[3]], gp[o[4]], C, ignore_index, smoothing,
                                       scale);
          },
          [&](auto row, const auto& o, int64_t w) {
            cross_entropy_backward_tile<T, I, decltype(row)::value>(xp + o[0], gxp + o[1], tp + o[2], lp + o[3],
                                                                    gp + o[4], C, w, p.sd[0], p.sc[0], p.sd[1],
                                                                    p.sc[1], p.sc[2], p.sc[3], p.sc[4], ignore_index,
                                                                    smoothing, scale);
          });
    });
  });
}

}  // namespace kiln::cpu
