// The optim family's argument checks (native/ops/optim.h), one-parameter and multi-tensor, run by both
// backends before any kernel: the updates and clipping passes read and write raw contiguous memory in
// one pass, so every operand's layout, dtype and device is settled here. They run on every optimizer
// step, so nothing is formatted unless a check fails.
#include "optim.h"
#include <algorithm>
#include <functional>
#include <initializer_list>
#include <ostream>
#include <utility>

namespace kiln::ops {

static bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.storage != b.storage || a.numel() == 0 || b.numel() == 0) return false;
  return a.offset < b.offset + b.numel() && b.offset < a.offset + a.numel();
}

// An operand of a parameter update: named, and the dtype it must have.
struct Operand {
  const Tensor* t;
  const char* name;
  DType dtype;
};

// Which parameter a message is about: "parameter 3: " in a multi-tensor call, nothing for one parameter
// (index -1). Written only into a failing check's message.
struct ParamIndex {
  int64_t i;
};
static std::ostream& operator<<(std::ostream& o, ParamIndex p) {
  return p.i < 0 ? o : o << "parameter " << p.i << ": ";
}

// param floating and contiguous; every operand shaped like it, on its device, contiguous, in its
// dtype, and none sharing memory with param or (pairwise, for one parameter: a multi-tensor call's
// check_multi covers all its operands at once) with another: each is read and written in one pass.
static void check_update(const char* op, ParamIndex where, const Tensor& param, const std::vector<Operand>& ops,
                         bool pairwise) {
  KILN_CHECK(kOptimDTypes.has(param.dtype), DType, op, where, "parameters must be floating point, got ",
             dtype_name(param.dtype));
  KILN_CHECK(param.is_contiguous(), Value, op, where, "the parameter of shape ", shape_str(param.shape),
             " is not contiguous");
  for (size_t i = 0; i < ops.size(); i++) {
    const Tensor& t = *ops[i].t;
    const char* name = ops[i].name;
    KILN_CHECK(t.dtype == ops[i].dtype, DType, op, where, name, " is ", dtype_name(t.dtype), " but must be ",
               dtype_name(ops[i].dtype), " for a ", dtype_name(param.dtype), " parameter");
    KILN_CHECK(t.shape == param.shape, Shape, op, where, name, " has shape ", shape_str(t.shape),
               " but the parameter has shape ", shape_str(param.shape));
    KILN_CHECK(t.device() == param.device(), Device, op, where, name, " is on another device than the parameter");
    KILN_CHECK(t.is_contiguous(), Value, op, where, name, " of shape ", shape_str(t.shape), " is not contiguous");
    KILN_CHECK(!overlaps(t, param), Value, op, where, name, " overlaps the parameter in memory");
    for (size_t j = 0; pairwise && j < i; j++)
      KILN_CHECK(!overlaps(t, *ops[j].t), Value, op, where, ops[j].name, " and ", name, " overlap in memory");
  }
}

static void check_sgd_coefficients(const char* op, bool has_buffer, double momentum) {
  KILN_CHECK(has_buffer == (momentum != 0), Value, op, "a momentum buffer is needed exactly when momentum is not 0");
}

static std::vector<Operand> sgd_operands(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf) {
  std::vector<Operand> ops{{&grad, "grad", param.dtype}};
  if (momentum_buf) ops.push_back({momentum_buf, "momentumBuffer", state_dtype(param.dtype)});
  return ops;
}

static void check_bias_corrections(const char* op, double bias_correction1, double bias_correction2_sqrt) {
  KILN_CHECK(bias_correction1 > 0 && bias_correction2_sqrt > 0, Value, op, "bias corrections must be positive, got ",
             bias_correction1, " and ", bias_correction2_sqrt);
}

static std::vector<Operand> adam_operands(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                                          const Tensor& exp_avg_sq, const Tensor* max_exp_avg_sq) {
  const DType s = state_dtype(param.dtype);
  std::vector<Operand> ops{{&grad, "grad", param.dtype}, {&exp_avg, "expAvg", s}, {&exp_avg_sq, "expAvgSq", s}};
  if (max_exp_avg_sq) ops.push_back({max_exp_avg_sq, "maxExpAvgSq", s});
  return ops;
}

SgdOptions check_sgd_step(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, double lr,
                          double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
                          bool first_step) {
  const char* op = "sgdStep";
  check_sgd_coefficients(op, momentum_buf != nullptr, momentum);
  check_update(op, {-1}, param, sgd_operands(param, grad, momentum_buf), true);
  return {lr, momentum, dampening, weight_decay, nesterov, maximize, first_step};
}

