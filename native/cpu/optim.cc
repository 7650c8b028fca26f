// CPU fused optimizer kernels and gradient-clipping passes (native/ops/optim.h). Each update reads
// and writes every operand once, in parallel chunks over contiguous memory; bfloat16 and float16
// parameters are computed in float32 against float32 state and only the new value is rounded. The
// norm partial sums fixed-size blocks in a fixed order, so it does not depend on the thread count.
#include "../ops/optim.h"
#include <algorithm>
#include <cmath>
#include <type_traits>
#include "../core/parallel.h"

namespace kiln::cpu {

namespace {
constexpr int64_t kGrain = 1 << 15;

// What an update of a T parameter computes in, and the element type of its state.
template <typename T>
using compute_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// One chunk of the SGD update (see adam_chunk for why the options are template parameters).
template <typename T, bool kDecay, bool kMomentum, bool kNesterov>
void sgd_chunk(T* p, const T* g, compute_t<T>* buf, int64_t b, int64_t e, const ops::SgdOptions& o) {
  using C = compute_t<T>;
  const C lr = C(o.lr), wd = C(o.weight_decay), mom = C(o.momentum), keep = C(1 - o.dampening);
  const C sign = o.maximize ? C(-1) : C(1);
  const bool first = o.first_step;
  for (int64_t i = b; i < e; i++) {
    const C pi = C(p[i]);
    C gi = sign * C(g[i]);
    if constexpr (kDecay) gi += wd * pi;
    if constexpr (kMomentum) {
      const C bi = first ? gi : mom * buf[i] + keep * gi;
      buf[i] = bi;
      gi = kNesterov ? gi + mom * bi : bi;
    }
    p[i] = T(pi - lr * gi);
  }
}

template <typename T>
void sgd_typed(const Tensor& param, const Tensor& grad, const Tensor* buf_t, const ops::SgdOptions& o) {
  using C = compute_t<T>;
  T* p = param.data<T>();
  const T* g = grad.data<T>();
  C* buf = buf_t ? buf_t->data<C>() : nullptr;
  const bool decay = o.weight_decay != 0;
  auto chunk = !buf         ? (decay ? sgd_chunk<T, true, false, false> : sgd_chunk<T, false, false, false>)
               : o.nesterov ? (decay ? sgd_chunk<T, true, true, true> : sgd_chunk<T, false, true, true>)
                            : (decay ? sgd_chunk<T, true, true, false> : sgd_chunk<T, false, true, false>);
  parallel_for(param.numel(), kGrain, [&](int64_t b, int64_t e) { chunk(p, g, buf, b, e, o); });
}

// One chunk of the Adam update; the options that change the loop body are template parameters so
// that each variant is a straight loop the compiler can vectorize.
template <typename T, bool kL2, bool kAmsgrad>
void adam_chunk(T* p, const T* g, compute_t<T>* m, compute_t<T>* v, compute_t<T>* vmax, int64_t b, int64_t e,
                const ops::AdamOptions& o) {
  using C = compute_t<T>;
  const C b1 = C(o.beta1), b2 = C(o.beta2), eps = C(o.eps);
  const C one_b1 = C(1 - o.beta1), one_b2 = C(1 - o.beta2);
  const C step_size = C(o.lr / o.bias_correction1), bc2 = C(o.bias_correction2_sqrt);
  const C sign = o.maximize ? C(-1) : C(1);
  const C wd = C(o.weight_decay);
  // AdamW multiplies by exactly 1 when there is no decay, which leaves every value unchanged.
  const C shrink = o.decoupled ? C(1 - o.lr * o.weight_decay) : C(1);
  for (int64_t i = b; i < e; i++) {
    const C pi = C(p[i]);
    C gi = sign * C(g[i]);
    if constexpr (kL2) gi += wd * pi;
    const C mi = b1 * m[i] + one_b1 * gi;
    C vi = b2 * v[i] + one_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    if constexpr (kAmsgrad) {
      vi = vmax[i] > vi ? vmax[i] : vi;
      vmax[i] = vi;
    }
    p[i] = T(pi * shrink - step_size * (mi / (std::sqrt(vi) / bc2 + eps)));
  }
}

template <typename T>
void adam_typed(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                const Tensor* max_t, const ops::AdamOptions& o) {
  using C = compute_t<T>;
  T* p = param.data<T>();
  const T* g = grad.data<T>();
  C* m = exp_avg.data<C>();
  C* v = exp_avg_sq.data<C>();
  C* vmax = max_t ? max_t->data<C>() : nullptr;
  const bool l2 = !o.decoupled && o.weight_decay != 0;
  auto chunk = l2 ? (vmax ? adam_chunk<T, true, true> : adam_chunk<T, true, false>)
                  : (vmax ? adam_chunk<T, false, true> : adam_chunk<T, false, false>);
  parallel_for(param.numel(), kGrain, [&](int64_t b, int64_t e) { chunk(p, g, m, v, vmax, b, e, o); });
}

// ---------------------------------------------------------------------------------------------
// Gradient clipping: both passes over the gradients split them into the same fixed blocks.

constexpr int64_t kBlock = 1 << 15;

struct Block {
  const Tensor* t;
  int64_t begin, end;
};

struct Blocks {
  std::vector<Block> list;
  int64_t grain;  // blocks per task: all in one when there is too little work to share
};

Blocks split_blocks(const std::vector<const Tensor*>& grads) {
  Blocks b;
  int64_t elems = 0;
  for (const Tensor* g : grads) {
    const int64_t n = g->numel();
    for (int64_t s = 0; s < n; s += kBlock) b.list.push_back({g, s, std::min(n, s + kBlock)});
    elems += n;
  }
  b.grain = elems < 2 * kBlock ? int64_t(b.list.size()) + 1 : 1;
  return b;
}

// Sum of f(|x|) over the block, in float64 with 8 independent lanes (vectorizes, keeps precision).
template <typename T, typename F>
double block_sum(const T* x, int64_t n, F f) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) acc[k] += f(std::fabs(static_cast<double>(x[i + k])));
  double s = 0;
  for (; i < n; i++) s += f(std::fabs(static_cast<double>(x[i])));
  for (int k = 0; k < 8; k++) s += acc[k];
  return s;
}

