// Binding for the random op family: fills from the Philox stream of (seed, offset) and fused
// dropout. Seeds and offsets arrive as BigInts (the generator state lives in lib/ops/random.ts);
// each fill returns the number of Philox blocks it consumed so the caller advances its offset.
#include <cmath>
#include "../core/philox.h"
#include "../cpu/random.h"
#include "common.h"
#ifdef KILN_CUDA
#include "../cuda/random.h"
#endif

namespace kiln::binding {

static Napi::Value blocks_value(Napi::Env env, uint64_t blocks) {
  return Napi::BigInt::New(env, blocks);
}

// The arguments of the fills: (out, seed, offset, a, b) with a and b the distribution's parameters.
struct FillArgs {
  Tensor& out;
  uint64_t seed, offset;
  double a, b;
};

static FillArgs fill_args(const Napi::CallbackInfo& info, const char* op, const char* a, const char* b) {
  return {tensor_arg(info, 0, op, "out"), u64_arg(info, 1, op, "seed"), u64_arg(info, 2, op, "offset"),
          number_arg(info, 3, op, a), number_arg(info, 4, op, b)};
}

// randUniform(out, seed, offset, low, high) -> blocks consumed
static Napi::Value rand_uniform(const Napi::CallbackInfo& info) {
  const char* op = "rand";
  auto [out, seed, offset, low, high] = fill_args(info, op, "low", "high");
  uint64_t blocks = 0;
  KILN_ON_DEVICE(op, out.device(), blocks = cpu::rand_uniform(out, seed, offset, low, high),
                 blocks = cuda::rand_uniform(out, seed, offset, low, high));
  return blocks_value(info.Env(), blocks);
}

// randNormal(out, seed, offset, mean, std) -> blocks consumed
static Napi::Value rand_normal(const Napi::CallbackInfo& info) {
  const char* op = "randn";
  auto [out, seed, offset, mean, std] = fill_args(info, op, "mean", "std");
  uint64_t blocks = 0;
  KILN_ON_DEVICE(op, out.device(), blocks = cpu::rand_normal(out, seed, offset, mean, std),
                 blocks = cuda::rand_normal(out, seed, offset, mean, std));
  return blocks_value(info.Env(), blocks);
}

// randInt(out, seed, offset, low, high) -> blocks consumed
static Napi::Value rand_int(const Napi::CallbackInfo& info) {
  const char* op = "randint";
  auto [out, seed, offset, lowf, highf] = fill_args(info, op, "low", "high");
  KILN_CHECK(lowf == std::floor(lowf) && highf == std::floor(highf) && std::fabs(lowf) <= 9007199254740991.0 &&
                 std::fabs(highf) <= 9007199254740991.0,
             Value, op, "low and high must be safe integers, got ", lowf, " and ", highf);
  const int64_t low = int64_t(lowf), high = int64_t(highf);
  KILN_CHECK(low < high, Value, op, "needs low < high, got low ", low, ", high ", high);
  const uint64_t range = uint64_t(high - low);
  uint64_t blocks = 0;
  KILN_ON_DEVICE(op, out.device(), blocks = cpu::rand_int(out, seed, offset, low, range),
                 blocks = cuda::rand_int(out, seed, offset, low, range));
  return blocks_value(info.Env(), blocks);
}

// dropout(x, p, seed, offset, out, mask) -> blocks consumed
static Napi::Value dropout(const Napi::CallbackInfo& info) {
  const char* op = "dropout";
  Tensor& x = tensor_arg(info, 0, op, "x");
  double p = number_arg(info, 1, op, "p");
  uint64_t seed = u64_arg(info, 2, op, "seed"), offset = u64_arg(info, 3, op, "offset");
  Tensor& out = tensor_arg(info, 4, op, "out");
  Tensor& mask = tensor_arg(info, 5, op, "mask");
  check_same_device(op, {&x, &out, &mask});
  uint64_t blocks = 0;
  KILN_ON_DEVICE(op, x.device(), blocks = cpu::dropout_forward(x, p, seed, offset, out, mask),
                 blocks = cuda::dropout_forward(x, p, seed, offset, out, mask));
  return blocks_value(info.Env(), blocks);
}

// dropoutBackward(grad, mask, scale, out)
static Napi::Value dropout_backward(const Napi::CallbackInfo& info) {
  const char* op = "dropout_backward";
  Tensor& grad = tensor_arg(info, 0, op, "grad");
  Tensor& mask = tensor_arg(info, 1, op, "mask");
  double scale = number_arg(info, 2, op, "scale");
  Tensor& out = tensor_arg(info, 3, op, "out");
  check_same_device(op, {&grad, &mask, &out});
  KILN_ON_DEVICE(op, grad.device(), cpu::dropout_backward(grad, mask, scale, out),
                 cuda::dropout_backward(grad, mask, scale, out));
  return info.Env().Undefined();
}

// philox(counter: number[4], key: number[2]) -> number[4]: one raw Philox4x32-10 block, for
// known-answer tests of the generator every backend shares.
static Napi::Value philox(const Napi::CallbackInfo& info) {
  const char* op = "philox";
  Shape c = shape_arg(info, 0, op, "counter"), k = shape_arg(info, 1, op, "key");
  KILN_CHECK(c.size() == 4 && k.size() == 2, Value, op, "needs 4 counter words and 2 key words");
  for (int64_t v : c) KILN_CHECK(v >= 0 && v <= 0xffffffffll, Value, op, "counter words must be 32-bit, got ", v);
  for (int64_t v : k) KILN_CHECK(v >= 0 && v <= 0xffffffffll, Value, op, "key words must be 32-bit, got ", v);
  PhiloxBlock r = philox4x32_10({{uint32_t(c[0]), uint32_t(c[1]), uint32_t(c[2]), uint32_t(c[3])}}, uint32_t(k[0]),
                                uint32_t(k[1]));
  auto out = Napi::Array::New(info.Env(), 4);
  for (uint32_t i = 0; i < 4; i++) out.Set(i, Napi::Number::New(info.Env(), double(r.w[i])));
  return out;
}

void register_random(Napi::Env env, Napi::Object exports) {
  KILN_EXPORT(env, exports, "randUniform", rand_uniform);
  KILN_EXPORT(env, exports, "randNormal", rand_normal);
  KILN_EXPORT(env, exports, "randInt", rand_int);
  KILN_EXPORT(env, exports, "dropout", dropout);
  KILN_EXPORT(env, exports, "dropoutBackward", dropout_backward);
  KILN_EXPORT(env, exports, "philox", philox);
}

}  // namespace kiln::binding
