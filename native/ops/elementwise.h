// The elementwise family's contract, shared by both backends: the op lists (X-macros, the one place
// op codes come from; the binding exports them to JavaScript by name), the per-element formulas both
// backends' kernels compute (host and device functions), the kernel signatures, the dtypes each
// backend takes and the argument checks every implementation runs first. Operands arrive already
// broadcast to the output's shape (stride-0 views) and already of one dtype: lib/ops/elementwise.ts
// does promotion and broadcasting. native/cpu and native/cuda implement the kernels;
// native/binding/elementwise.cc exports them.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include "../core/host_device.h"
#include "../core/tensor.h"
#if !defined(__CUDA_ARCH__)
#include "../core/vmath.h"
#endif

namespace kiln::ops {

// The type arithmetic happens in for a storage type: half types compute in float32 and bool
// (stored as uint8) in int32; the others compute in themselves. native/cuda adds the CUDA half types.
template <typename T> struct compute_type { using type = T; };
template <> struct compute_type<bf16> { using type = float; };
template <> struct compute_type<fp16> { using type = float; };
template <> struct compute_type<uint8_t> { using type = int32_t; };
template <typename T> using compute_t = typename compute_type<T>::type;

namespace ew {

// exp and tanh: the vectorizable float32 versions (core/vmath.h) on the host, the CUDA math library
// on the device.
#if defined(__CUDA_ARCH__)
using std::exp;
using std::tanh;
#else
using vm::exp;
using vm::tanh;
#endif

template <typename C> KILN_HOST_DEVICE C sigmoid(C x) { return C(1) / (C(1) + ew::exp(-x)); }

// NaN-propagating max/min (like torch.maximum): the result is NaN when either operand is.
template <typename C> KILN_HOST_DEVICE C max_nan(C a, C b) { return (a > b || a != a) ? a : b; }
template <typename C> KILN_HOST_DEVICE C min_nan(C a, C b) { return (a < b || a != a) ? a : b; }

// Integer powers by squaring (a negative exponent gives 0 unless the base is 1 or -1).
template <typename C> KILN_HOST_DEVICE C pow(C a, C b) {
  if constexpr (std::is_integral_v<C>) {
    if (b < 0) return a == 1 ? C(1) : a == -1 ? ((b & 1) ? C(-1) : C(1)) : C(0);
    C r = 1;
    while (b) {
      if (b & 1) r *= a;
      b >>= 1;
      a *= a;
    }
    return r;
  } else {
    return std::pow(a, b);
  }
}

template <typename C> KILN_HOST_DEVICE C sign(C x) { return C((C(0) < x) - (x < C(0))); }

// gelu(x) = x * Phi(x); the tanh form is PyTorch's approximate='tanh'.
constexpr double kSqrt1_2 = 0.70710678118654752440;
constexpr double kSqrt2_Pi = 0.79788456080286535588;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
template <typename C> KILN_HOST_DEVICE C gelu(C x) { return C(0.5) * x * (C(1) + std::erf(x * C(kSqrt1_2))); }
template <typename C> KILN_HOST_DEVICE C gelu_backward(C x, C g) {
  C cdf = C(0.5) * (C(1) + std::erf(x * C(kSqrt1_2)));
  C pdf = C(kInvSqrt2Pi) * ew::exp(C(-0.5) * x * x);
  return g * (cdf + x * pdf);
}
template <typename C> KILN_HOST_DEVICE C gelu_tanh(C x) {
  C inner = C(kSqrt2_Pi) * (x + C(0.044715) * x * x * x);
  return C(0.5) * x * (C(1) + ew::tanh(inner));
}
template <typename C> KILN_HOST_DEVICE C gelu_tanh_backward(C x, C g) {
  C x2 = x * x;
  C t = ew::tanh(C(kSqrt2_Pi) * (x + C(0.044715) * x2 * x));
  C dinner = C(kSqrt2_Pi) * (C(1) + C(3 * 0.044715) * x2);
  return g * (C(0.5) * (C(1) + t) + C(0.5) * x * (C(1) - t * t) * dinner);
}
template <typename C> KILN_HOST_DEVICE C silu_backward(C x, C g) {
  C s = sigmoid(x);
  return g * s * (C(1) + x * (C(1) - s));
}

}  // namespace ew
}  // namespace kiln::ops

