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

  // A fresh contiguous tensor on `device`.
  static Tensor empty(const Shape& shape, DType dtype, Device device) {
    Tensor t;
    t.shape = shape;
    t.strides = contiguous_strides(shape);
    t.dtype = dtype;
    t.storage = std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype), device);
    return t;
  }
};

}  // namespace kiln
