// The index family's argument checks (native/ops/index.h), run by both backends before any kernel.
#include "index.h"

namespace kiln::ops {

namespace {

void check_index_dtype(const Tensor& index, const char* op) {
  KILN_CHECK(is_integral(index.dtype), DType, op, "index must be int32 or int64, got ", dtype_name(index.dtype));
}

void check_dim(int64_t dim, const Tensor& t, const char* op) {
  KILN_CHECK(dim >= 0 && dim < t.dim(), Index, op, "dim ", dim, " out of range for a tensor of shape ",
             shape_str(t.shape));
}

IndexedShape indexed_shape(const Tensor& base, int64_t dim, const Tensor& index) {
  IndexedShape r;
  for (int64_t k = 0; k < base.dim(); k++) {
    if (k == dim) {
      for (int64_t j = 0; j < index.dim(); j++) {
        r.shape.push_back(index.shape[j]);
        r.base_strides.push_back(0);
        r.index_strides.push_back(index.strides[j]);
      }
    } else {
      r.shape.push_back(base.shape[k]);
      r.base_strides.push_back(base.strides[k]);
      r.index_strides.push_back(0);
    }
  }
  return r;
}

// Checks shared by gather and scatter_add: index has data's rank and, outside dim, no larger sizes.
void check_gather_shapes(const Tensor& data, int64_t dim, const Tensor& index, const char* op, const char* data_name) {
  KILN_CHECK(index.dim() == data.dim(), Shape, op, "index ", shape_str(index.shape), " must have as many dims as ",
             data_name, " ", shape_str(data.shape));
  for (int64_t k = 0; k < data.dim(); k++) {
    KILN_CHECK(k == dim || index.shape[k] <= data.shape[k], Shape, op, "index ", shape_str(index.shape),
               " is larger than ", data_name, " ", shape_str(data.shape), " at dim ", k);
  }
}

void check_same_dtypes(const Tensor& a, const Tensor& b, const char* op) {
  KILN_CHECK(a.dtype == b.dtype, DType, op, "dtypes ", dtype_name(a.dtype), " and ", dtype_name(b.dtype), " differ");
}

void check_add_target(const Tensor& out, const Tensor& src, const char* op) {
  check_same_dtypes(out, src, op);
  KILN_CHECK(out.is_contiguous(), Value, op, "the accumulation target must be contiguous, got strides ",
             shape_str(out.strides), " for shape ", shape_str(out.shape));
}

}  // namespace

Tensor at_least_1d(const Tensor& t) {
  if (t.dim() > 0) return t;
  Tensor r = t;
  r.shape = {1};
  r.strides = {1};
  return r;
}

void check_gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* op) {
  check_index_dtype(index, op);
  check_dim(dim, x, op);
  check_gather_shapes(x, dim, index, op, "input");
  KILN_CHECK(out.shape == index.shape, Shape, op, "output ", shape_str(out.shape), " must have index shape ",
             shape_str(index.shape));
  check_same_dtypes(out, x, op);
}

IndexedShape check_index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* op) {
  check_index_dtype(index, op);
  check_dim(dim, x, op);
  IndexedShape s = indexed_shape(x, dim, index);
  KILN_CHECK(out.shape == s.shape, Shape, op, "output ", shape_str(out.shape), " must have shape ",
             shape_str(s.shape));
  check_same_dtypes(out, x, op);
  return s;
}

IndexedShape check_index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, const char* op) {
  check_index_dtype(index, op);
  check_dim(dim, out, op);
  check_add_target(out, src, op);
  IndexedShape s = indexed_shape(out, dim, index);
  KILN_CHECK(src.shape == s.shape, Shape, op, "source ", shape_str(src.shape), " must have shape ",
             shape_str(s.shape), " for target ", shape_str(out.shape), " and index ", shape_str(index.shape));
  return s;
}

void check_scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, const char* op) {
  check_index_dtype(index, op);
  check_dim(dim, out, op);
  check_add_target(out, src, op);
  check_gather_shapes(out, dim, index, op, "input");
  check_gather_shapes(src, -1, index, op, "src");
}

}  // namespace kiln::ops
