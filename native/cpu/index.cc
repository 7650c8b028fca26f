// CPU indexing kernels (contract: native/ops/index.h). Every index value is checked against its
// dimension's size before memory is touched (check_indices). All four ops reduce to two strided loops
// over an iteration shape S in which every operand is described by strides (zero where it does not
// vary):
//   gather_loop:  dst[p] = src[p + idx[p] * src_dim_stride]      (gather, index_select, embedding)
//   scatter_loop: dst[p + idx[p] * dst_dim_stride] += src[p]      (scatter_add, index_add)
// The scatter loop is parallel without races or atomics: dims along which dst does not move (the
// indexed ones, R) are walked serially inside one task, and tasks split only the dims along which
// dst moves (P), plus disjoint ranges of index values when those give too few tasks. Every
// destination element is therefore updated by one task, from the R points in row-major order,
// whatever the thread count, so results are bitwise reproducible.
#include "../ops/index.h"
#include <atomic>
#include <cstring>
#include "../core/convert.h"
#include "../core/strided.h"

namespace kiln::cpu {

using ops::at_least_1d;

namespace {

constexpr int64_t kGrain = 32768;  // elements of work below which a loop stays on one thread

template <typename T, typename I>
void gather_loop(const Shape& S, T* dst, const Shape& ds, const T* src, const Shape& ss, int64_t sdim, const I* idx,
                 const Shape& is) {
  strided_for<3>(S, {&ds, &ss, &is}, [&](int64_t n, const std::array<int64_t, 3>& off, const std::array<int64_t, 3>& st) {
    T* dp = dst + off[0];
    const T* sp = src + off[1];
    const I* ip = idx + off[2];
    if (st[2] == 0) {  // one index value for the whole run (rows of index_select / embedding)
      const T* row = sp + int64_t(*ip) * sdim;
      if (st[0] == 1 && st[1] == 1) {
        std::memcpy(dp, row, size_t(n) * sizeof(T));
      } else {
        for (int64_t k = 0; k < n; k++) dp[k * st[0]] = row[k * st[1]];
      }
    } else {
      for (int64_t k = 0; k < n; k++) dp[k * st[0]] = sp[k * st[1] + int64_t(ip[k * st[2]]) * sdim];
    }
  });
}

// dst += v; the half types add in float32 and round once per addition.
template <typename T>
inline void add_to(T& dst, T v) {
  if constexpr (is_half<T>::value) dst = T(float(dst) + float(v));
  else dst += v;
}

// Types the adds support: the numeric ones and the half types.
#define DISPATCH_ADDABLE(dt, op, ...)                   \
  switch (dt) {                                         \
    KILN_DTYPE_CASE(Float32, float, __VA_ARGS__)        \
    KILN_DTYPE_CASE(Float64, double, __VA_ARGS__)       \
    KILN_DTYPE_CASE(Int32, int32_t, __VA_ARGS__)        \
    KILN_DTYPE_CASE(Int64, int64_t, __VA_ARGS__)        \
    KILN_DTYPE_CASE(BFloat16, ::kiln::bf16, __VA_ARGS__) \
    KILN_DTYPE_CASE(Float16, ::kiln::fp16, __VA_ARGS__) \
    KILN_DTYPE_FAIL(dt, op);                            \
  }

struct LoopDim {
  int64_t size, dst, src, idx;  // size and per-operand strides
};

template <typename T, typename I>
void scatter_loop(const Shape& S, T* dst, const Shape& ds, int64_t ddim, int64_t dsize, const T* src, const Shape& ss,
                  const I* idx, const Shape& is) {
  if (shape_numel(S) == 0) return;
  std::vector<LoopDim> P, R;  // P: dst moves (split across tasks); R: dst fixed (serial per task)
  bool inner_is_p = true;
  for (size_t k = 0; k < S.size(); k++) {
    if (S[k] == 1) continue;
    inner_is_p = ds[k] != 0;
    (inner_is_p ? P : R).push_back({S[k], ds[k], ss[k], is[k]});
  }
  // The innermost loop runs along the last dim of S, where src and index are usually contiguous;
  // when it is a P dim its range may be split across tasks, when it is an R dim it stays whole.
  LoopDim run{1, 0, 0, 0};
  std::vector<LoopDim>& holder = inner_is_p ? P : R;
  if (!holder.empty()) {
    run = holder.back();
    holder.pop_back();
  }
  int64_t outer = 1, rcount = 1;
  for (const LoopDim& d : P) outer *= d.size;
  for (const LoopDim& d : R) rcount *= d.size;

  const int64_t total = outer * run.size * rcount;
  const int64_t nt = total >= kGrain ? num_threads() : 1;
  int64_t chunk = run.size;
  if (inner_is_p && outer < nt) chunk = std::max<int64_t>(std::min<int64_t>(run.size, 16), (run.size * outer + nt - 1) / nt);
  const int64_t chunks = (run.size + chunk - 1) / chunk;
  const int64_t ptasks = outer * chunks;
  const int64_t vparts = ptasks >= nt ? 1 : std::max<int64_t>(1, std::min<int64_t>(dsize, (nt + ptasks - 1) / ptasks));
  const int64_t tasks = ptasks * vparts;

  parallel_for(tasks, nt > 1 ? 1 : tasks + 1, [&](int64_t tb, int64_t te) {
    std::vector<int64_t> pos(R.size());
    for (int64_t t = tb; t < te; t++) {
      const int64_t vpart = t % vparts, pt = t / vparts;
      const int64_t vlo = dsize * vpart / vparts, vhi = dsize * (vpart + 1) / vparts;
      const int64_t c0 = (pt % chunks) * chunk, len = std::min(chunk, run.size - c0);
      int64_t dbase = c0 * run.dst, sbase = c0 * run.src, ibase = c0 * run.idx;
      for (int64_t k = int64_t(P.size()) - 1, o = pt / chunks; k >= 0; k--) {
        const int64_t i = o % P[k].size;
        o /= P[k].size;
        dbase += i * P[k].dst;
        sbase += i * P[k].src;
        ibase += i * P[k].idx;
      }
      std::fill(pos.begin(), pos.end(), 0);
      int64_t so = 0, io = 0;
      for (int64_t r = 0; r < rcount; r++) {
        const T* sp = src + sbase + so;
        const I* ip = idx + ibase + io;
        if (run.idx == 0) {
          const int64_t v = int64_t(*ip);
          if (v >= vlo && v < vhi) {
            T* dp = dst + dbase + v * ddim;
            if (run.dst == 1 && run.src == 1) {
              for (int64_t k = 0; k < len; k++) add_to(dp[k], sp[k]);
            } else {
              for (int64_t k = 0; k < len; k++) add_to(dp[k * run.dst], sp[k * run.src]);
            }
          }
        } else {
          for (int64_t k = 0; k < len; k++) {
            const int64_t v = int64_t(ip[k * run.idx]);
            if (v >= vlo && v < vhi) add_to(dst[dbase + k * run.dst + v * ddim], sp[k * run.src]);
          }
        }
        // Next R point in row-major order.
        for (int64_t k = int64_t(R.size()) - 1; k >= 0; k--) {
          so += R[k].src;
          io += R[k].idx;
          if (++pos[k] < R[k].size) break;
          so -= R[k].size * R[k].src;
          io -= R[k].size * R[k].idx;
          pos[k] = 0;
        }
      }
    }
  });
}

// The strides of t with dim zeroed: the indexed coordinate comes from the index instead.
Shape without_dim(const Shape& strides, int64_t dim) {
  Shape s = strides;
  s[dim] = 0;
  return s;
}

// Throws IndexError naming op, the first bad value and the valid range unless every element of
// index (int32 or int64, any shape and strides) lies in [0, size). dim is named in the message.
void check_indices(const Tensor& index, int64_t size, int64_t dim, const char* op) {
  KILN_DISPATCH_INDEX(index.dtype, op, {
    const scalar_t* ip = index.data<scalar_t>();
    std::atomic<bool> bad{false};
    strided_for<1>(index.shape, {&index.strides},
                   [&](int64_t n, const std::array<int64_t, 1>& off, const std::array<int64_t, 1>& st) {
                     bool b = false;
                     for (int64_t k = 0; k < n; k++) {
                       const int64_t v = int64_t(ip[off[0] + k * st[0]]);
                       b |= v < 0 || v >= size;
                     }
                     if (b) bad.store(true, std::memory_order_relaxed);
                   });
    if (!bad.load()) return;
    // Rare path: find the first bad value in row-major order, so the message does not depend on threads.
    int64_t first = 0;
    bool found = false;
    strided_for<1>(index.shape, {&index.strides},
                   [&](int64_t n, const std::array<int64_t, 1>& off, const std::array<int64_t, 1>& st) {
                     for (int64_t k = 0; k < n && !found; k++) {
                       const int64_t v = int64_t(ip[off[0] + k * st[0]]);
                       if (v < 0 || v >= size) {
                         first = v;
                         found = true;
                       }
                     }
                   },
                   int64_t(1) << 62);
    throw Error(ErrorCode::Index, op,
                size > 0 ? str_cat("index ", first, " is out of range for dim ", dim, " of size ", size,
                                   " (valid range [0, ", size - 1, "])")
                         : str_cat("index ", first, " is out of range for dim ", dim, " of size 0 (no valid index)"));
  });
}

// index_select and embedding; op names the caller.
void index_select_named(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* op) {
  if (x.dim() == 0) return index_select_named(at_least_1d(x), dim, at_least_1d(index), at_least_1d(out), op);
  const ops::IndexedShape s = ops::check_index_select(x, dim, index, out, op);
  check_indices(index, x.shape[dim], dim, op);
  KILN_DISPATCH_ALL(x.dtype, op, {
    using T = scalar_t;
    KILN_DISPATCH_INDEX(index.dtype, op, {
      gather_loop<T, scalar_t>(s.shape, out.data<T>(), out.strides, x.data<T>(), s.base_strides, x.strides[dim],
                               index.data<scalar_t>(), s.index_strides);
    });
  });
}

// index_add and embedding_backward; op names the caller.
void index_add_named(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, const char* op) {
  if (out.dim() == 0) return index_add_named(at_least_1d(out), dim, at_least_1d(index), at_least_1d(src), op);
  const ops::IndexedShape s = ops::check_index_add(out, dim, index, src, op);
  check_indices(index, out.shape[dim], dim, op);
  DISPATCH_ADDABLE(out.dtype, op, {
    using T = scalar_t;
    KILN_DISPATCH_INDEX(index.dtype, op, {
      scatter_loop<T, scalar_t>(s.shape, out.data<T>(), s.base_strides, out.strides[dim], out.shape[dim],
                                src.data<T>(), src.strides, index.data<scalar_t>(), s.index_strides);
    });
  });
}

}  // namespace

void gather(const Tensor& x_in, int64_t dim, const Tensor& index_in, const Tensor& out_in) {
  const char* op = "gather";
  const Tensor x = at_least_1d(x_in), index = at_least_1d(index_in), out = at_least_1d(out_in);
  ops::check_gather(x, dim, index, out, op);
  check_indices(index, x.shape[dim], dim, op);
  const Shape xs = without_dim(x.strides, dim);
  KILN_DISPATCH_ALL(x.dtype, op, {
    using T = scalar_t;
    KILN_DISPATCH_INDEX(index.dtype, op, {
      gather_loop<T, scalar_t>(index.shape, out.data<T>(), out.strides, x.data<T>(), xs, x.strides[dim],
                               index.data<scalar_t>(), index.strides);
    });
  });
}

void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  index_select_named(x, dim, index, out, "indexSelect");
}

void embedding(const Tensor& weight, const Tensor& indices, const Tensor& out) {
  index_select_named(weight, 0, indices, out, "embedding");
}

void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  index_add_named(out, dim, index, src, "indexAdd");
}

void embedding_backward(const Tensor& grad_weight, const Tensor& indices, const Tensor& grad) {
  index_add_named(grad_weight, 0, indices, grad, "embedding_backward");
}

void scatter_add(const Tensor& out_in, int64_t dim, const Tensor& index_in, const Tensor& src_in) {
  const char* op = "scatterAdd";
  const Tensor out = at_least_1d(out_in), index = at_least_1d(index_in), src = at_least_1d(src_in);
  ops::check_scatter_add(out, dim, index, src, op);
  check_indices(index, out.shape[dim], dim, op);
  const Shape os = without_dim(out.strides, dim);
  DISPATCH_ADDABLE(out.dtype, op, {
    using T = scalar_t;
    KILN_DISPATCH_INDEX(index.dtype, op, {
      scatter_loop<T, scalar_t>(index.shape, out.data<T>(), os, out.strides[dim], out.shape[dim], src.data<T>(),
                                src.strides, index.data<scalar_t>(), index.strides);
    });
  });
}

}  // namespace kiln::cpu
