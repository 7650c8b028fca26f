// CPU fused optimizer kernels (see optim.h): each update reads and writes every operand once, in
// parallel chunks over contiguous memory; the norm for clipping sums fixed-size blocks in a fixed
// order, so the result does not depend on the thread count.
#include "optim.h"
#include <cmath>
#include <limits>
#include "../core/parallel.h"

namespace kiln {

namespace {
constexpr int64_t kGrain = 1 << 15;

bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.storage != b.storage || a.numel() == 0 || b.numel() == 0) return false;
  return a.offset < b.offset + b.numel() && b.offset < a.offset + a.numel();
}
}  // namespace

void check_optimizer_operands(const char* op, const Tensor& param, const std::vector<const Tensor*>& ts) {
  KILN_CHECK(param.dtype == DType::Float32 || param.dtype == DType::Float64, DType, op,
             "parameters must be float32 or float64, got ", dtype_name(param.dtype));
  KILN_CHECK(param.is_contiguous(), Value, op, "the parameter of shape ", shape_str(param.shape), " is not contiguous");
  for (size_t i = 0; i < ts.size(); i++) {
    const Tensor& t = *ts[i];
    KILN_CHECK(t.dtype == param.dtype, DType, op, "operand ", i, " is ", dtype_name(t.dtype), " but the parameter is ",
               dtype_name(param.dtype));
    KILN_CHECK(t.shape == param.shape, Shape, op, "operand ", i, " has shape ", shape_str(t.shape),
               " but the parameter has shape ", shape_str(param.shape));
    KILN_CHECK(t.device() == param.device(), Device, op, "operand ", i, " is on another device than the parameter");
    KILN_CHECK(t.is_contiguous(), Value, op, "operand ", i, " of shape ", shape_str(t.shape), " is not contiguous");
    KILN_CHECK(!overlaps(t, param), Value, op, "operand ", i, " overlaps the parameter in memory");
    for (size_t j = 0; j < i; j++)
      KILN_CHECK(!overlaps(t, *ts[j]), Value, op, "operands ", j, " and ", i, " overlap in memory");
  }
}

void check_clip_operands(const char* op, const std::vector<const Tensor*>& grads, const Tensor& total) {
  KILN_CHECK(total.dtype == DType::Float32 || total.dtype == DType::Float64, DType, op,
             "the total norm must be float32 or float64, got ", dtype_name(total.dtype));
  KILN_CHECK(total.numel() == 1, Shape, op, "the total norm must have one element, got shape ", shape_str(total.shape));
  for (size_t i = 0; i < grads.size(); i++) {
    const Tensor& g = *grads[i];
    KILN_CHECK(g.dtype == DType::Float32 || g.dtype == DType::Float64, DType, op, "gradient ", i,
               " must be float32 or float64, got ", dtype_name(g.dtype));
    KILN_CHECK(g.is_contiguous(), Value, op, "gradient ", i, " of shape ", shape_str(g.shape), " is not contiguous");
    KILN_CHECK(g.device() == total.device(), Device, op, "gradient ", i, " is on another device than the others");
    for (size_t j = 0; j < i; j++)
      KILN_CHECK(!overlaps(g, *grads[j]), Value, op, "gradients ", j, " and ", i, " overlap in memory");
  }
}

void check_sgd_step(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, const SgdOptions& o) {
  const char* op = "sgdStep";
  KILN_CHECK((momentum_buf != nullptr) == (o.momentum != 0), Value, op,
             "a momentum buffer is needed exactly when momentum is not 0");
  std::vector<const Tensor*> ops{&grad};
  if (momentum_buf) ops.push_back(momentum_buf);
  check_optimizer_operands(op, param, ops);
}

void check_adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                     const Tensor* max_exp_avg_sq, const AdamOptions& o) {
  const char* op = "adamStep";
  KILN_CHECK(o.bias_correction1 > 0 && o.bias_correction2_sqrt > 0, Value, op,
             "bias corrections must be positive, got ", o.bias_correction1, " and ", o.bias_correction2_sqrt);
  std::vector<const Tensor*> ops{&grad, &exp_avg, &exp_avg_sq};
  if (max_exp_avg_sq) ops.push_back(max_exp_avg_sq);
  check_optimizer_operands(op, param, ops);
}