// Unary ops with up to two scalar parameters s0, s1: X(name, dtypes, result, expression of x, s0, s1).
// dtypes: FLOAT (float32/64, bfloat16, float16), NUMERIC (FLOAT + int32/int64), ANY (NUMERIC + bool).
// result: SAME (the input's dtype) or BOOL.
#define KILN_UNARY_OPS(X)                                                         \
  X(neg, NUMERIC, SAME, -x)                                                       \
  X(exp, FLOAT, SAME, ::kiln::ops::ew::exp(x))                                    \
  X(log, FLOAT, SAME, std::log(x))                                                \
  X(log1p, FLOAT, SAME, std::log1p(x))                                            \
  X(sqrt, FLOAT, SAME, std::sqrt(x))                                              \
  X(rsqrt, FLOAT, SAME, C(1) / std::sqrt(x))                                      \
  X(square, NUMERIC, SAME, x * x)                                                 \
  X(reciprocal, FLOAT, SAME, C(1) / x)                                            \
  X(abs, NUMERIC, SAME, std::abs(x))                                              \
  X(sign, NUMERIC, SAME, ::kiln::ops::ew::sign(x))                                \
  X(sin, FLOAT, SAME, std::sin(x))                                                \
  X(cos, FLOAT, SAME, std::cos(x))                                                \
  X(tanh, FLOAT, SAME, ::kiln::ops::ew::tanh(x))                                  \
  X(sigmoid, FLOAT, SAME, ::kiln::ops::ew::sigmoid(x))                            \
  X(relu, NUMERIC, SAME, x < C(0) ? C(0) : x)                                     \
  X(gelu, FLOAT, SAME, ::kiln::ops::ew::gelu(x))                                  \
  X(gelu_tanh, FLOAT, SAME, ::kiln::ops::ew::gelu_tanh(x))                        \
  X(silu, FLOAT, SAME, x * ::kiln::ops::ew::sigmoid(x))                           \
  X(floor, FLOAT, SAME, std::floor(x))                                            \
  X(ceil, FLOAT, SAME, std::ceil(x))                                              \
  X(round, FLOAT, SAME, std::nearbyint(x))                                        \
  X(logical_not, ANY, BOOL, x == C(0))                                            \
  X(add_scalar, NUMERIC, SAME, x + s0)                                            \
  X(mul_scalar, NUMERIC, SAME, x * s0)                                            \
  X(affine, NUMERIC, SAME, s0 * x + s1)                                           \
  X(div_scalar, FLOAT, SAME, x / s0)                                              \
  X(rdiv_scalar, FLOAT, SAME, s0 / x)                                             \
  X(pow_scalar, NUMERIC, SAME, ::kiln::ops::ew::pow(x, s0))                       \
  X(rpow_scalar, NUMERIC, SAME, ::kiln::ops::ew::pow(s0, x))                      \
  X(clamp_min, NUMERIC, SAME, ::kiln::ops::ew::max_nan(x, s0))                    \
  X(clamp_max, NUMERIC, SAME, ::kiln::ops::ew::min_nan(x, s0))                    \
  X(clamp, NUMERIC, SAME, ::kiln::ops::ew::min_nan(::kiln::ops::ew::max_nan(x, s0), s1)) \
  X(eq_scalar, ANY, BOOL, x == s0)                                                \
  X(ne_scalar, ANY, BOOL, x != s0)                                                \
  X(lt_scalar, ANY, BOOL, x < s0)                                                 \
  X(le_scalar, ANY, BOOL, x <= s0)                                                \
  X(gt_scalar, ANY, BOOL, x > s0)                                                 \
  X(ge_scalar, ANY, BOOL, x >= s0)

