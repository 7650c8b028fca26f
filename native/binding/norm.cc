// Binding for the norm family: layer normalization forward and backward. Outputs are allocated by
// lib/ops/norm.ts and passed in (null for gradients not wanted); the kernels check every shape.
#include "../cpu/norm.h"
#include "common.h"
#ifdef KILN_CUDA
#include "../cuda/norm.h"
#endif

namespace kiln::binding {

// layerNormForward(x, weight|null, bias|null, normDims, eps, y, mean, rstd)
static Napi::Value layer_norm_forward(const Napi::CallbackInfo& info) {
  const char* op = "layerNorm";
  Tensor& x = tensor_arg(info, 0, op, "x");
  Tensor* w = optional_tensor_arg(info, 1, op, "weight");
  Tensor* b = optional_tensor_arg(info, 2, op, "bias");
  int64_t nd = int_arg(info, 3, op, "normDims");
  double eps = number_arg(info, 4, op, "eps");
  Tensor& y = tensor_arg(info, 5, op, "y");
  Tensor& mean = tensor_arg(info, 6, op, "mean");
  Tensor& rstd = tensor_arg(info, 7, op, "rstd");
  check_same_device(op, {&x, w, b, &y, &mean, &rstd});
  KILN_ON_DEVICE(op, x.device(), cpu::layer_norm_forward(x, w, b, nd, eps, y, mean, rstd),
                 cuda::layer_norm_forward(x, w, b, nd, eps, y, mean, rstd));
  return info.Env().Undefined();
}

// layerNormBackward(gy, x, mean, rstd, weight|null, normDims, gx|null, gweight|null, gbias|null)
static Napi::Value layer_norm_backward(const Napi::CallbackInfo& info) {
  const char* op = "layerNorm backward";
  Tensor& gy = tensor_arg(info, 0, op, "gy");
  Tensor& x = tensor_arg(info, 1, op, "x");
  Tensor& mean = tensor_arg(info, 2, op, "mean");
  Tensor& rstd = tensor_arg(info, 3, op, "rstd");
  Tensor* w = optional_tensor_arg(info, 4, op, "weight");
  int64_t nd = int_arg(info, 5, op, "normDims");
  Tensor* gx = optional_tensor_arg(info, 6, op, "gx");
  Tensor* gw = optional_tensor_arg(info, 7, op, "gweight");
  Tensor* gb = optional_tensor_arg(info, 8, op, "gbias");
  check_same_device(op, {&gy, &x, &mean, &rstd, w, gx, gw, gb});
  KILN_ON_DEVICE(op, x.device(), cpu::layer_norm_backward(gy, x, mean, rstd, w, nd, gx, gw, gb),
                 cuda::layer_norm_backward(gy, x, mean, rstd, w, nd, gx, gw, gb));
  return info.Env().Undefined();
}

void register_norm(Napi::Env env, Napi::Object exports) {
  KILN_EXPORT(env, exports, "layerNormForward", layer_norm_forward);
  KILN_EXPORT(env, exports, "layerNormBackward", layer_norm_backward);
}

}  // namespace kiln::binding
