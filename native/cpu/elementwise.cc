// CPU elementwise kernels: one strided loop per arity (unary with scalar parameters, binary, where),
// instantiated for each listed op and dtype. The loops have tight restrict-pointer fast paths for
// contiguous runs and for a broadcast (stride 0) operand so that they vectorize (for AVX2 too, via
// run_simd); strided_for spreads the work over threads.
#include "elementwise.h"
#include "../core/convert.h"
#include "../core/strided.h"

namespace kiln {

namespace {

struct OpInfo {
  const char* name;
  ew::DTypes dtypes;
  ew::Result result;
};

#define KILN_EW_INFO(NAME, KIND, RES, EXPR) {#NAME, ew::DTypes::KIND, ew::Result::RES},
const OpInfo kUnaryInfo[] = {KILN_UNARY_OPS(KILN_EW_INFO)};
const OpInfo kBinaryInfo[] = {KILN_BINARY_OPS(KILN_EW_INFO)};
#undef KILN_EW_INFO

DType result_dtype(const OpInfo& info, DType in) {
  if (!ew::takes(info.dtypes, in)) throw_dtype_unsupported(info.name, in);
  return info.result == ew::Result::BOOL ? DType::Bool : in;
}

template <typename T, typename F>
using result_storage_t = std::conditional_t<F::result == ew::Result::BOOL, uint8_t, T>;

template <typename O, typename R>
inline O store(R r) {
  return convert_value<O, R>(r);
}

// A scalar parameter as a C (a compute or storage type); integers refuse values they cannot hold.
template <typename C>
C scalar_as(double v, const char* name) {
  ew::check_scalar_fits<C>(v, name);
  return convert_value<C, double>(v);
}

template <typename T, typename F>
void unary_loop(const Tensor& x, const Tensor& out, double s0d, double s1d, const char* name) {
  using C = compute_t<T>;
  using O = result_storage_t<T, F>;
  const F f;
  const C s0 = scalar_as<C>(s0d, name), s1 = scalar_as<C>(s1d, name);
  const T* xp = x.data<T>();
  O* op = out.data<O>();
  strided_for<2>(out.shape, {&out.strides, &x.strides},
                 [&](int64_t n, const std::array<int64_t, 2>& off, const std::array<int64_t, 2>& st) {
                   O* __restrict o = op + off[0];
                   const T* __restrict a = xp + off[1];
                   if (st[0] == 1 && st[1] == 1) {
                     run_simd([&] {
                       for (int64_t i = 0; i < n; i++) o[i] = store<O>(f(convert_value<C, T>(a[i]), s0, s1));
                     });
                   } else {
                     const int64_t so = st[0], sa = st[1];
                     for (int64_t i = 0; i < n; i++)
                       o[i * so] = store<O>(f(convert_value<C, T>(a[i * sa]), s0, s1));
                   }
                 });
}

template <typename T, typename F>
void binary_loop(const Tensor& a, const Tensor& b, const Tensor& out, double s0d, double s1d, const char* name) {
  using C = compute_t<T>;
  using O = result_storage_t<T, F>;
  const F f;
  const C s0 = scalar_as<C>(s0d, name), s1 = scalar_as<C>(s1d, name);
  const T* ap = a.data<T>();
  const T* bp = b.data<T>();
  O* op = out.data<O>();
  strided_for<3>(
      out.shape, {&out.strides, &a.strides, &b.strides},
      [&](int64_t n, const std::array<int64_t, 3>& off, const std::array<int64_t, 3>& st) {
        O* __restrict o = op + off[0];
        const T* __restrict x = ap + off[1];
        const T* __restrict y = bp + off[2];
        if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
          run_simd([&] {
            for (int64_t i = 0; i < n; i++)
              o[i] = store<O>(f(convert_value<C, T>(x[i]), convert_value<C, T>(y[i]), s0, s1));
          });
        } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
          const C yv = convert_value<C, T>(y[0]);
          run_simd([&] {
            for (int64_t i = 0; i < n; i++) o[i] = store<O>(f(convert_value<C, T>(x[i]), yv, s0, s1));
          });
        } else if (st[0] == 1 && st[1] == 0 && st[2] == 1) {
          const C xv = convert_value<C, T>(x[0]);
          run_simd([&] {
            for (int64_t i = 0; i < n; i++) o[i] = store<O>(f(xv, convert_value<C, T>(y[i]), s0, s1));
          });
        } else {
          const int64_t so = st[0], sx = st[1], sy = st[2];
          for (int64_t i = 0; i < n; i++)
            o[i * so] = store<O>(f(convert_value<C, T>(x[i * sx]), convert_value<C, T>(y[i * sy]), s0, s1));
        }
      });
}