// Binary ops on same-shaped, same-dtype operands a, b with scalar parameters s0, s1. The *_backward
// ops are fused gradient rules: a is the op's input x or output y, b the incoming gradient.
#define KILN_BINARY_OPS(X)                                                            \
  X(add, ANY, SAME, a + s0 * b)                                                       \
  X(mul, ANY, SAME, a * b)                                                            \
  X(div, FLOAT, SAME, a / b)                                                          \
  X(pow, NUMERIC, SAME, ::kiln::ops::ew::pow(a, b))                                   \
  X(maximum, ANY, SAME, ::kiln::ops::ew::max_nan(a, b))                               \
  X(minimum, ANY, SAME, ::kiln::ops::ew::min_nan(a, b))                               \
  X(eq, ANY, BOOL, a == b)                                                            \
  X(ne, ANY, BOOL, a != b)                                                            \
  X(lt, ANY, BOOL, a < b)                                                             \
  X(le, ANY, BOOL, a <= b)                                                            \
  X(gt, ANY, BOOL, a > b)                                                             \
  X(ge, ANY, BOOL, a >= b)                                                            \
  X(logical_and, ANY, BOOL, a != C(0) && b != C(0))                                   \
  X(logical_or, ANY, BOOL, a != C(0) || b != C(0))                                    \
  X(isclose, FLOAT, BOOL, a == b || std::abs(a - b) <= s1 + s0 * std::abs(b))         \
  X(max_weight, FLOAT, SAME, a > b ? C(1) : a == b ? C(0.5) : C(0))                   \
  X(clamp_backward, FLOAT, SAME, (a >= s0 && a <= s1) ? b : C(0))                     \
  X(relu_backward, FLOAT, SAME, a > C(0) ? b : C(0))                                  \
  X(sigmoid_backward, FLOAT, SAME, b * a * (C(1) - a))                                \
  X(tanh_backward, FLOAT, SAME, b * (C(1) - a * a))                                   \
  X(gelu_backward, FLOAT, SAME, ::kiln::ops::ew::gelu_backward(a, b))                 \
  X(gelu_tanh_backward, FLOAT, SAME, ::kiln::ops::ew::gelu_tanh_backward(a, b))       \
  X(silu_backward, FLOAT, SAME, ::kiln::ops::ew::silu_backward(a, b))

