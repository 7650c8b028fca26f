// CPU layer normalization, forward and backward side by side, and the forward with a residual add in
// front (add_layer_norm_forward: each row's sum is written, then normalized while in cache; the twin
// of the CUDA kernel, computing exactly x.add(delta) then layerNorm). Each row (the trailing normalized
// dims, M elements) is normalized with a two-pass mean/variance in double, so float32 inputs with
// a large mean stay accurate. The backward computes grad_x row by row and grad_weight/grad_bias as
// per-chunk partial sums over rows (a fixed number of chunks, so results do not depend on thread
// timing) combined at the end.
#include "../ops/norm.h"
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>
#include "../core/parallel.h"
#include "copy.h"
#include "simd.h"

namespace kiln::cpu {

using ops::Rows;
using ops::check_layer_norm_backward;
using ops::check_layer_norm_forward;

namespace {

constexpr int64_t kGrain = 16384;  // elements per parallel task, at least

// t itself when contiguous, else a contiguous copy (kernels below index rows directly).
Tensor contiguous(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor c = Tensor::empty(t.shape, t.dtype, t.device());
  copy(t, c);
  return c;
}

// With delta (add_layer_norm_forward) each row of x + delta goes to sum and is normalized from there.
template <typename T, bool HasW, bool HasB>
void forward_rows(const T* x, const T* delta, T* sum, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t R,
                  int64_t M, double eps) {
  parallel_for(R, std::max<int64_t>(1, kGrain / std::max<int64_t>(M, 1)), [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; r++) {
      const T* xr = x + r * M;
      if (delta) {
        const T* dr = delta + r * M;
        T* sr = sum + r * M;
        for (int64_t i = 0; i < M; i++) sr[i] = xr[i] + dr[i];
        xr = sr;
      }
      T* yr = y + r * M;
      double s = 0;
      for (int64_t i = 0; i < M; i++) s += xr[i];
      const double mu = s / double(M);
      double v = 0;
      for (int64_t i = 0; i < M; i++) {
        const double d = double(xr[i]) - mu;
        v += d * d;
      }
      const double rs = 1.0 / std::sqrt(v / double(M) + eps);
      mean[r] = T(mu);
      rstd[r] = T(rs);
      // Subtracting in double keeps rows with a mean much larger than their spread exact.
      for (int64_t i = 0; i < M; i++) {
        T h = T((double(xr[i]) - mu) * rs);
        if (HasW) h *= w[i];
        if (HasB) h += b[i];
        yr[i] = h;
      }
    }
  });
}

// Rows [rb, re): writes gx (when wanted) and adds sum(gy * xhat) and sum(gy) per column into gw, gb.
// Vectorized (run by the caller under run_simd): row sums in lanes (lane_sum), column sums in T over
// blocks of kRowBlock rows, folded into the double gw / gb after each block.
template <typename T, bool HasW>
void backward_rows(const T* gy, const T* x, const T* mean, const T* rstd, const T* w, T* gx, double* gw, double* gb,
                   int64_t rb, int64_t re, int64_t M) {
  constexpr int64_t kRowBlock = 64;
  std::vector<T> cw(gw ? size_t(M) : 0), cb(gb ? size_t(M) : 0), g(gx ? size_t(M) : 0), gh(gx ? size_t(M) : 0);
  for (int64_t r = rb; r < re; r++) {
    const T* __restrict gr = gy + r * M;
    const T* __restrict xr = x + r * M;
    const T m = mean[r], k = rstd[r];
    if (gw) {
      T* __restrict c = cw.data();
      for (int64_t i = 0; i < M; i++) c[i] += gr[i] * ((xr[i] - m) * k);
    }
    if (gb) {
      T* __restrict c = cb.data();
      for (int64_t i = 0; i < M; i++) c[i] += gr[i];
    }
    if ((r - rb + 1) % kRowBlock == 0 || r + 1 == re) {
      for (auto [part, out] : {std::pair{&cw, gw}, std::pair{&cb, gb}}) {
        if (!out) continue;
        for (int64_t i = 0; i < M; i++) out[i] += double((*part)[size_t(i)]);
        std::fill(part->begin(), part->end(), T(0));
      }
    }
    if (!gx) continue;
    // gx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = gy * weight.
    T* __restrict gp = g.data();
    T* __restrict ghp = gh.data();
    for (int64_t i = 0; i < M; i++) {
      gp[i] = HasW ? gr[i] * w[i] : gr[i];
      ghp[i] = gp[i] * ((xr[i] - m) * k);
    }
    const T a = T(lane_sum(gp, M) / double(M)), c = T(lane_sum(ghp, M) / double(M));
    T* __restrict out = gx + r * M;
    for (int64_t i = 0; i < M; i++) out[i] = k * (gp[i] - a - (xr[i] - m) * k * c);
  }
}

}  // namespace