void check_clip_grad_norm(const std::vector<const Tensor*>& grads, double max_norm, double norm_type,
                          const Tensor& total) {
  const char* op = "clipGradNorm";
  KILN_CHECK(norm_type > 0, Value, op, "norm type must be positive, got ", norm_type);
  KILN_CHECK(!(max_norm < 0), Value, op, "max norm must not be negative, got ", max_norm);
  check_clip_operands(op, grads, total);
}

namespace cpu {

// One chunk of the SGD update (see adam_chunk for why the options are template parameters).
template <typename T, bool kDecay, bool kMomentum, bool kNesterov>
static void sgd_chunk(T* p, const T* g, T* buf, int64_t b, int64_t e, const SgdOptions& o) {
  const T lr = T(o.lr), wd = T(o.weight_decay), mom = T(o.momentum), keep = T(1 - o.dampening);
  const T sign = o.maximize ? T(-1) : T(1);
  const bool first = o.first_step;
  for (int64_t i = b; i < e; i++) {
    T gi = sign * g[i];
    if constexpr (kDecay) gi += wd * p[i];
    if constexpr (kMomentum) {
      const T bi = first ? gi : mom * buf[i] + keep * gi;
      buf[i] = bi;
      gi = kNesterov ? gi + mom * bi : bi;
    }
    p[i] -= lr * gi;
  }
}

template <typename T>
static void sgd_typed(const Tensor& param, const Tensor& grad, const Tensor* buf_t, const SgdOptions& o) {
  T* p = param.data<T>();
  const T* g = grad.data<T>();
  T* buf = buf_t ? buf_t->data<T>() : nullptr;
  const bool decay = o.weight_decay != 0;
  auto chunk = !buf         ? (decay ? sgd_chunk<T, true, false, false> : sgd_chunk<T, false, false, false>)
               : o.nesterov ? (decay ? sgd_chunk<T, true, true, true> : sgd_chunk<T, false, true, true>)
                            : (decay ? sgd_chunk<T, true, true, false> : sgd_chunk<T, false, true, false>);
  parallel_for(param.numel(), kGrain, [&](int64_t b, int64_t e) { chunk(p, g, buf, b, e, o); });
}

void sgd_step(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, const SgdOptions& o) {
  const char* op = "sgdStep";
  check_sgd_step(param, grad, momentum_buf, o);
  KILN_DISPATCH_FLOAT(param.dtype, op, { sgd_typed<scalar_t>(param, grad, momentum_buf, o); });
}

// One chunk of the Adam update; the options that change the loop body are template parameters so
// that each variant is a straight loop the compiler can vectorize.
template <typename T, bool kL2, bool kAmsgrad>
static void adam_chunk(T* p, const T* g, T* m, T* v, T* vmax, int64_t b, int64_t e, const AdamOptions& o) {
  const T b1 = T(o.beta1), b2 = T(o.beta2), eps = T(o.eps);
  const T one_b1 = T(1 - o.beta1), one_b2 = T(1 - o.beta2);
  const T step_size = T(o.lr / o.bias_correction1), bc2 = T(o.bias_correction2_sqrt);
  const T sign = o.maximize ? T(-1) : T(1);
  const T wd = T(o.weight_decay);
  // AdamW multiplies by exactly 1 when there is no decay, which leaves every value unchanged.
  const T shrink = o.decoupled ? T(1 - o.lr * o.weight_decay) : T(1);
  for (int64_t i = b; i < e; i++) {
    const T pi = p[i];
    T gi = sign * g[i];
    if constexpr (kL2) gi += wd * pi;
    const T mi = b1 * m[i] + one_b1 * gi;
    T vi = b2 * v[i] + one_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    if constexpr (kAmsgrad) {
      vi = vmax[i] > vi ? vmax[i] : vi;
      vmax[i] = vi;
    }
    p[i] = pi * shrink - step_size * (mi / (std::sqrt(vi) / bc2 + eps));
  }
}

template <typename T>
static void adam_typed(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                       const Tensor* max_t, const AdamOptions& o) {
  T* p = param.data<T>();
  const T* g = grad.data<T>();
  T* m = exp_avg.data<T>();
  T* v = exp_avg_sq.data<T>();
  T* vmax = max_t ? max_t->data<T>() : nullptr;
  const bool l2 = !o.decoupled && o.weight_decay != 0;
  auto chunk = l2 ? (vmax ? adam_chunk<T, true, true> : adam_chunk<T, true, false>)
                  : (vmax ? adam_chunk<T, false, true> : adam_chunk<T, false, false>);
  parallel_for(param.numel(), kGrain, [&](int64_t b, int64_t e) { chunk(p, g, m, v, vmax, b, e, o); });
}

void adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
               const Tensor* max_exp_avg_sq, const AdamOptions& o) {
  const char* op = "adamStep";
  check_adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, o);
  KILN_DISPATCH_FLOAT(param.dtype, op, { adam_typed<scalar_t>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, o); });
}