namespace kiln::ops {

#define KILN_EW_ENUM(NAME, ...) NAME,
enum class UnaryOp : int32_t { KILN_UNARY_OPS(KILN_EW_ENUM) kCount };
enum class BinaryOp : int32_t { KILN_BINARY_OPS(KILN_EW_ENUM) kCount };
#undef KILN_EW_ENUM

const char* unary_op_name(UnaryOp op);
const char* binary_op_name(BinaryOp op);
// The dtype of op's result for operands of dtype `in`; throws DTypeError when op does not take `in`.
DType unary_result_dtype(UnaryOp op, DType in);
DType binary_result_dtype(BinaryOp op, DType in);

// unary: out = op(x; s0, s1). out has x's shape and the dtype unary_result_dtype gives; out may be x
// (in-place ops).
using Unary = void(UnaryOp op, const Tensor& x, const Tensor& out, double s0, double s1);
// binary: out = op(a, b; s0, s1) for a, b of out's shape and one dtype; out may be a.
using Binary = void(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double s0, double s1);
// where: out = cond ? a : b, where a missing a (or b) stands for the scalar sa (or sb).
using Where = void(const Tensor& cond, const Tensor* a, const Tensor* b, double sa, double sb, const Tensor& out);

// What each backend computes natively (per op, the op's FLOAT / NUMERIC / ANY kind narrows it);
// CUDA has no float16 kernels (lib/ runs float16 through float32 there).
inline constexpr DTypeSet kElementwiseCpuDTypes = kAllDTypes;
inline constexpr DTypeSet kElementwiseCudaDTypes{DType::Float32, DType::Float64, DType::BFloat16,
                                                 DType::Int32,   DType::Int64,   DType::Bool};

// Every check of unary, binary and where (shapes, dtypes, result dtype).
void check_unary(UnaryOp op, const Tensor& x, const Tensor& out);
void check_binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void check_where(const Tensor& cond, const Tensor* a, const Tensor* b, const Tensor& out);

namespace ew {

// The dtypes an op takes (see the lists above) and its result kind.
enum class DTypes { FLOAT, NUMERIC, ANY };
enum class Result { SAME, BOOL };

inline bool takes(DTypes k, DType dt) {
  switch (k) {
    case DTypes::FLOAT: return is_floating(dt);
    case DTypes::NUMERIC: return is_floating(dt) || is_integral(dt);
    case DTypes::ANY: return true;
  }
  return false;
}

// Throws unless the scalar parameter v fits C when C is an integer type (converting a value that
// does not would be undefined behaviour).
template <typename C>
void check_scalar_fits(double v, const char* name) {
  if constexpr (std::is_integral_v<C> && !std::is_same_v<C, uint8_t>) {
    constexpr double lo = double(std::numeric_limits<C>::lowest());
    KILN_CHECK(v >= lo && v < -lo, Value, name, "scalar ", v, " does not fit an integer tensor");
  }
}

// UnaryFn<op> / BinaryFn<op>: the formula of each listed op, callable on host and device, with the
// dtypes it takes and its result kind.
template <UnaryOp op> struct UnaryFn;
template <BinaryOp op> struct BinaryFn;
#define KILN_EW_UNARY_FN(NAME, KIND, RES, EXPR)                              \
  template <> struct UnaryFn<UnaryOp::NAME> {                                \
    static constexpr DTypes dtypes = DTypes::KIND;                           \
    static constexpr Result result = Result::RES;                            \
    template <typename C>                                                    \
    KILN_HOST_DEVICE auto operator()(C x, C s0, C s1) const { return EXPR; } \
  };
#define KILN_EW_BINARY_FN(NAME, KIND, RES, EXPR)                                   \
  template <> struct BinaryFn<BinaryOp::NAME> {                                    \
    static constexpr DTypes dtypes = DTypes::KIND;                                 \
    static constexpr Result result = Result::RES;                                  \
    template <typename C>                                                          \
    KILN_HOST_DEVICE auto operator()(C a, C b, C s0, C s1) const { return EXPR; }  \
  };
KILN_UNARY_OPS(KILN_EW_UNARY_FN)
KILN_BINARY_OPS(KILN_EW_BINARY_FN)
#undef KILN_EW_UNARY_FN
#undef KILN_EW_BINARY_FN

// An op code (as a type) to its formula, so that one with_formula serves unary and binary ops.
template <UnaryOp op> UnaryFn<op> formula_of(std::integral_constant<UnaryOp, op>) { return {}; }
template <BinaryOp op> BinaryFn<op> formula_of(std::integral_constant<BinaryOp, op>) { return {}; }

template <typename Op, typename Visit, size_t... I>
bool visit_formula(Op op, Visit& visit, std::index_sequence<I...>) {
  return ((op == Op(I) && (visit(formula_of(std::integral_constant<Op, Op(I)>{})), true)) || ...);
}

// Calls visit(F{}) with F the formula of op (UnaryFn<op> or BinaryFn<op>): the one dispatch over
// the op lists, shared by both backends' kernels.
template <typename Op, typename Visit>
void with_formula(Op op, const char* name, Visit visit) {
  const bool listed = visit_formula(op, visit, std::make_index_sequence<size_t(Op::kCount)>{});
  KILN_INTERNAL_CHECK(listed, name);
}

}  // namespace ew
}  // namespace kiln::ops

namespace kiln::cpu {
ops::Unary unary;
ops::Binary binary;
ops::Where where;
}  // namespace kiln::cpu

namespace kiln::cuda {
ops::Unary unary;
ops::Binary binary;
ops::Where where;
}  // namespace kiln::cuda