namespace {

// The forward on x (contiguous or not), plus delta into sum when delta is given.
void forward(const char* op, const Tensor& x_in, const Tensor* delta_in, const Tensor* sum, const Tensor* weight,
             const Tensor* bias, const Rows& rows, double eps, const Tensor& y, const Tensor& mean,
             const Tensor& rstd) {
  const Tensor x = contiguous(x_in);
  const Tensor delta = delta_in ? contiguous(*delta_in) : Tensor();
  const Tensor w = weight ? contiguous(*weight) : Tensor();
  const Tensor b = bias ? contiguous(*bias) : Tensor();
  KILN_DISPATCH_FLOAT(x.dtype, op, {
    using T = scalar_t;
    const T* dp = delta_in ? delta.data<T>() : nullptr;
    T* sp = sum ? sum->data<T>() : nullptr;
    const T* wp = weight ? w.data<T>() : nullptr;
    const T* bp = bias ? b.data<T>() : nullptr;
    auto run = [&](auto has_w, auto has_b) {
      forward_rows<T, decltype(has_w)::value, decltype(has_b)::value>(
          x.data<T>(), dp, sp, wp, bp, y.data<T>(), mean.data<T>(), rstd.data<T>(), rows.R, rows.M, eps);
    };
    if (wp && bp) run(std::true_type{}, std::true_type{});
    else if (wp) run(std::true_type{}, std::false_type{});
    else if (bp) run(std::false_type{}, std::true_type{});
    else run(std::false_type{}, std::false_type{});
  });
}

}  // namespace

void layer_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias, int64_t norm_dims, double eps,
                        const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  const Rows rows = check_layer_norm_forward(x, weight, bias, norm_dims, y, mean, rstd);
  forward("layerNorm", x, nullptr, nullptr, weight, bias, rows, eps, y, mean, rstd);
}

void add_layer_norm_forward(const Tensor& x, const Tensor& delta, const Tensor* weight, const Tensor* bias,
                            double eps, const Tensor& sum, const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  const Rows rows = ops::check_add_layer_norm_forward(x, delta, weight, bias, sum, y, mean, rstd);
  forward("addLayerNorm", x, &delta, &sum, weight, bias, rows, eps, y, mean, rstd);
}

void layer_norm_backward(const Tensor& gy_in, const Tensor& x_in, const Tensor& mean, const Tensor& rstd,
                         const Tensor* weight, int64_t norm_dims, const Tensor* gx, const Tensor* gweight,
                         const Tensor* gbias) {
  const char* op = "layerNorm backward";
  const Rows rows = check_layer_norm_backward(gy_in, x_in, mean, rstd, weight, norm_dims, gx, gweight, gbias);
  const int64_t R = rows.R, M = rows.M;
  const Tensor x = contiguous(x_in), gy = contiguous(gy_in), mu = contiguous(mean), rs = contiguous(rstd);
  const Tensor w = weight ? contiguous(*weight) : Tensor();
  // Partial column sums per chunk of rows; the chunk count depends only on sizes and threads.
  const int64_t chunks =
      (gweight || gbias) ? std::max<int64_t>(1, std::min<int64_t>({int64_t(num_threads()), R, R * M / kGrain})) : 1;
  std::vector<double> pw(gweight ? size_t(chunks * M) : 0), pb(gbias ? size_t(chunks * M) : 0);
  KILN_DISPATCH_FLOAT(x.dtype, op, {
    using T = scalar_t;
    const T* wp = weight ? w.data<T>() : nullptr;
    T* gxp = gx ? gx->data<T>() : nullptr;
    auto run = [&](auto has_w) {
      constexpr bool HW = decltype(has_w)::value;
      if (gweight || gbias) {
        parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
          for (int64_t c = cb; c < ce; c++)
            run_simd([&] {
              backward_rows<T, HW>(gy.data<T>(), x.data<T>(), mu.data<T>(), rs.data<T>(), wp, gxp,
                                   gweight ? pw.data() + c * M : nullptr, gbias ? pb.data() + c * M : nullptr,
                                   R * c / chunks, R * (c + 1) / chunks, M);
            });
        });
      } else {
        parallel_for(R, std::max<int64_t>(1, kGrain / std::max<int64_t>(M, 1)), [&](int64_t rb, int64_t re) {
          run_simd([&] {
            backward_rows<T, HW>(gy.data<T>(), x.data<T>(), mu.data<T>(), rs.data<T>(), wp, gxp, nullptr, nullptr, rb,
                                 re, M);
          });
        });
      }
    };
    if (wp) run(std::true_type{});
    else run(std::false_type{});
    auto combine = [&](const std::vector<double>& part, const Tensor* out) {
      if (!out) return;
      T* o = out->data<T>();
      parallel_for(M, kGrain, [&](int64_t ib, int64_t ie) {
        for (int64_t i = ib; i < ie; i++) {
          double s = 0;
          for (int64_t c = 0; c < chunks; c++) s += part[size_t(c * M + i)];
          o[i] = T(s);
        }
      });
    };
    combine(pw, gweight);
    combine(pb, gbias);
  });
}

}  // namespace kiln::cpu
