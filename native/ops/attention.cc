// The fused attention family's argument checks (native/ops/attention.h), run by both backends
// before any kernel.
#include "attention.h"
#include <cmath>

namespace kiln::ops {

DType lse_dtype(DType input) { return input == DType::Float64 ? DType::Float64 : DType::Float32; }

namespace {

void check_fresh(const char* op, const char* name, const Tensor& t, const Shape& shape, DType dtype) {
  KILN_CHECK(t.shape == shape, Shape, op, name, " must have shape ", shape_str(shape), ", got ", shape_str(t.shape));
  KILN_CHECK(t.dtype == dtype, DType, op, name, " must be ", dtype_name(dtype), ", got ", dtype_name(t.dtype));
  KILN_CHECK(t.is_contiguous(), Value, op, name, " must be a contiguous tensor");
}

// q [B, H, L, D], k and v [B, H, S, D] of one floating dtype; causal needs L <= S.
void check_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) {
  KILN_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, Shape, op,
             "expects q, k and v of shape [B, H, T, D], got ", shape_str(q.shape), ", ", shape_str(k.shape), " and ",
             shape_str(v.shape));
  const bool fit = k.shape == v.shape && q.shape[0] == k.shape[0] && q.shape[1] == k.shape[1] &&
                   q.shape[3] == k.shape[3];
  KILN_CHECK(fit, Shape, op, "q ", shape_str(q.shape), ", k ", shape_str(k.shape), " and v ", shape_str(v.shape),
             " do not fit: expected q [B, H, L, D] and k, v [B, H, S, D]");
  KILN_CHECK(q.dtype == k.dtype && q.dtype == v.dtype, DType, op, "q, k and v must share a dtype, got ",
             dtype_name(q.dtype), ", ", dtype_name(k.dtype), " and ", dtype_name(v.dtype));
  KILN_CHECK(is_floating(q.dtype), DType, op, "expects floating point inputs, got ", dtype_name(q.dtype));
  KILN_CHECK(!causal || q.shape[2] <= k.shape[2], Shape, op, "causal attention needs at most as many queries as keys, got L=",
             q.shape[2], " and S=", k.shape[2]);
  KILN_CHECK(k.shape[2] > 0 || q.shape[2] == 0, Shape, op, "needs at least one key, got k ", shape_str(k.shape));
  KILN_CHECK(std::isfinite(scale), Value, op, "scale must be finite, got ", scale);
}

}  // namespace

void check_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale,
                             const Tensor& out, const Tensor& lse) {
  const char* op = "flashAttention";
  check_inputs(op, q, k, v, causal, scale);
  check_fresh(op, "out", out, q.shape, q.dtype);
  check_fresh(op, "lse", lse, {q.shape[0], q.shape[1], q.shape[2]}, lse_dtype(q.dtype));
}

void check_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                              const Tensor& dout, const Tensor& lse, bool causal, double scale, const Tensor& dq,
                              const Tensor& dk, const Tensor& dv) {
  const char* op = "flashAttention backward";
  check_inputs(op, q, k, v, causal, scale);
  KILN_CHECK(out.shape == q.shape && dout.shape == q.shape, Shape, op, "out ", shape_str(out.shape), " and dout ",
             shape_str(dout.shape), " must have q's shape ", shape_str(q.shape));
  KILN_CHECK(out.dtype == q.dtype && dout.dtype == q.dtype, DType, op, "out and dout must be ", dtype_name(q.dtype),
             ", got ", dtype_name(out.dtype), " and ", dtype_name(dout.dtype));
  KILN_CHECK(lse.shape == Shape({q.shape[0], q.shape[1], q.shape[2]}) && lse.dtype == lse_dtype(q.dtype), Shape, op,
             "lse must be ", dtype_name(lse_dtype(q.dtype)), " of shape [B, H, L], got ", dtype_name(lse.dtype), " ",
             shape_str(lse.shape));
  check_fresh(op, "dq", dq, q.shape, q.dtype);
  check_fresh(op, "dk", dk, k.shape, k.dtype);
  check_fresh(op, "dv", dv, v.shape, v.dtype);
}

}  // namespace kiln::ops