void check_same_shape(const char* name, const Tensor& t, const Tensor& out, const char* what) {
  KILN_CHECK(t.shape == out.shape, Shape, name, what, " has shape ", shape_str(t.shape), " but the output has shape ",
             shape_str(out.shape), " (operands must be broadcast first)");
}

void check_result(const char* name, DType want, const Tensor& out) {
  KILN_CHECK(out.dtype == want, DType, name, "output dtype ", dtype_name(out.dtype), " should be ", dtype_name(want));
}

}  // namespace

const char* unary_op_name(UnaryOp op) { return kUnaryInfo[int(op)].name; }
const char* binary_op_name(BinaryOp op) { return kBinaryInfo[int(op)].name; }
DType unary_result_dtype(UnaryOp op, DType in) { return result_dtype(kUnaryInfo[int(op)], in); }
DType binary_result_dtype(BinaryOp op, DType in) { return result_dtype(kBinaryInfo[int(op)], in); }

namespace cpu {

// Argument checks shared with the CUDA twins (declared in the header).

void check_unary(UnaryOp op, const Tensor& x, const Tensor& out) {
  const char* name = unary_op_name(op);
  check_same_shape(name, x, out, "input");
  check_result(name, unary_result_dtype(op, x.dtype), out);
}

void check_binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const char* name = binary_op_name(op);
  check_same_shape(name, a, out, "first operand");
  check_same_shape(name, b, out, "second operand");
  KILN_CHECK(a.dtype == b.dtype, DType, name, "operands have dtypes ", dtype_name(a.dtype), " and ",
             dtype_name(b.dtype), " (promote them first)");
  check_result(name, binary_result_dtype(op, a.dtype), out);
}

void check_where(const Tensor& cond, const Tensor* a, const Tensor* b, const Tensor& out) {
  const char* name = "where";
  KILN_CHECK(cond.dtype == DType::Bool, DType, name, "condition must be bool, got ", dtype_name(cond.dtype));
  check_same_shape(name, cond, out, "condition");
  for (const Tensor* t : {a, b}) {
    if (!t) continue;
    check_same_shape(name, *t, out, "value");
    KILN_CHECK(t->dtype == out.dtype, DType, name, "values have dtype ", dtype_name(t->dtype), " but the output has ",
               dtype_name(out.dtype));
  }
}

void unary(UnaryOp op, const Tensor& x, const Tensor& out, double s0, double s1) {
  const char* name = unary_op_name(op);
  check_unary(op, x, out);
  ew::with_formula(op, name, [&](auto f) {
    using F = decltype(f);
    cpu::dispatch<F::dtypes>(x.dtype, name, [&](auto tag) { unary_loop<decltype(tag), F>(x, out, s0, s1, name); });
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double s0, double s1) {
  const char* name = binary_op_name(op);
  check_binary(op, a, b, out);
  ew::with_formula(op, name, [&](auto f) {
    using F = decltype(f);
    cpu::dispatch<F::dtypes>(a.dtype, name, [&](auto tag) { binary_loop<decltype(tag), F>(a, b, out, s0, s1, name); });
  });
}

void where(const Tensor& cond, const Tensor* a, const Tensor* b, double sa, double sb, const Tensor& out) {
  const char* name = "where";
  check_where(cond, a, b, out);
  // A scalar stands in as a one-element operand walked with stride 0.
  const Shape zero(out.shape.size(), 0);
  KILN_DISPATCH_ALL(out.dtype, name, {
    const scalar_t va = scalar_as<scalar_t>(sa, name), vb = scalar_as<scalar_t>(sb, name);
    const scalar_t* ap = a ? a->data<scalar_t>() : &va;
    const scalar_t* bp = b ? b->data<scalar_t>() : &vb;
    const uint8_t* cp = cond.data<uint8_t>();
    scalar_t* op = out.data<scalar_t>();
    strided_for<4>(out.shape, {&out.strides, &cond.strides, a ? &a->strides : &zero, b ? &b->strides : &zero},
                   [&](int64_t n, const std::array<int64_t, 4>& off, const std::array<int64_t, 4>& st) {
                     scalar_t* __restrict o = op + off[0];
                     const uint8_t* __restrict c = cp + off[1];
                     const scalar_t* __restrict x = ap + off[2];
                     const scalar_t* __restrict y = bp + off[3];
                     if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) {
                       for (int64_t i = 0; i < n; i++) o[i] = c[i] ? x[i] : y[i];
                     } else {
                       for (int64_t i = 0; i < n; i++) o[i * st[0]] = c[i * st[1]] ? x[i * st[2]] : y[i * st[3]];
                     }
                   });
  });
}

}  // namespace cpu
}  // namespace kiln
