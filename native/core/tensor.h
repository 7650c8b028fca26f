// Tensor: a strided view (shape, strides and offset in elements, dtype) over a shared Storage.
// Kernels take these; the binding owns the handles JavaScript holds.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>
#include "dtype.h"
#include "error.h"
#include "storage.h"

namespace kiln {

using Shape = std::vector<int64_t>;

inline int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// The largest element count of a tensor: JavaScript numbers hold integers exactly up to here, and
// no byte count of such a tensor overflows 64 bits.
constexpr int64_t kMaxNumel = (int64_t(1) << 53) - 1;

// Elements of shape; ShapeError naming op when a dimension is negative or the count passes
// kMaxNumel (checked before any product can overflow). Size-0 dimensions count as 1 in the limit, as
// in the contiguous strides of an empty tensor, which must stay exact too.
inline int64_t checked_numel(const Shape& s, const char* op) {
  int64_t span = 1;
  bool zero = false;
  for (int64_t d : s) {
    KILN_CHECK(d >= 0, Shape, op, "negative dimension in shape ", shape_str(s));
    zero |= d == 0;
    KILN_CHECK(!__builtin_mul_overflow(span, d > 1 ? d : 1, &span) && span <= kMaxNumel, Shape, op, "shape ",
               shape_str(s), " spans more than 2^53 - 1 elements");
  }
  return zero ? 0 : span;
}

inline Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i] > 1 ? s[i] : 1;
  }
  return st;
}

struct Tensor {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::Float32;

  int64_t dim() const { return int64_t(shape.size()); }
  int64_t numel() const { return shape_numel(shape); }
  Device device() const { return storage->device; }
  size_t itemsize() const { return dtype_size(dtype); }

  bool is_contiguous() const {
    if (numel() == 0) return true;  // nothing to lay out
    int64_t expected = 1;
    for (size_t i = shape.size(); i-- > 0;) {
      if (shape[i] == 1) continue;
      if (strides[i] != expected) return false;
      expected *= shape[i];
    }
    return true;
  }

  void* data_ptr() const { return static_cast<char*>(storage->data) + offset * int64_t(itemsize()); }
  template <typename T>
  T* data() const { return reinterpret_cast<T*>(data_ptr()); }

  // A fresh contiguous tensor on `device`; ShapeError when the shape has too many elements.
  static Tensor empty(const Shape& shape, DType dtype, Device device) {
    Tensor t;
    const int64_t n = checked_numel(shape, "alloc");  // at most 2^53 elements of at most 8 bytes
    t.shape = shape;
    t.strides = contiguous_strides(shape);
    t.dtype = dtype;
    t.storage = std::make_shared<Storage>(size_t(n) * dtype_size(dtype), device);
    return t;
  }
};

}  // namespace kiln
