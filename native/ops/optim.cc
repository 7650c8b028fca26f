// The optim family's argument checks (native/ops/optim.h), run by both backends before any kernel:
// the updates and clipping passes read and write raw contiguous memory in one pass, so every operand's
// layout, dtype and device is settled here.
#include "optim.h"

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

// param floating and contiguous; every operand shaped like it, on its device, contiguous, in its
// dtype, and no two of them (param included) sharing memory: each is read and written in one pass.
static void check_update(const char* op, const Tensor& param, const std::vector<Operand>& ops) {
  KILN_CHECK(kOptimDTypes.has(param.dtype), DType, op, "parameters must be floating point, got ", dtype_name(param.dtype));
  KILN_CHECK(param.is_contiguous(), Value, op, "the parameter of shape ", shape_str(param.shape), " is not contiguous");
  for (size_t i = 0; i < ops.size(); i++) {
    const Tensor& t = *ops[i].t;
    const char* name = ops[i].name;
    KILN_CHECK(t.dtype == ops[i].dtype, DType, op, name, " is ", dtype_name(t.dtype), " but must be ",
               dtype_name(ops[i].dtype), " for a ", dtype_name(param.dtype), " parameter");
    KILN_CHECK(t.shape == param.shape, Shape, op, name, " has shape ", shape_str(t.shape), " but the parameter has shape ",
               shape_str(param.shape));
    KILN_CHECK(t.device() == param.device(), Device, op, name, " is on another device than the parameter");
    KILN_CHECK(t.is_contiguous(), Value, op, name, " of shape ", shape_str(t.shape), " is not contiguous");
    KILN_CHECK(!overlaps(t, param), Value, op, name, " overlaps the parameter in memory");
    for (size_t j = 0; j < i; j++)
      KILN_CHECK(!overlaps(t, *ops[j].t), Value, op, ops[j].name, " and ", name, " overlap in memory");
  }
}

SgdOptions check_sgd_step(const Tensor& param, const Tensor& grad, const Tensor* momentum_buf, double lr,
                          double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
                          bool first_step) {
  const char* op = "sgdStep";
  KILN_CHECK((momentum_buf != nullptr) == (momentum != 0), Value, op,
             "a momentum buffer is needed exactly when momentum is not 0");
  std::vector<Operand> ops{{&grad, "grad", param.dtype}};
  if (momentum_buf) ops.push_back({momentum_buf, "momentumBuffer", state_dtype(param.dtype)});
  check_update(op, param, ops);
  return {lr, momentum, dampening, weight_decay, nesterov, maximize, first_step};
}

AdamOptions check_adam_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                            const Tensor* max_exp_avg_sq, double lr, double beta1, double beta2, double eps,
                            double weight_decay, double bias_correction1, double bias_correction2_sqrt,
                            bool decoupled, bool maximize) {
  const char* op = "adamStep";
  KILN_CHECK(bias_correction1 > 0 && bias_correction2_sqrt > 0, Value, op, "bias corrections must be positive, got ",
             bias_correction1, " and ", bias_correction2_sqrt);
  const DType s = state_dtype(param.dtype);
  std::vector<Operand> ops{{&grad, "grad", param.dtype}, {&exp_avg, "expAvg", s}, {&exp_avg_sq, "expAvgSq", s}};
  if (max_exp_avg_sq) ops.push_back({max_exp_avg_sq, "maxExpAvgSq", s});
  check_update(op, param, ops);
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
