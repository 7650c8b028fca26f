// CPU elementwise kernels (the contract is native/ops/elementwise.h): one strided loop per arity
// (unary with scalar parameters, binary, where), instantiated for each listed op and dtype. The
// loops have tight restrict-pointer fast paths for contiguous runs and for a broadcast (stride 0)
// operand so that they vectorize (for AVX2 too, via run_simd); strided_for spreads the work over
// threads.
#include "elementwise.h"
#include "../core/convert.h"
#include "../core/strided.h"
#include "simd.h"

namespace kiln::cpu {

using ops::BinaryOp;
using ops::UnaryOp;
using ops::compute_t;
namespace ew = ops::ew;

namespace {

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

}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out, double s0, double s1) {
  const char* name = ops::unary_op_name(op);
  ops::check_unary(op, x, out);
  ew::with_formula(op, name, [&](auto f) {
    using F = decltype(f);
    dispatch<F::dtypes>(x.dtype, name, [&](auto tag) { unary_loop<decltype(tag), F>(x, out, s0, s1, name); });
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double s0, double s1) {
  const char* name = ops::binary_op_name(op);
  ops::check_binary(op, a, b, out);
  ew::with_formula(op, name, [&](auto f) {
    using F = decltype(f);
    dispatch<F::dtypes>(a.dtype, name, [&](auto tag) { binary_loop<decltype(tag), F>(a, b, out, s0, s1, name); });
  });
}

void where(const Tensor& cond, const Tensor* a, const Tensor* b, double sa, double sb, const Tensor& out) {
  const char* name = "where";
  ops::check_where(cond, a, b, out);
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

}  // namespace kiln::cpu
