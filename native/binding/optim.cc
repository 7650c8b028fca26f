// Binding for the fused optimizer kernels: sgdStep, adamStep (Adam and AdamW) and clipGradNorm.
// Options arrive as one plain object so that call sites name every coefficient.
#include "../cpu/optim.h"
#include "common.h"
#ifdef KILN_CUDA
#include "../cuda/optim.h"
#endif

namespace kiln::binding {

static Napi::Object options_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  KILN_CHECK(i < info.Length() && info[i].IsObject(), Value, op, "argument 'options' must be an object");
  return info[i].As<Napi::Object>();
}

static double num_opt(const Napi::Object& o, const char* key, const char* op) {
  Napi::Value v = o.Get(key);
  KILN_CHECK(v.IsNumber(), Value, op, "option '", key, "' must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

static bool bool_opt(const Napi::Object& o, const char* key, const char* op) {
  Napi::Value v = o.Get(key);
  KILN_CHECK(v.IsBoolean(), Value, op, "option '", key, "' must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// sgdStep(param, grad, momentumBuffer | null, {lr, momentum, dampening, weightDecay, nesterov, maximize, firstStep})
static Napi::Value sgd_step(const Napi::CallbackInfo& info) {
  const char* op = "sgdStep";
  Tensor& p = tensor_arg(info, 0, op, "param");
  Tensor& g = tensor_arg(info, 1, op, "grad");
  Tensor* buf = optional_tensor_arg(info, 2, op, "momentumBuffer");
  Napi::Object js = options_arg(info, 3, op);
  SgdOptions o;
  o.lr = num_opt(js, "lr", op);
  o.momentum = num_opt(js, "momentum", op);
  o.dampening = num_opt(js, "dampening", op);
  o.weight_decay = num_opt(js, "weightDecay", op);
  o.nesterov = bool_opt(js, "nesterov", op);
  o.maximize = bool_opt(js, "maximize", op);
  o.first_step = bool_opt(js, "firstStep", op);
  KILN_ON_DEVICE(op, p.device(), cpu::sgd_step(p, g, buf, o), cuda::sgd_step(p, g, buf, o));
  return info.Env().Undefined();
}

// adamStep(param, grad, expAvg, expAvgSq, maxExpAvgSq | null,
//          {lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2Sqrt, decoupled, maximize})
static Napi::Value adam_step(const Napi::CallbackInfo& info) {
  const char* op = "adamStep";
  Tensor& p = tensor_arg(info, 0, op, "param");
  Tensor& g = tensor_arg(info, 1, op, "grad");
  Tensor& m = tensor_arg(info, 2, op, "expAvg");
  Tensor& v = tensor_arg(info, 3, op, "expAvgSq");
  Tensor* vmax = optional_tensor_arg(info, 4, op, "maxExpAvgSq");
  Napi::Object js = options_arg(info, 5, op);
  AdamOptions o;
  o.lr = num_opt(js, "lr", op);
  o.beta1 = num_opt(js, "beta1", op);
  o.beta2 = num_opt(js, "beta2", op);
  o.eps = num_opt(js, "eps", op);
  o.weight_decay = num_opt(js, "weightDecay", op);
  o.bias_correction1 = num_opt(js, "biasCorrection1", op);
  o.bias_correction2_sqrt = num_opt(js, "biasCorrection2Sqrt", op);
  o.decoupled = bool_opt(js, "decoupled", op);
  o.maximize = bool_opt(js, "maximize", op);
  KILN_ON_DEVICE(op, p.device(), cpu::adam_step(p, g, m, v, vmax, o), cuda::adam_step(p, g, m, v, vmax, o));
  return info.Env().Undefined();
}

// clipGradNorm(grads[], maxNorm, normType, total, errorIfNonfinite): writes the total norm into the
// scalar tensor `total` and scales the grads in place when it exceeds maxNorm.
static Napi::Value clip_grad_norm(const Napi::CallbackInfo& info) {
  const char* op = "clipGradNorm";
  KILN_CHECK(info.Length() > 0 && info[0].IsArray(), Value, op, "argument 'grads' must be an array of tensors");
  auto arr = info[0].As<Napi::Array>();
  std::vector<const Tensor*> grads(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) grads[i] = &tensor_of(arr.Get(i), op, str_cat("grads[", i, "]"));
  const double max_norm = number_arg(info, 1, op, "maxNorm");
  const double norm_type = number_arg(info, 2, op, "normType");
  Tensor& total = tensor_arg(info, 3, op, "total");
  const bool check = bool_arg(info, 4, op, "errorIfNonfinite");
  KILN_ON_DEVICE(op, total.device(), cpu::clip_grad_norm(grads, max_norm, norm_type, total, check),
                 cuda::clip_grad_norm(grads, max_norm, norm_type, total, check));
  return info.Env().Undefined();
}

void register_optim(Napi::Env env, Napi::Object exports) {
  KILN_EXPORT(env, exports, "sgdStep", sgd_step);
  KILN_EXPORT(env, exports, "adamStep", adam_step);
  KILN_EXPORT(env, exports, "clipGradNorm", clip_grad_norm);
}

}  // namespace kiln::binding