AdamOptions check_adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                            const Tensor* max_exp_avg_sq, double lr, double beta1, double beta2, double eps,
                            double weight_decay, double bias_correction1, double bias_correction2_sqrt,
                            bool decoupled, bool maximize) {
  const char* op = "adamStep";
  check_bias_corrections(op, bias_correction1, bias_correction2_sqrt);
  check_update(op, {-1}, param, adam_operands(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq), true);
  return {lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2_sqrt, decoupled, maximize};
}

// A list of a multi-tensor call: one entry per parameter, or (optional) none.
static void check_list_length(const char* op, const char* name, const TensorList& list, size_t n, bool optional) {
  KILN_CHECK(list.size() == n || (optional && list.empty()), Value, op, name, " has ", list.size(),
             " tensors but there are ", n, " parameters", optional ? " (an absent state is an empty list)" : "");
}

// The parameters share the first one's dtype; then no two operands of the whole call share memory, of
// one parameter or of two (lists: each named list of the call).
static void check_multi(const char* op, const TensorList& params,
                        std::initializer_list<std::pair<const TensorList*, const char*>> lists) {
  struct Span {
    const void* storage;
    int64_t begin, end;
    size_t list, index;
  };
  std::vector<Span> spans;
  for (size_t i = 0; i < params.size(); i++) {
    KILN_CHECK(params[i]->dtype == params[0]->dtype, DType, op, "parameter ", i, " is ",
               dtype_name(params[i]->dtype), " but parameter 0 is ", dtype_name(params[0]->dtype),
               ": one call updates parameters of one dtype");
  }
  std::vector<const char*> names;
  for (const auto& [list, name] : lists) {
    const size_t l = names.size();
    names.push_back(name);
    for (size_t i = 0; i < list->size(); i++) {
      const Tensor& t = *(*list)[i];
      const int64_t begin = t.offset * int64_t(t.itemsize());  // bytes: the lists hold several dtypes
      if (t.numel() > 0) spans.push_back({t.storage.get(), begin, begin + t.numel() * int64_t(t.itemsize()), l, i});
    }
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.storage != b.storage ? std::less<const void*>()(a.storage, b.storage) : a.begin < b.begin;
  });
  for (size_t k = 1; k < spans.size(); k++) {
    const Span &a = spans[k - 1], &b = spans[k];
    KILN_CHECK(a.storage != b.storage || a.end <= b.begin, Value, op, names[a.list], "[", a.index, "] and ",
               names[b.list], "[", b.index, "] overlap in memory");
  }
}

// lr_device: a one-element float32/float64 tensor. steps (Adam): one one-element float64 tensor per
// parameter exactly when lr_device is given.
static void check_device_scalars(const char* op, const Tensor* lr_device) {
  if (!lr_device) return;
  KILN_CHECK(lr_device->dtype == DType::Float32 || lr_device->dtype == DType::Float64, DType, op,
             "the learning rate tensor must be float32 or float64, got ", dtype_name(lr_device->dtype));
  KILN_CHECK(lr_device->numel() == 1, Shape, op, "the learning rate tensor must have one element, got shape ",
             shape_str(lr_device->shape));
}

SgdOptions check_sgd_step_multi(const TensorList& params, const TensorList& grads, const TensorList& momentum_bufs,
                                const Tensor* lr_device, double lr, double momentum, double dampening,
                                double weight_decay, bool nesterov, bool maximize, bool first_step) {
  const char* op = "sgdStepMulti";
  const size_t n = params.size();
  check_list_length(op, "grads", grads, n, false);
  check_list_length(op, "momentumBuffers", momentum_bufs, n, true);
  if (n) check_sgd_coefficients(op, !momentum_bufs.empty(), momentum);
  check_device_scalars(op, lr_device);
  for (size_t i = 0; i < n; i++)
    check_update(op, {int64_t(i)}, *params[i],
                 sgd_operands(*params[i], *grads[i], momentum_bufs.empty() ? nullptr : momentum_bufs[i]), false);
  check_multi(op, params, {{&params, "params"}, {&grads, "grads"}, {&momentum_bufs, "momentumBuffers"}});
  return {lr, momentum, dampening, weight_decay, nesterov, maximize, first_step};
}

