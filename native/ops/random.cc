// The random family's argument checks (native/ops/random.h), run by both backends before any kernel.
#include "random.h"
#include <cmath>

namespace kiln::ops {

namespace {

// Fills and dropout write element i at offset i: their outputs must be contiguous.
void check_contiguous(const Tensor& t, const char* op, const char* name) {
  KILN_CHECK(t.is_contiguous(), Value, op, name, " must be contiguous, got strides ", shape_str(t.strides),
             " for shape ", shape_str(t.shape));
}

void check_mask(const char* op, const Tensor& ref, const char* ref_name, const Tensor& out, const Tensor& mask) {
  KILN_CHECK(ref.shape == out.shape && ref.shape == mask.shape, Shape, op, ref_name, " ", shape_str(ref.shape),
             ", output ", shape_str(out.shape), " and mask ", shape_str(mask.shape), " differ");
  KILN_CHECK(out.dtype == ref.dtype && mask.dtype == DType::Bool, DType, op, "expected output of ",
             dtype_name(ref.dtype), " and a bool mask, got ", dtype_name(out.dtype), " and ", dtype_name(mask.dtype));
}

}  // namespace

void check_rand_uniform(const Tensor& out, double low, double high) {
  const char* op = "rand";
  check_contiguous(out, op, "output");
  KILN_CHECK(std::isfinite(low) && std::isfinite(high) && low < high, Value, op, "needs finite low < high, got [", low,
             ", ", high, ")");
  // Every dtype but float64 computes low + (high - low) * u in float32.
  if (out.dtype != DType::Float64) {
    KILN_CHECK(std::isfinite(float(low)) && std::isfinite(float(high - low)), Value, op, "range [", low, ", ", high,
               ") is too wide for ", dtype_name(out.dtype));
  }
}

void check_rand_normal(const Tensor& out, double mean, double std) {
  const char* op = "randn";
  check_contiguous(out, op, "output");
  KILN_CHECK(std::isfinite(mean) && std::isfinite(std) && std >= 0, Value, op,
             "needs a finite mean and a finite std >= 0, got mean ", mean, ", std ", std);
}

uint64_t check_rand_int(const Tensor& out, int64_t low, int64_t high) {
  const char* op = "randint";
  check_contiguous(out, op, "output");
  KILN_CHECK(low < high, Value, op, "needs low < high, got low ", low, ", high ", high);
  if (out.dtype == DType::Int32) {
    KILN_CHECK(low >= INT32_MIN && high - 1 <= INT32_MAX, Value, op, "range [", low, ", ", high,
               ") does not fit in int32");
  }
  return uint64_t(high - low);
}

void check_dropout(const Tensor& x, double p, const Tensor& out, const Tensor& mask) {
  const char* op = "dropout";
  KILN_CHECK(p >= 0 && p < 1, Value, op, "p must be in [0, 1) for the kernel, got ", p);
  check_mask(op, x, "input", out, mask);
  check_contiguous(out, op, "output");
  check_contiguous(mask, op, "mask");
}

void check_dropout_backward(const Tensor& grad, const Tensor& mask, const Tensor& out) {
  check_mask("dropout_backward", grad, "gradient", out, mask);
}

}  // namespace kiln::ops
