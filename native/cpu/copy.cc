// CPU copy kernels: strided copy with dtype conversion (contiguous(), casts, writes into views
// for cat and slice backward), and fill.
#include "copy.h"
#include <cstring>
#include "../core/convert.h"
#include "../core/strided.h"

namespace kiln::cpu {

template <typename D, typename S>
static void copy_typed(const Tensor& src, const Tensor& dst) {
  const S* s = src.data<S>();
  D* d = dst.data<D>();
  strided_for<2>(dst.shape, {&dst.strides, &src.strides},
                 [&](int64_t n, const std::array<int64_t, 2>& off, const std::array<int64_t, 2>& st) {
                   D* dp = d + off[0];
                   const S* sp = s + off[1];
                   if constexpr (std::is_same_v<D, S>) {
                     if (st[0] == 1 && st[1] == 1) {
                       std::memcpy(dp, sp, size_t(n) * sizeof(D));
                       return;
                     }
                   }
                   if (st[0] == 1 && st[1] == 1) {
                     for (int64_t i = 0; i < n; i++) dp[i] = convert_value<D, S>(sp[i]);
                   } else {
                     for (int64_t i = 0; i < n; i++) dp[i * st[0]] = convert_value<D, S>(sp[i * st[1]]);
                   }
                 });
}

void copy(const Tensor& src, const Tensor& dst) {
  KILN_CHECK(src.shape == dst.shape, Shape, "copy", "source shape ", shape_str(src.shape),
             " does not match destination shape ", shape_str(dst.shape));
  KILN_DISPATCH_ALL(dst.dtype, "copy", {
    using D = scalar_t;
    KILN_DISPATCH_ALL(src.dtype, "copy", { copy_typed<D, scalar_t>(src, dst); });
  });
}

void fill(const Tensor& dst, double value) {
  KILN_DISPATCH_ALL(dst.dtype, "fill", {
    const scalar_t v = convert_value<scalar_t, double>(value);
    scalar_t* d = dst.data<scalar_t>();
    strided_for<1>(dst.shape, {&dst.strides},
                   [&](int64_t n, const std::array<int64_t, 1>& off, const std::array<int64_t, 1>& st) {
                     scalar_t* dp = d + off[0];
                     for (int64_t i = 0; i < n; i++) dp[i * st[0]] = v;
                   });
  });
}

}  // namespace kiln::cpu
