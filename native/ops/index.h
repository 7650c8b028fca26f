// The index family's contract, shared by both backends: gather, index_select (also embedding) and
// their scatter-add twins index_add (also embedding backward) and scatter_add; their kernel
// signatures, the dtypes each backend takes, and the argument checks every implementation runs first
// (all but the index values, which each backend checks its own way: the CPU before touching memory,
// CUDA on the device). native/cpu/index.cc and native/cuda/index.cu implement them;
// native/binding/index.cc exports them. A 0-d input counts as shape [1] (with its index, output or
// source).
#pragma once
#include "../core/tensor.h"

namespace kiln::ops {

// gather: out = torch.gather(x, dim, index): out[i] = x[i with coordinate dim replaced by index[i]].
// index has x's rank and sizes no larger than x's outside dim; out has index's shape.
using Gather = void(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
// indexSelect: out[a, j, b] = x[a, index[j], b] where a stands for the dims before dim, b for those
// after, and j for all of index's dims: out's shape is x's with dim replaced by index's shape.
using IndexSelect = void(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
// embedding: indexSelect of weight's rows (dim 0), errors naming embedding.
using Embedding = void(const Tensor& weight, const Tensor& indices, const Tensor& out);
// indexAdd: out[a, index[j], b] += src[a, j, b] in place: indexSelect's backward. out is contiguous.
using IndexAdd = void(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);
// embeddingBackward: indexAdd into grad_weight's rows (dim 0), errors naming embedding_backward.
using EmbeddingBackward = void(const Tensor& grad_weight, const Tensor& indices, const Tensor& grad);
// scatterAdd: out[i with coordinate dim replaced by index[i]] += src[i] for every i of index's shape
// (torch.Tensor.scatter_add_), in place: gather's backward. out is contiguous.
using ScatterAdd = void(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);

// The dtypes of the data (not the index, which is int32 or int64), the same on both backends: the
// copies move every dtype; the adds sum every dtype but bool (the half types in float32).
inline constexpr DTypeSet kIndexCopyDTypes = kAllDTypes;
inline constexpr DTypeSet kIndexAddDTypes{DType::Float32, DType::Float64, DType::BFloat16,
                                          DType::Float16, DType::Int32,   DType::Int64};

// t itself, or a 0-d t as shape [1]: gather and the adds index its one dim.
Tensor at_least_1d(const Tensor& t);

// An iteration shape: base's dims with dim replaced by all of index's dims; base and index each move
// only along their own dims.
struct IndexedShape {
  Shape shape, base_strides, index_strides;
};
// Each op's checks (index dtype, dim, shapes, dtypes, the adds' contiguous target); op names the
// caller in errors. check_index_select and check_index_add return the op's iteration shape.
void check_gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* op);
IndexedShape check_index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* op);
IndexedShape check_index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, const char* op);
void check_scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, const char* op);

}  // namespace kiln::ops

namespace kiln::cpu {
ops::Gather gather;
ops::IndexSelect index_select;
ops::Embedding embedding;
ops::IndexAdd index_add;
ops::EmbeddingBackward embedding_backward;
ops::ScatterAdd scatter_add;
}  // namespace kiln::cpu

namespace kiln::cuda {
ops::Gather gather;
ops::IndexSelect index_select;
ops::Embedding embedding;
ops::IndexAdd index_add;
ops::EmbeddingBackward embedding_backward;
ops::ScatterAdd scatter_add;
}  // namespace kiln::cuda