namespace {
constexpr int64_t kBlock = 1 << 15;

struct Block {
  const Tensor* t;
  int64_t begin, end;
};

// Sum of f(|x|) over the block, in float64 with 8 independent lanes (vectorizes, keeps precision).
template <typename T, typename F>
double block_sum(const T* x, int64_t n, F f) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) acc[k] += f(std::fabs(double(x[i + k])));
  double s = 0;
  for (; i < n; i++) s += f(std::fabs(double(x[i])));
  for (int k = 0; k < 8; k++) s += acc[k];
  return s;
}

template <typename T>
double block_max(const T* x, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) {
    const double a = std::fabs(double(x[i]));
    if (a > m || std::isnan(a)) m = a;
    if (std::isnan(m)) break;
  }
  return m;
}

double block_partial(const Block& b, double p) {
  double r = 0;
  KILN_DISPATCH_FLOAT(b.t->dtype, "clipGradNorm", {
    const scalar_t* x = b.t->data<scalar_t>() + b.begin;
    const int64_t n = b.end - b.begin;
    if (std::isinf(p)) r = block_max(x, n);
    else if (p == 2) r = block_sum(x, n, [](double a) { return a * a; });
    else if (p == 1) r = block_sum(x, n, [](double a) { return a; });
    else r = block_sum(x, n, [p](double a) { return std::pow(a, p); });
  });
  return r;
}
}  // namespace

void clip_grad_norm(const std::vector<const Tensor*>& grads, double max_norm, double norm_type, const Tensor& total,
                    bool error_if_nonfinite) {
  const char* op = "clipGradNorm";
  check_clip_grad_norm(grads, max_norm, norm_type, total);
  std::vector<Block> blocks;
  int64_t elems = 0;
  for (const Tensor* g : grads) {
    const int64_t n = g->numel();
    for (int64_t b = 0; b < n; b += kBlock) blocks.push_back({g, b, std::min(n, b + kBlock)});
    elems += n;
  }
  const int64_t nb = int64_t(blocks.size());
  const int64_t grain = elems < 2 * kBlock ? nb + 1 : 1;
  std::vector<double> partial(blocks.size());
  parallel_for(nb, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) partial[i] = block_partial(blocks[i], norm_type);
  });
  double norm = 0;
  if (std::isinf(norm_type)) {
    for (double x : partial) norm = (x > norm || std::isnan(x)) ? x : norm;
  } else {
    for (double x : partial) norm += x;
    norm = norm_type == 2 ? std::sqrt(norm) : norm_type == 1 ? norm : std::pow(norm, 1 / norm_type);
  }
  KILN_CHECK(!error_if_nonfinite || std::isfinite(norm), Value, op, "the total norm of order ", norm_type,
             " of the gradients is ", norm, " (not finite); pass errorIfNonfinite: false to clip anyway");
  KILN_DISPATCH_FLOAT(total.dtype, op, { *total.data<scalar_t>() = scalar_t(norm); });
  const double coef = max_norm / (norm + 1e-6);
  // As PyTorch: a NaN total scales by NaN, so the failure shows in the parameters instead of hiding.
  if (coef >= 1) return;
  parallel_for(nb, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      const Block& blk = blocks[i];
      KILN_DISPATCH_FLOAT(blk.t->dtype, op, {
        scalar_t* x = blk.t->data<scalar_t>();
        const scalar_t c = scalar_t(coef);
        for (int64_t k = blk.begin; k < blk.end; k++) x[k] *= c;
      });
    }
  });
}

}  // namespace cpu
}  // namespace kiln
