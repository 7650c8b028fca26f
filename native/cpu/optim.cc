// CPU fused optimizer kernels and gradient-clipping passes (native/ops/optim.h). Each update reads
// and writes every operand once, in parallel chunks over contiguous memory (one parallel loop over
// every parameter's fixed blocks, the same for one parameter as for many, so the single and
// multi-tensor calls compute every element identically); bfloat16 and float16
// parameters are computed in float32 against float32 state and only the new value is rounded. The
// norm partial sums fixed-size blocks in a fixed order, so it does not depend on the thread count.
#include "../ops/optim.h"
#include <algorithm>
#include <cmath>
#include <type_traits>
#include "../core/parallel.h"

namespace kiln::cpu {

using ops::TensorList;

namespace {

// What an update of a T parameter computes in, and the element type of its state.
template <typename T>
using compute_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// One chunk of the SGD update. The options that change the loop body are template parameters (the
// shared element function's branches fold away) so that each variant is a straight loop the
// compiler can vectorize.
template <typename T, bool kDecay, bool kMomentum, bool kNesterov>
void sgd_chunk(T* p, const T* g, compute_t<T>* buf, int64_t b, int64_t e, const ops::SgdCoefs<compute_t<T>>& c) {
  using C = compute_t<T>;
  C unused = 0;
  for (int64_t i = b; i < e; i++)
    p[i] = T(ops::sgd_element(C(p[i]), C(g[i]), kMomentum ? buf[i] : unused, c, kDecay, kMomentum, kNesterov));
}

template <typename T>
using SgdChunk = void (*)(T*, const T*, compute_t<T>*, int64_t, int64_t, const ops::SgdCoefs<compute_t<T>>&);

template <typename T>
SgdChunk<T> sgd_chunk_for(const ops::SgdOptions& o, bool momentum) {
  const bool decay = o.weight_decay != 0;
  return !momentum    ? (decay ? sgd_chunk<T, true, false, false> : sgd_chunk<T, false, false, false>)
         : o.nesterov ? (decay ? sgd_chunk<T, true, true, true> : sgd_chunk<T, false, true, true>)
                      : (decay ? sgd_chunk<T, true, true, false> : sgd_chunk<T, false, true, false>);
}

// One chunk of the Adam update (see sgd_chunk for the template parameters).
template <typename T, bool kL2, bool kAmsgrad>
void adam_chunk(T* p, const T* g, compute_t<T>* m, compute_t<T>* v, compute_t<T>* vmax, int64_t b, int64_t e,
                const ops::AdamCoefs<compute_t<T>>& c) {
  using C = compute_t<T>;
  C unused = 0;
  for (int64_t i = b; i < e; i++)
    p[i] = T(ops::adam_element(C(p[i]), C(g[i]), m[i], v[i], kAmsgrad ? vmax[i] : unused, c, kL2, kAmsgrad));
}

template <typename T>
using AdamChunk = void (*)(T*, const T*, compute_t<T>*, compute_t<T>*, compute_t<T>*, int64_t, int64_t,
                           const ops::AdamCoefs<compute_t<T>>&);

template <typename T>
AdamChunk<T> adam_chunk_for(const ops::AdamOptions& o, bool amsgrad) {
  const bool l2 = !o.decoupled && o.weight_decay != 0;
  return l2 ? (amsgrad ? adam_chunk<T, true, true> : adam_chunk<T, true, false>)
            : (amsgrad ? adam_chunk<T, false, true> : adam_chunk<T, false, false>);
}

// ---------------------------------------------------------------------------------------------
// Passes over many tensors (the multi-tensor updates, both clipping passes) split them into the same
// fixed blocks, run in parallel.

constexpr int64_t kBlock = 1 << 15;

struct Block {
  const Tensor* t;
  size_t index;  // of t in the list
  int64_t begin, end;
};

struct Blocks {
  std::vector<Block> list;
  int64_t grain;  // blocks per task: all in one when there is too little work to share
};

Blocks split_blocks(const std::vector<const Tensor*>& grads) {
  Blocks b;
  int64_t elems = 0;
  for (size_t i = 0; i < grads.size(); i++) {
    const int64_t n = grads[i]->numel();
    for (int64_t s = 0; s < n; s += kBlock) b.list.push_back({grads[i], i, s, std::min(n, s + kBlock)});
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

// The updates, of one parameter or many: one parallel loop over (parameter, block) pairs running the
// chunk functions.
template <typename T>
void sgd_multi_typed(const TensorList& params, const TensorList& grads, const TensorList& bufs, double lr,
                     const ops::SgdOptions& o) {
  using C = compute_t<T>;
  const auto chunk = sgd_chunk_for<T>(o, !bufs.empty());
  const auto c = ops::sgd_coefs<C>(lr, o);
  const Blocks blocks = split_blocks(params);
  parallel_for(int64_t(blocks.list.size()), blocks.grain, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; k++) {
      const Block& blk = blocks.list[k];
      const size_t i = blk.index;
      chunk(params[i]->data<T>(), grads[i]->data<T>(), bufs.empty() ? nullptr : bufs[i]->data<C>(), blk.begin,
            blk.end, c);
    }
  });
}

template <typename T>
void adam_multi_typed(const TensorList& params, const TensorList& grads, const TensorList& m, const TensorList& v,
                      const TensorList& vmax, const std::vector<ops::AdamCoefs<compute_t<T>>>& coefs,
                      const ops::AdamOptions& o) {
  using C = compute_t<T>;
  const auto chunk = adam_chunk_for<T>(o, !vmax.empty());
  const Blocks blocks = split_blocks(params);
  parallel_for(int64_t(blocks.list.size()), blocks.grain, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; k++) {
      const Block& blk = blocks.list[k];
      const size_t i = blk.index;
      chunk(params[i]->data<T>(), grads[i]->data<T>(), m[i]->data<C>(), v[i]->data<C>(),
            vmax.empty() ? nullptr : vmax[i]->data<C>(), blk.begin, blk.end, coefs[coefs.size() == 1 ? 0 : i]);
    }
  });
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
  // The multi-tensor update over one parameter (one path computes every element).
  const TensorList bufs = momentum_buf ? TensorList{momentum_buf} : TensorList{};
  KILN_DISPATCH_FLOATING(param.dtype, "sgdStep", { sgd_multi_typed<scalar_t>({&param}, {&grad}, bufs, o.lr, o); });
}

void adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
               const Tensor* max_exp_avg_sq, double lr, double beta1, double beta2, double eps, double weight_decay,
               double bias_correction1, double bias_correction2_sqrt, bool decoupled, bool maximize) {
  const ops::AdamOptions o =
      ops::check_adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                           bias_correction1, bias_correction2_sqrt, decoupled, maximize);
  const TensorList vmax = max_exp_avg_sq ? TensorList{max_exp_avg_sq} : TensorList{};
  KILN_DISPATCH_FLOATING(param.dtype, "adamStep", {
    using C = compute_t<scalar_t>;
    adam_multi_typed<scalar_t>({&param}, {&grad}, {&exp_avg}, {&exp_avg_sq}, vmax,
                               {ops::adam_coefs<C>(o.lr, o.bias_correction1, o.bias_correction2_sqrt, o)}, o);
  });
}

void sgd_step_multi(const TensorList& params, const TensorList& grads, const TensorList& momentum_bufs,
                    const Tensor* lr_device, double lr, double momentum, double dampening, double weight_decay,
                    bool nesterov, bool maximize, bool first_step) {
  const char* op = "sgdStepMulti";
  const ops::SgdOptions o = ops::check_sgd_step_multi(params, grads, momentum_bufs, lr_device, lr, momentum, dampening,
                                                      weight_decay, nesterov, maximize, first_step);
  if (params.empty()) return;
  const double rate = lr_device ? read_scalar(*lr_device, op) : o.lr;
  KILN_DISPATCH_FLOATING(params[0]->dtype, op, { sgd_multi_typed<scalar_t>(params, grads, momentum_bufs, rate, o); });
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
  KILN_DISPATCH_FLOATING(params[0]->dtype, op, {
    using C = compute_t<scalar_t>;
    // One set of coefficients from the host's values, or one per parameter from its step count.
    std::vector<ops::AdamCoefs<C>> coefs;
    if (!lr_device) {
      coefs.push_back(ops::adam_coefs<C>(o.lr, o.bias_correction1, o.bias_correction2_sqrt, o));
    } else {
      const double rate = read_scalar(*lr_device, op);
      for (const Tensor* s : steps) {
        double bc1, bc2_sqrt;
        ops::adam_bias_corrections(o.beta1, o.beta2, *s->data<double>() + 1, bc1, bc2_sqrt);
        coefs.push_back(ops::adam_coefs<C>(rate, bc1, bc2_sqrt, o));
      }
    }
    adam_multi_typed<scalar_t>(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, coefs, o);
    for (const Tensor* s : steps) *s->data<double>() += 1;
  });
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