template <typename T>
double block_max(const T* x, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) {
    const double a = std::fabs(static_cast<double>(x[i]));
    if (a > m || std::isnan(a)) m = a;
    if (std::isnan(m)) break;
  }
  return m;
}

double block_partial(const Block& b, double p) {
  double r = 0;
  KILN_DISPATCH_FLOATING(b.t->dtype, "gradNormPartial", {
    const scalar_t* x = b.t->data<scalar_t>() + b.begin;
    const int64_t n = b.end - b.begin;
    switch (ops::norm_kind(p)) {
      case ops::NormKind::Inf: r = block_max(x, n); break;
      case ops::NormKind::L2: r = block_sum(x, n, [](double a) { return a * a; }); break;
      case ops::NormKind::L1: r = block_sum(x, n, [](double a) { return a; }); break;
      case ops::NormKind::Lp: r = block_sum(x, n, [p](double a) { return std::pow(a, p); }); break;
    }
  });
  return r;
}

double read_scalar(const Tensor& t, const char* op) {
  double v = 0;
  KILN_DISPATCH_FLOAT(t.dtype, op, { v = double(*t.data<scalar_t>()); });
  return v;
}

void write_scalar(const Tensor& t, double v, const char* op) {
  KILN_DISPATCH_FLOAT(t.dtype, op, { *t.data<scalar_t>() = scalar_t(v); });
}
}  // namespace

void sgd_step(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, double lr, double momentum,
              double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step) {
  const ops::SgdOptions o = ops::check_sgd_step(param, grad, momentum_buf, lr, momentum, dampening, weight_decay,
                                                nesterov, maximize, first_step);
  KILN_DISPATCH_FLOATING(param.dtype, "sgdStep", { sgd_typed<scalar_t>(param, grad, momentum_buf, o); });
}

void adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
               const Tensor* max_exp_avg_sq, double lr, double beta1, double beta2, double eps, double weight_decay,
               double bias_correction1, double bias_correction2_sqrt, bool decoupled, bool maximize) {
  const ops::AdamOptions o =
      ops::check_adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                           bias_correction1, bias_correction2_sqrt, decoupled, maximize);
  KILN_DISPATCH_FLOATING(param.dtype, "adamStep",
                         { adam_typed<scalar_t>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, o); });
}

void grad_norm_partial(const std::vector<const Tensor*>& grads, double norm_type, const Tensor& out) {
  ops::check_grad_norm_partial(grads, norm_type, out);
  const Blocks blocks = split_blocks(grads);
  const int64_t nb = int64_t(blocks.list.size());
  std::vector<double> partial(blocks.list.size());
  parallel_for(nb, blocks.grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) partial[i] = block_partial(blocks.list[i], norm_type);
  });
  double r = 0;
  if (ops::norm_kind(norm_type) == ops::NormKind::Inf) {
    for (double x : partial) r = (x > r || std::isnan(x)) ? x : r;
  } else {
    for (double x : partial) r += x;
  }
  write_scalar(out, r, "gradNormPartial");
}

void clip_coefficient(const Tensor& partial, double norm_type, double max_norm, const Tensor& norm,
                      const Tensor& coef) {
  const char* op = "clipCoefficient";
  ops::check_clip_coefficient(partial, norm_type, max_norm, norm, coef);
  const double s = read_scalar(partial, op);
  double n = s;
  switch (ops::norm_kind(norm_type)) {
    case ops::NormKind::L2: n = std::sqrt(s); break;
    case ops::NormKind::Lp: n = std::pow(s, 1 / norm_type); break;
    default: break;
  }
  const double c = max_norm / (n + 1e-6);
  write_scalar(norm, n, op);
  write_scalar(coef, c >= 1 ? 1.0 : c, op);  // NaN fails the comparison and stays NaN
}

void scale_grads(const std::vector<const Tensor*>& grads, const Tensor& scale) {
  const char* op = "scaleGrads";
  ops::check_scale_grads(grads, scale);
  const double s = read_scalar(scale, op);
  if (s == 1) return;
  const Blocks blocks = split_blocks(grads);
  parallel_for(int64_t(blocks.list.size()), blocks.grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      const Block& blk = blocks.list[i];
      KILN_DISPATCH_FLOATING(blk.t->dtype, op, {
        using C = compute_t<scalar_t>;
        scalar_t* x = blk.t->data<scalar_t>();
        const C c = C(s);
        for (int64_t k = blk.begin; k < blk.end; k++) x[k] = scalar_t(C(x[k]) * c);
      });
    }
  });
}

}  // namespace kiln::cpu
