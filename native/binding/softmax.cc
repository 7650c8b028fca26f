// Binding for the softmax family: softmax / log-softmax and cross-entropy, forward and backward.
// Outputs are allocated by lib/ops/softmax.ts and passed in; the kernels check every shape.
#include "../cpu/softmax.h"
#include "common.h"
#ifdef KILN_CUDA
#include "../cuda/softmax.h"
#endif

namespace kiln::binding {

static cpu::Reduction reduction_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t r = int_arg(info, i, op, "reduction");
  KILN_CHECK(r >= 0 && r <= 2, Value, op, "reduction code must be 0 (none), 1 (sum) or 2 (mean), got ", r);
  return cpu::Reduction(r);
}

// softmaxForward(x, dim, log, y)
static Napi::Value softmax_forward(const Napi::CallbackInfo& info) {
  const bool log = bool_arg(info, 2, "softmax", "log");
  const char* op = log ? "logSoftmax" : "softmax";
  Tensor& x = tensor_arg(info, 0, op, "x");
  int64_t dim = int_arg(info, 1, op, "dim");
  Tensor& y = tensor_arg(info, 3, op, "y");
  check_same_device(op, {&x, &y});
  KILN_ON_DEVICE(op, x.device(), cpu::softmax_forward(x, dim, log, y), cuda::softmax_forward(x, dim, log, y));
  return info.Env().Undefined();
}

// softmaxBackward(y, gy, dim, log, gx)
static Napi::Value softmax_backward(const Napi::CallbackInfo& info) {
  const bool log = bool_arg(info, 3, "softmax backward", "log");
  const char* op = log ? "logSoftmax backward" : "softmax backward";
  Tensor& y = tensor_arg(info, 0, op, "y");
  Tensor& gy = tensor_arg(info, 1, op, "gy");
  int64_t dim = int_arg(info, 2, op, "dim");
  Tensor& gx = tensor_arg(info, 4, op, "gx");
  check_same_device(op, {&y, &gy, &gx});
  KILN_ON_DEVICE(op, y.device(), cpu::softmax_backward(y, gy, dim, log, gx), cuda::softmax_backward(y, gy, dim, log, gx));
  return info.Env().Undefined();
}

// crossEntropyForward(logits, target, ignoreIndex, smoothing, reduction, loss, lse, totalWeight)
static Napi::Value cross_entropy_forward(const Napi::CallbackInfo& info) {
  const char* op = "crossEntropy";
  Tensor& logits = tensor_arg(info, 0, op, "logits");
  Tensor& target = tensor_arg(info, 1, op, "target");
  int64_t ignore = int_arg(info, 2, op, "ignoreIndex");
  double smoothing = number_arg(info, 3, op, "labelSmoothing");
  cpu::Reduction red = reduction_arg(info, 4, op);
  Tensor& loss = tensor_arg(info, 5, op, "loss");
  Tensor& lse = tensor_arg(info, 6, op, "lse");
  Tensor& tw = tensor_arg(info, 7, op, "totalWeight");
  check_same_device(op, {&logits, &target, &loss, &lse, &tw});
  KILN_ON_DEVICE(op, logits.device(), cpu::cross_entropy_forward(logits, target, ignore, smoothing, red, loss, lse, tw),
                 cuda::cross_entropy_forward(logits, target, ignore, smoothing, red, loss, lse, tw));
  return info.Env().Undefined();
}

// crossEntropyBackward(logits, target, lse, totalWeight, gradLoss, ignoreIndex, smoothing, reduction, gradLogits)
static Napi::Value cross_entropy_backward(const Napi::CallbackInfo& info) {
  const char* op = "crossEntropy backward";
  Tensor& logits = tensor_arg(info, 0, op, "logits");
  Tensor& target = tensor_arg(info, 1, op, "target");
  Tensor& lse = tensor_arg(info, 2, op, "lse");
  Tensor& tw = tensor_arg(info, 3, op, "totalWeight");
  Tensor& gl = tensor_arg(info, 4, op, "gradLoss");
  int64_t ignore = int_arg(info, 5, op, "ignoreIndex");
  double smoothing = number_arg(info, 6, op, "labelSmoothing");
  cpu::Reduction red = reduction_arg(info, 7, op);
  Tensor& gx = tensor_arg(info, 8, op, "gradLogits");
  check_same_device(op, {&logits, &target, &lse, &tw, &gl, &gx});
  KILN_ON_DEVICE(op, logits.device(),
                 cpu::cross_entropy_backward(logits, target, lse, tw, gl, ignore, smoothing, red, gx),
                 cuda::cross_entropy_backward(logits, target, lse, tw, gl, ignore, smoothing, red, gx));
  return info.Env().Undefined();
}

void register_softmax(Napi::Env env, Napi::Object exports) {
  KILN_EXPORT(env, exports, "softmaxForward", softmax_forward);
  KILN_EXPORT(env, exports, "softmaxBackward", softmax_backward);
  KILN_EXPORT(env, exports, "crossEntropyForward", cross_entropy_forward);
  KILN_EXPORT(env, exports, "crossEntropyBackward", cross_entropy_backward);
}

}  // namespace kiln::binding
