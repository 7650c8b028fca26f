// CPU indexing kernels: gather, index_select (also embedding), and their race-free scatter-add
// twins index_add and scatter_add. Every tensor may have any strides (outputs of the adds must be
// contiguous); every index value is checked against the dimension size before memory is touched.
// A 0-d input counts as shape [1] (with its index, output or source).
#pragma once
#include "../core/tensor.h"

namespace kiln::cpu {

// Throws IndexError naming op, the first bad value and the valid range unless every element of
// index (int32 or int64, any shape and strides) lies in [0, size). dim is named in the message.
void check_indices(const Tensor& index, int64_t size, int64_t dim, const char* op);

// out = torch.gather(x, dim, index): out[i] = x[i with coordinate dim replaced by index[i]].
// index has x's rank and sizes no larger than x's outside dim; out has index's shape.
void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);

// out[a, j, b] = x[a, index[j], b] where a stands for the dims before dim, b for those after, and
// j for all of index's dims: out's shape is x's with dim replaced by index's shape. A 1-D index is
// torch.index_select; dim 0 of a 2-D weight is embedding. op names the caller in errors.
void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* op);

// out[a, index[j], b] += src[a, j, b]: the backward of index_select. out must be contiguous.
void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, const char* op);

// out[i with coordinate dim replaced by index[i]] += src[i] for every i of index's shape
// (torch.Tensor.scatter_add_). out must be contiguous.
void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);

// Shared with the CUDA twins: 0-d tensors take part as [1] (gather and the adds index their one
// dim), and each op's argument checks (all but the index values, which each backend checks its
// own way). check_index_select and check_index_add return the op's iteration shape and strides.
Tensor at_least_1d(const Tensor& t);
// base's dims with dim replaced by all of index's dims; base and index each move only along their
// own dims.
struct IndexedShape {
  Shape shape, base_strides, index_strides;
};
void check_gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* op);
IndexedShape check_index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* op);
IndexedShape check_index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, const char* op);
void check_scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, const char* op);

}  // namespace kiln::cpu
