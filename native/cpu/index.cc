// CPU indexing kernels. All four ops reduce to two strided loops over an iteration shape S in
// which every operand is described by strides (zero where it does not vary):
//   gather_loop:  dst[p] = src[p + idx[p] * src_dim_stride]      (gather, index_select, embedding)
//   scatter_loop: dst[p + idx[p] * dst_dim_stride] += src[p]      (scatter_add, index_add)
// The scatter loop is parallel without races or atomics: dims along which dst does not move (the
// indexed ones, R) are walked serially inside one task, and tasks split only the dims along which
// dst moves (P), plus disjoint ranges of index values when those give too few tasks. Every
// destination element is therefore updated by one task, from the R points in row-major order,
// whatever the thread count, so results are bitwise reproducible.
#include "index.h"
#include <atomic>
#include <cstring>
#include "../core/convert.h"
#include "../core/strided.h"

namespace kiln::cpu {

namespace {

constexpr int64_t kGrain = 32768;  // elements of work below which a loop stays on one thread

void check_index_dtype(const Tensor& index, const char* op) {
  KILN_CHECK(is_integral(index.dtype), DType, op, "index must be int32 or int64, got ", dtype_name(index.dtype));
}

void check_dim(int64_t dim, const Tensor& t, const char* op) {
  KILN_CHECK(dim >= 0 && dim < t.dim(), Index, op, "dim ", dim, " out of range for a tensor of shape ",
             shape_str(t.shape));
}

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

// base's dims with dim replaced by all of index's dims (see IndexedShape).
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

// The strides of t with dim zeroed: the indexed coordinate comes from the index instead.
Shape without_dim(const Shape& strides, int64_t dim) {
  Shape s = strides;
  s[dim] = 0;
  return s;
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

void check_indices(const Tensor& index, int64_t size, int64_t dim, const char* op) {
  check_index_dtype(index, op);
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

// Shared with the CUDA twins (declared in the header).

// 0-d tensors take part as [1]: gather and the adds index their one dim.
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

void gather(const Tensor& x_in, int64_t dim, const Tensor& index_in, const Tensor& out_in) {
  const char* op = "gather";
  const Tensor x = at_least_1d(x_in), index = at_least_1d(index_in), out = at_least_1d(out_in);
  check_gather(x, dim, index, out, op);
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

void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* op) {
  if (x.dim() == 0) return index_select(at_least_1d(x), dim, at_least_1d(index), at_least_1d(out), op);
  const IndexedShape s = check_index_select(x, dim, index, out, op);
  check_indices(index, x.shape[dim], dim, op);
  KILN_DISPATCH_ALL(x.dtype, op, {
    using T = scalar_t;
    KILN_DISPATCH_INDEX(index.dtype, op, {
      gather_loop<T, scalar_t>(s.shape, out.data<T>(), out.strides, x.data<T>(), s.base_strides, x.strides[dim],
                               index.data<scalar_t>(), s.index_strides);
    });
  });
}

void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, const char* op) {
  if (out.dim() == 0) return index_add(at_least_1d(out), dim, at_least_1d(index), at_least_1d(src), op);
  const IndexedShape s = check_index_add(out, dim, index, src, op);
  check_indices(index, out.shape[dim], dim, op);
  DISPATCH_ADDABLE(out.dtype, op, {
    using T = scalar_t;
    KILN_DISPATCH_INDEX(index.dtype, op, {
      scatter_loop<T, scalar_t>(s.shape, out.data<T>(), s.base_strides, out.strides[dim], out.shape[dim],
                                src.data<T>(), src.strides, index.data<scalar_t>(), s.index_strides);
    });
  });
}

void scatter_add(const Tensor& out_in, int64_t dim, const Tensor& index_in, const Tensor& src_in) {
  const char* op = "scatterAdd";
  const Tensor out = at_least_1d(out_in), index = at_least_1d(index_in), src = at_least_1d(src_in);
  check_scatter_add(out, dim, index, src, op);
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
