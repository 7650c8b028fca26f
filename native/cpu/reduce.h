// Reduction op family: the op list (X-macro; the binding exports the codes by name), result dtypes
// and the CPU entry point that reduces a tensor of any strides over a set of dims.
#pragma once
#include <cstdint>
#include <vector>
#include "../core/tensor.h"

// X(name, dtypes): dtypes FLOAT (float32/64, bfloat16, float16) or ANY (also int32, int64, bool).
#define KILN_REDUCE_OPS(X) \
  X(sum, ANY)              \
  X(mean, FLOAT)           \
  X(max, ANY)              \
  X(min, ANY)              \
  X(argmax, ANY)           \
  X(argmin, ANY)           \
  X(all, ANY)              \
  X(any, ANY)              \
  X(var, FLOAT)            \
  X(std, FLOAT)            \
  X(logsumexp, FLOAT)

namespace kiln {

#define KILN_REDUCE_ENUM(NAME, ...) NAME,
enum class ReduceOp : int32_t { KILN_REDUCE_OPS(KILN_REDUCE_ENUM) kCount };
#undef KILN_REDUCE_ENUM

const char* reduce_op_name(ReduceOp op);
// The result dtype of op over an input of dtype `in` (sum of integers and bool is int64, argmax/argmin
// int64, all/any bool); throws DTypeError when op does not take `in`.
DType reduce_result_dtype(ReduceOp op, DType in);

namespace cpu {
// Reduces x over `dims` (distinct, in range) into the contiguous `out`, whose elements are the kept
// dims in order (keepdim or not: the layout is the same). `param` is the correction of var/std.
// max/min/argmax/argmin need a non-empty reduction.
void reduce(ReduceOp op, const Tensor& x, const Tensor& out, const std::vector<int64_t>& dims, double param);

// How a reduction walks x (shared with the CUDA twin): kept and reduced dims, each merged where
// contiguous and never reordered.
struct ReducePlan {
  Shape kshape, kstride;  // kept dims, merged, outermost first
  Shape rshape, rstride;  // reduced dims, merged, outermost first; {1}/{0} when nothing is reduced
  int64_t outputs = 1, count = 1;
  bool columns = false;   // the innermost kept dim is laid out inside the reduced ones
};
// Checks out's dtype and size and the dims (in range, distinct), and plans the walk; shared with
// the CUDA twin.
ReducePlan check_reduce(ReduceOp op, const Tensor& x, const Tensor& out, const std::vector<int64_t>& dims);
}  // namespace cpu

}  // namespace kiln
