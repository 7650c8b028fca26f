// Binding for the random family (native/ops/random.h): fills from the Philox stream of (seed, offset)
// and fused dropout. Seeds and offsets arrive as BigInts (the generator state lives in
// lib/ops/random.ts); each fill returns the number of Philox blocks it consumed so the caller advances
// its offset. Also philox, one raw block, for known-answer tests of the generator.
#include "../core/philox.h"
#include "../ops/random.h"
#include "op_table.h"

namespace kiln::binding {

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
  using namespace ops;
  KILN_KERNEL(env, exports, "randUniform", "rand", RandUniform, rand_uniform, "out seed offset low high",
              kRandFloatDTypes, kRandFloatDTypes);
  KILN_KERNEL(env, exports, "randNormal", "randn", RandNormal, rand_normal, "out seed offset mean std",
              kRandFloatDTypes, kRandFloatDTypes);
  KILN_KERNEL(env, exports, "randInt", "randint", RandInt, rand_int, "out seed offset low high", kRandIntDTypes,
              kRandIntDTypes);
  KILN_KERNEL(env, exports, "dropout", "dropout", Dropout, dropout_forward, "x p seed offset out mask",
              kRandFloatDTypes, kRandFloatDTypes);
  KILN_KERNEL(env, exports, "dropoutBackward", "dropout_backward", DropoutBackward, dropout_backward,
              "grad mask scale out", kRandFloatDTypes, kRandFloatDTypes);
  KILN_EXPORT(env, exports, "philox", philox);
}

}  // namespace kiln::binding
