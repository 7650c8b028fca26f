// The reduce family's contract, shared by both backends: the op list (X-macro; the binding exports
// the codes by name), result dtypes, the kernel signature, the dtypes each backend takes, and the
// argument checks with the plan of the walk over the input that both backends' kernels follow.
// native/cpu and native/cuda implement the kernel; native/binding/reduce.cc exports it.
#pragma once
#include <cstdint>
#include "../core/tensor.h"
#include "elementwise.h"

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

namespace kiln::ops {

#define KILN_REDUCE_ENUM(NAME, ...) NAME,
enum class ReduceOp : int32_t { KILN_REDUCE_OPS(KILN_REDUCE_ENUM) kCount };
#undef KILN_REDUCE_ENUM

const char* reduce_op_name(ReduceOp op);
// The result dtype of op over an input of dtype `in` (sum of integers and bool is int64, argmax/argmin
// int64, all/any bool); throws DTypeError when op does not take `in`.
DType reduce_result_dtype(ReduceOp op, DType in);

// reduce: reduces x over `dims` (distinct, in range) into the contiguous `out`, whose elements are
// the kept dims in order (keepdim or not: the layout is the same). `param` is the correction of
// var/std. max/min/argmax/argmin need a non-empty reduction.
using Reduce = void(ReduceOp op, const Tensor& x, const Tensor& out, const Shape& dims, double param);

// What each backend computes natively (the op's FLOAT / ANY kind narrows it); CUDA has no float16
// kernels (lib/ runs float16 through float32 there).
inline constexpr DTypeSet kReduceCpuDTypes = kAllDTypes;
inline constexpr DTypeSet kReduceCudaDTypes = kElementwiseCudaDTypes;

// How a reduction walks x: kept and reduced dims, each merged where contiguous and never reordered
// (so argmax indices stay row-major).
struct ReducePlan {
  Shape kshape, kstride;  // kept dims, merged, outermost first
  Shape rshape, rstride;  // reduced dims, merged, outermost first; {1}/{0} when nothing is reduced
  int64_t outputs = 1, count = 1;
  bool columns = false;   // the innermost kept dim is laid out inside the reduced ones
};
// Every check of reduce (out's dtype and size, the dims in range and distinct, a non-empty
// reduction where one is needed); returns the plan of the walk.
ReducePlan check_reduce(ReduceOp op, const Tensor& x, const Tensor& out, const Shape& dims);

}  // namespace kiln::ops

namespace kiln::cpu {
ops::Reduce reduce;
}  // namespace kiln::cpu

namespace kiln::cuda {
ops::Reduce reduce;
}  // namespace kiln::cuda