AdamOptions check_adam_step_multi(const TensorList& params, const TensorList& grads, const TensorList& exp_avgs,
                                  const TensorList& exp_avg_sqs, const TensorList& max_exp_avg_sqs,
                                  const TensorList& steps, const Tensor* lr_device, double lr, double beta1,
                                  double beta2, double eps, double weight_decay, double bias_correction1,
                                  double bias_correction2_sqrt, bool decoupled, bool maximize) {
  const char* op = "adamStepMulti";
  const size_t n = params.size();
  check_list_length(op, "grads", grads, n, false);
  check_list_length(op, "expAvgs", exp_avgs, n, false);
  check_list_length(op, "expAvgSqs", exp_avg_sqs, n, false);
  check_list_length(op, "maxExpAvgSqs", max_exp_avg_sqs, n, true);
  check_device_scalars(op, lr_device);
  if (lr_device) {
    check_list_length(op, "steps", steps, n, false);
    for (size_t i = 0; i < n; i++)
      KILN_CHECK(steps[i]->dtype == DType::Float64 && steps[i]->numel() == 1, Value, op, "steps[", i,
                 "] must be a one-element float64 tensor, got ", dtype_name(steps[i]->dtype), " of shape ",
                 shape_str(steps[i]->shape));
  } else {
    KILN_CHECK(steps.empty(), Value, op, "steps are read on the device only with a learning rate tensor");
    check_bias_corrections(op, bias_correction1, bias_correction2_sqrt);
  }
  for (size_t i = 0; i < n; i++)
    check_update(op, {int64_t(i)}, *params[i],
                 adam_operands(*params[i], *grads[i], *exp_avgs[i], *exp_avg_sqs[i],
                               max_exp_avg_sqs.empty() ? nullptr : max_exp_avg_sqs[i]),
                 false);
  check_multi(op, params,
              {{&params, "params"}, {&grads, "grads"}, {&exp_avgs, "expAvgs"}, {&exp_avg_sqs, "expAvgSqs"},
               {&max_exp_avg_sqs, "maxExpAvgSqs"}, {&steps, "steps"}});
  return {lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2_sqrt, decoupled, maximize};
}

// A one-element float32/float64 tensor holding a norm, partial or coefficient.
static void check_scalar(const char* op, const char* name, const Tensor& t) {
  KILN_CHECK(t.dtype == DType::Float32 || t.dtype == DType::Float64, DType, op, name,
             " must be float32 or float64, got ", dtype_name(t.dtype));
  KILN_CHECK(t.numel() == 1, Shape, op, name, " must have one element, got shape ", shape_str(t.shape));
}

static void check_grads(const char* op, const std::vector<const Tensor*>& grads, bool disjoint) {
  for (size_t i = 0; i < grads.size(); i++) {
    const Tensor& g = *grads[i];
    KILN_CHECK(kOptimDTypes.has(g.dtype), DType, op, "gradient ", i, " must be floating point, got ", dtype_name(g.dtype));
    KILN_CHECK(g.is_contiguous(), Value, op, "gradient ", i, " of shape ", shape_str(g.shape), " is not contiguous");
    if (!disjoint) continue;
    for (size_t j = 0; j < i; j++)
      KILN_CHECK(!overlaps(g, *grads[j]), Value, op, "gradients ", j, " and ", i, " overlap in memory");
  }
}

static void check_norm_type(const char* op, double norm_type) {
  KILN_CHECK(norm_type > 0, Value, op, "norm type must be positive, got ", norm_type);
}

void check_grad_norm_partial(const std::vector<const Tensor*>& grads, double norm_type, const Tensor& out) {
  const char* op = "gradNormPartial";
  check_norm_type(op, norm_type);
  check_scalar(op, "the output", out);
  check_grads(op, grads, false);
}

void check_clip_coefficient(const Tensor& partial, double norm_type, double max_norm, const Tensor& norm,
                            const Tensor& coef) {
  const char* op = "clipCoefficient";
  check_norm_type(op, norm_type);
  KILN_CHECK(!(max_norm < 0), Value, op, "max norm must not be negative, got ", max_norm);
  check_scalar(op, "the partial", partial);
  check_scalar(op, "the norm", norm);
  check_scalar(op, "the coefficient", coef);
}

void check_scale_grads(const std::vector<const Tensor*>& grads, const Tensor& scale) {
  const char* op = "scaleGrads";
  check_scalar(op, "the scale", scale);
  check_grads(op, grads, true);
  for (size_t i = 0; i < grads.size(); i++)
    KILN_CHECK(!overlaps(*grads[i], scale), Value, op, "gradient ", i, " overlaps the scale in memory");
}

}  // namespace kiln::ops
