// Binding for the index op family: gather, indexSelect and embedding (forward), and the in-place
// accumulations behind their gradients and scatterAdd (indexAdd, embeddingBackward, scatterAdd).
// Outputs are allocated by lib/ops/index.ts and passed in; the kernels check every index value.
#include "../cpu/index.h"
#include "common.h"
#ifdef KILN_CUDA
#include "../cuda/index.h"
#endif

namespace kiln::binding {

// The arguments shared by the functions below: (a, dim, index, b), all on one device.
struct DimIndexArgs {
  Tensor& a;
  int64_t dim;
  Tensor& index;
  Tensor& b;
};

static DimIndexArgs dim_index_args(const Napi::CallbackInfo& info, const char* op, const char* a, const char* b) {
  DimIndexArgs r{tensor_arg(info, 0, op, a), int_arg(info, 1, op, "dim"), tensor_arg(info, 2, op, "index"),
                 tensor_arg(info, 3, op, b)};
  check_same_device(op, {&r.a, &r.index, &r.b});
  return r;
}

// gather(x, dim, index, out)
static Napi::Value gather(const Napi::CallbackInfo& info) {
  const char* op = "gather";
  auto [x, dim, index, out] = dim_index_args(info, op, "x", "out");
  KILN_ON_DEVICE(op, x.device(), cpu::gather(x, dim, index, out), cuda::gather(x, dim, index, out));
  return info.Env().Undefined();
}

// indexSelect(x, dim, index, out)
static Napi::Value index_select(const Napi::CallbackInfo& info) {
  const char* op = "indexSelect";
  auto [x, dim, index, out] = dim_index_args(info, op, "x", "out");
  KILN_ON_DEVICE(op, x.device(), cpu::index_select(x, dim, index, out, op),
                 cuda::index_select(x, dim, index, out, op));
  return info.Env().Undefined();
}

// indexAdd(out, dim, index, src): out[.., index[j], ..] += src[.., j, ..] in place.
static Napi::Value index_add(const Napi::CallbackInfo& info) {
  const char* op = "indexAdd";
  auto [out, dim, index, src] = dim_index_args(info, op, "out", "src");
  KILN_ON_DEVICE(op, out.device(), cpu::index_add(out, dim, index, src, op), cuda::index_add(out, dim, index, src, op));
  return info.Env().Undefined();
}

// scatterAdd(out, dim, index, src): torch's out.scatter_add_(dim, index, src) in place.
static Napi::Value scatter_add(const Napi::CallbackInfo& info) {
  const char* op = "scatterAdd";
  auto [out, dim, index, src] = dim_index_args(info, op, "out", "src");
  KILN_ON_DEVICE(op, out.device(), cpu::scatter_add(out, dim, index, src), cuda::scatter_add(out, dim, index, src));
  return info.Env().Undefined();
}

// embedding(weight, indices, out): rows of weight picked by indices of any shape.
static Napi::Value embedding(const Napi::CallbackInfo& info) {
  const char* op = "embedding";
  Tensor& weight = tensor_arg(info, 0, op, "weight");
  Tensor& indices = tensor_arg(info, 1, op, "indices");
  Tensor& out = tensor_arg(info, 2, op, "out");
  check_same_device(op, {&weight, &indices, &out});
  KILN_ON_DEVICE(op, weight.device(), cpu::index_select(weight, 0, indices, out, op),
                 cuda::index_select(weight, 0, indices, out, op));
  return info.Env().Undefined();
}

// embeddingBackward(gradWeight, indices, grad): gradWeight[indices[j]] += grad[j] in place.
static Napi::Value embedding_backward(const Napi::CallbackInfo& info) {
  const char* op = "embedding_backward";
  Tensor& gw = tensor_arg(info, 0, op, "gradWeight");
  Tensor& indices = tensor_arg(info, 1, op, "indices");
  Tensor& grad = tensor_arg(info, 2, op, "grad");
  check_same_device(op, {&gw, &indices, &grad});
  KILN_ON_DEVICE(op, gw.device(), cpu::index_add(gw, 0, indices, grad, op), cuda::index_add(gw, 0, indices, grad, op));
  return info.Env().Undefined();
}

void register_index(Napi::Env env, Napi::Object exports) {
  KILN_EXPORT(env, exports, "gather", gather);
  KILN_EXPORT(env, exports, "indexSelect", index_select);
  KILN_EXPORT(env, exports, "embedding", embedding);
  KILN_EXPORT(env, exports, "indexAdd", index_add);
  KILN_EXPORT(env, exports, "embeddingBackward", embedding_backward);
  KILN_EXPORT(env, exports, "scatterAdd", scatter_add);
}

}  // namespace kiln::binding
