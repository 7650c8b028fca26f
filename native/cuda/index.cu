// CUDA indexing kernels (contract: native/ops/index.h), twins of native/cpu/index.cc.
//   gather / index_select: a strided gather kernel; contiguous index_select (embedding) copies whole
//     rows with 16-byte vectors, G lanes per row.
//   index_add (embedding backward): deterministic, no float atomics. The index values are sorted
//     (stable radix sort of (value, position), CUB); the sorted run is cut into tiles of kTile
//     positions; each tile sums, in position order, the source rows of every value it holds
//     (starting from the target row) and writes rows whose run of equal values lies inside it; a run
//     crossing tiles leaves one partial row per tile, summed in order by the tile where it started.
//     Results do not depend on scheduling; they equal the CPU's up to the grouping of the sums
//     (exactly, for runs inside one tile and for integers).
//   scatter_add (gather backward): atomicAdd per element, so float sums over repeated targets
//     depend on the order atomics land (not bitwise reproducible run to run).
// Out-of-range index values are skipped and recorded through an IndexGuard (device_errors.h).
#include "../ops/index.h"
#include <cub/device/device_radix_sort.cuh>
#include <algorithm>
#include <type_traits>
#include "common.cuh"
#include "copy.h"
#include "device_errors.h"

namespace kiln::cuda {

using ops::IndexedShape;
using ops::at_least_1d;
using ops::check_gather;
using ops::check_index_add;
using ops::check_index_select;
using ops::check_scatter_add;

namespace {

// Types the adds support: the numeric ones and the half types (which accumulate in float32).
#define DISPATCH_ADDABLE(dt, op, ...)                     \
  switch (dt) {                                           \
    KILN_DTYPE_CASE(Float32, float, __VA_ARGS__)          \
    KILN_DTYPE_CASE(Float64, double, __VA_ARGS__)         \
    KILN_DTYPE_CASE(Int32, int32_t, __VA_ARGS__)          \
    KILN_DTYPE_CASE(Int64, int64_t, __VA_ARGS__)          \
    KILN_DTYPE_CASE(BFloat16, __nv_bfloat16, __VA_ARGS__) \
    KILN_DTYPE_CASE(Float16, __half, __VA_ARGS__)         \
    KILN_DTYPE_FAIL(dt, op);                              \
  }

template <typename T>
using sum_t = std::conditional_t<std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>, float, T>;

// W values of T moved by one (or, above 16 bytes, two) vector loads.
template <typename T, int W>
struct alignas(W * sizeof(T) > 16 ? 16 : W * sizeof(T)) Vec {
  T v[W];
};

constexpr int64_t kTile = 32;  // sorted positions per tile of index_add
constexpr int kBatch = 4;      // loads issued together before their values are used

// The sizes of base before dim (A), at dim (V) and after it (B).
struct Split {
  int64_t A = 1, V = 1, B = 1;
};

Split split_at(const Shape& shape, int64_t dim) {
  Split s;
  for (int64_t k = 0; k < int64_t(shape.size()); k++) (k < dim ? s.A : k == dim ? s.V : s.B) *= shape[k];
  return s;
}

Tensor scratch(int64_t bytes, Device d) { return Tensor::empty({bytes}, DType::Bool, d); }

bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Lanes per group for rows of `units` vectors: a power of two up to a warp.
int lanes_for(int64_t units) {
  int g = 1;
  while (g < 32 && g < units) g *= 2;
  return g;
}

// Blocks for a grid-stride loop over `groups` groups of `lanes` threads.
unsigned grid_groups(int64_t groups, int lanes, Device d) { return grid_for(groups * lanes, d); }

// ---- kernels ----

// Checks every index value (used where the main kernel visits none, e.g. an empty output).
template <typename I>
__global__ void validate_kernel(const I* __restrict__ idx, StridedMeta<1> m, IndexGuard g) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[1];
    m.offsets(i, off);
    const int64_t v = int64_t(idx[off[0]]);
    if (!g.ok(v)) g.report(v, i);
  }
}

// dst[p] = src[p + idx[p] * sdim] over the iteration shape of m (dst, src, idx); the index
// element of iteration point i is (i / pos_div) % pos_mod.
template <typename T, typename I>
__global__ void gather_kernel(T* __restrict__ dst, const T* __restrict__ src, const I* __restrict__ idx,
                              StridedMeta<3> m, int64_t sdim, IndexGuard g, int64_t pos_div, int64_t pos_mod) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[3];
    m.offsets(i, off);
    const int64_t v = int64_t(idx[off[2]]);
    if (g.ok(v)) {
      dst[off[0]] = src[off[1] + v * sdim];
    } else {
      dst[off[0]] = T{};
      g.report(v, (i / pos_div) % pos_mod);
    }
  }
}

// Contiguous index_select: out[a, j, :] = x[a, idx[j], :], rows of `units` vectors U. A group of
// `lanes` threads copies up to 8 * lanes vectors of one row.
template <typename U, typename I>
__global__ void select_rows_kernel(U* __restrict__ dst, const U* __restrict__ src, const I* __restrict__ idx,
                                   StridedMeta<1> im, int64_t J, int64_t V, int64_t rows, int64_t units, int lanes,
                                   IndexGuard g) {
  const int64_t span = int64_t(lanes) * 8;
  const int64_t chunks = (units + span - 1) / span;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int lane = int(tid % lanes);
  for (int64_t grp = tid / lanes; grp < rows * chunks; grp += int64_t(gridDim.x) * blockDim.x / lanes) {
    const int64_t r = grp / chunks, c0 = (grp % chunks) * span;
    const int64_t a = r / J, j = r - a * J;
    int64_t off[1];
    im.offsets(j, off);
    const int64_t v = int64_t(idx[off[0]]);
    U* d = dst + r * units;
    const int64_t c1 = c0 + span < units ? c0 + span : units;
    if (g.ok(v)) {
      const U* s = src + (a * V + v) * units;
#pragma unroll 8
      for (int64_t c = c0 + lane; c < c1; c += lanes) d[c] = s[c];
    } else {
      for (int64_t c = c0 + lane; c < c1; c += lanes) d[c] = U{};
      if (c0 == 0 && lane == 0) g.report(v, j);
    }
  }
}

__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(double* p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(__nv_bfloat16* p, __nv_bfloat16 v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(__half* p, __half v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(int32_t* p, int32_t v) { atomicAdd(reinterpret_cast<int*>(p), int(v)); }
__device__ __forceinline__ void atomic_add(int64_t* p, int64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));  // two's complement
}

// dst[p + idx[p] * ddim] += src[p] over index's shape (m: dst with dim zeroed, src, idx).
template <typename T, typename I>
__global__ void scatter_add_kernel(T* __restrict__ dst, const T* __restrict__ src, const I* __restrict__ idx,
                                   StridedMeta<3> m, int64_t ddim, IndexGuard g) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[3];
    m.offsets(i, off);
    const int64_t v = int64_t(idx[off[2]]);
    if (g.ok(v)) atomic_add(dst + off[0] + v * ddim, src[off[1]]);
    else g.report(v, i);
  }
}

// index_add step 1: keys[j] = idx[j] (bad values become V, sorted last and skipped), pos[j] = j.
template <typename I>
__global__ void sort_keys_kernel(const I* __restrict__ idx, StridedMeta<1> m, uint64_t* __restrict__ keys,
                                 int64_t* __restrict__ pos, IndexGuard g) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[1];
    m.offsets(i, off);
    const int64_t v = int64_t(idx[off[0]]);
    const bool ok = g.ok(v);
    if (!ok) g.report(v, i);
    keys[i] = ok ? uint64_t(v) : uint64_t(g.size);
    pos[i] = i;
  }
}

// The shape of index_add's segmented sums: target [A, V, units], source [A, J, units] in vectors
// of W elements; tiles of kTile sorted positions; groups of `lanes` threads own `lanes` columns
// of one (a, tile).
struct Segments {
  int64_t A, V, J, units, tiles, chunks;
  int lanes;
  __host__ __device__ int64_t groups() const { return A * tiles * chunks; }
};

template <typename S, typename T, int W>
__device__ __forceinline__ void accumulate(S (&acc)[W], const Vec<T, W>& x) {
#pragma unroll
  for (int w = 0; w < W; w++) acc[w] += dconvert<S, T>(x.v[w]);
}

template <typename S, typename T, int W>
__device__ __forceinline__ void load_sum(S (&acc)[W], const Vec<T, W>& x) {
#pragma unroll
  for (int w = 0; w < W; w++) acc[w] = dconvert<S, T>(x.v[w]);
}

template <typename S, typename T, int W>
__device__ __forceinline__ Vec<T, W> to_vec(const S (&acc)[W]) {
  Vec<T, W> r;
#pragma unroll
  for (int w = 0; w < W; w++) r.v[w] = dconvert<T, S>(acc[w]);
  return r;
}

// Decomposes group id grp into (a, tile, column) for Segments kernels; false when the lane has no
// column (the row's last chunk is narrower than the group).
__device__ __forceinline__ bool segment_task(const Segments& s, int64_t grp, int lane, int64_t& a, int64_t& t,
                                             int64_t& c) {
  c = (grp % s.chunks) * s.lanes + lane;
  const int64_t rest = grp / s.chunks;
  t = rest % s.tiles;
  a = rest / s.tiles;
  return c < s.units;
}

// index_add step 3: per (a, tile, column), sums the tile's source rows run by run. A run that
// started in an earlier tile (head) goes to partial slot 0; a run that starts here and goes on
// into the next tile goes to slot 1 (it includes the target row); every other run is final.
template <typename T, int W>
__global__ void segment_tiles_kernel(T* __restrict__ out, const T* __restrict__ src, const uint64_t* __restrict__ keys,
                                     const int64_t* __restrict__ pos, Vec<sum_t<T>, W>* __restrict__ partial, Segments s) {
  using S = sum_t<T>;
  using TV = Vec<T, W>;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int lane = int(tid % s.lanes);
  for (int64_t grp = tid / s.lanes; grp < s.groups(); grp += int64_t(gridDim.x) * blockDim.x / s.lanes) {
    int64_t a, t, c;
    if (!segment_task(s, grp, lane, a, t, c)) continue;
    const TV* src_a = reinterpret_cast<const TV*>(src) + a * s.J * s.units + c;
    TV* out_a = reinterpret_cast<TV*>(out) + a * s.V * s.units + c;
    Vec<S, W>* part = partial + ((a * s.tiles + t) * 2) * s.units + c;
    const int64_t k0 = t * kTile, k1 = k0 + kTile < s.J ? k0 + kTile : s.J;
    uint64_t v = keys[k0];
    if (v >= uint64_t(s.V)) continue;  // only bad indices from here on
    bool head = k0 > 0 && keys[k0 - 1] == v;
    S acc[W];
    if (head) {
#pragma unroll
      for (int w = 0; w < W; w++) acc[w] = S(0);
    } else {
      load_sum(acc, out_a[v * s.units]);
    }
    bool open = true;  // no bad index met: the last run may go on into the next tile
    for (int64_t k = k0; k < k1 && open; k += kBatch) {
      uint64_t kv[kBatch];
      TV x[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; b++) {
        kv[b] = k + b < k1 ? keys[k + b] : uint64_t(s.V);
        if (kv[b] < uint64_t(s.V)) x[b] = src_a[pos[k + b] * s.units];
      }
#pragma unroll
      for (int b = 0; b < kBatch; b++) {
        if (!open || kv[b] >= uint64_t(s.V)) {
          open = open && k + b >= k1;  // past the tile end is not a bad index
          continue;
        }
        if (kv[b] != v) {
          if (head) part[0] = to_vec<S, S, W>(acc);
          else out_a[v * s.units] = to_vec<S, T, W>(acc);
          head = false;
          v = kv[b];
          load_sum(acc, out_a[v * s.units]);
        }
        accumulate(acc, x[b]);
      }
    }
    const bool goes_on = open && k1 < s.J && keys[k1] == v;
    if (head) part[0] = to_vec<S, S, W>(acc);
    else if (goes_on) part[s.units] = to_vec<S, S, W>(acc);
    else out_a[v * s.units] = to_vec<S, T, W>(acc);
  }
}

// index_add step 4: a tile whose last run starts in it and goes on adds the later tiles' slot-0
// partials of that run to its slot 1, in tile order, and writes the target row.
template <typename T, int W>
__global__ void segment_chains_kernel(T* __restrict__ out, const uint64_t* __restrict__ keys,
                                      const Vec<sum_t<T>, W>* __restrict__ partial, Segments s) {
  using S = sum_t<T>;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int lane = int(tid % s.lanes);
  for (int64_t grp = tid / s.lanes; grp < s.groups(); grp += int64_t(gridDim.x) * blockDim.x / s.lanes) {
    int64_t a, t, c;
    if (!segment_task(s, grp, lane, a, t, c)) continue;
    const int64_t k0 = t * kTile, k1 = k0 + kTile;
    if (k1 >= s.J) continue;
    const uint64_t v = keys[k1 - 1];
    if (v >= uint64_t(s.V) || keys[k1] != v || (k0 > 0 && keys[k0 - 1] == v)) continue;
    const Vec<S, W>* part = partial + (a * s.tiles * 2) * s.units + c;
    S acc[W];
    load_sum(acc, part[(t * 2 + 1) * s.units]);
    bool more = true;
    for (int64_t t2 = t + 1; more; t2 += kBatch) {
      bool in[kBatch];
      Vec<S, W> x[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; b++) {
        in[b] = t2 + b < s.tiles && keys[(t2 + b) * kTile] == v;
        if (in[b]) x[b] = part[(t2 + b) * 2 * s.units];
      }
#pragma unroll
      for (int b = 0; b < kBatch; b++) {
        more = more && in[b];
        if (more) accumulate(acc, x[b]);
      }
    }
    reinterpret_cast<Vec<T, W>*>(out)[(a * s.V + int64_t(v)) * s.units + c] = to_vec<S, T, W>(acc);
  }
}

// ---- launchers ----

template <typename I>
void validate(const Tensor& index, const IndexGuard& g, const char* op) {
  const int64_t n = index.numel();
  if (n == 0) return;
  const Device d = index.device();
  const StridedMeta<1> m = make_meta<1>(op, index.shape, {&index.strides});
  validate_kernel<I><<<grid_for(n, d), kThreads, 0, stream(d)>>>(index.data<I>(), m, g);
  KILN_CUDA_LAUNCH_CHECK(op);
}

// The widest vector (16, 8, 4, 2 or 1 bytes) that divides a row of row_bytes and aligns both pointers.
int vector_bytes(int64_t row_bytes, const void* a, const void* b) {
  int u = 16;
  while (u > 1 && (row_bytes % u != 0 || !aligned_to(a, u) || !aligned_to(b, u))) u /= 2;
  return u;
}

template <typename U, typename I>
void launch_select_rows(const Tensor& x, const Tensor& index, const Tensor& out, const Split& s, IndexGuard g,
                        int64_t row_bytes, const char* op) {
  const Device d = x.device();
  const int64_t J = index.numel(), rows = s.A * J, units = row_bytes / int64_t(sizeof(U));
  const int lanes = lanes_for(units);
  const int64_t groups = rows * ((units + lanes * 8 - 1) / (lanes * 8));
  const StridedMeta<1> im = make_meta<1>(op, index.shape, {&index.strides});
  select_rows_kernel<U, I><<<grid_groups(groups, lanes, d), kThreads, 0, stream(d)>>>(
      static_cast<U*>(out.data_ptr()), static_cast<const U*>(x.data_ptr()), index.data<I>(), im, J, s.V, rows, units,
      lanes, g);
  KILN_CUDA_LAUNCH_CHECK(op);
}

template <typename I>
void select_rows(const Tensor& x, const Tensor& index, const Tensor& out, const Split& s, IndexGuard g, const char* op) {
  const int64_t row_bytes = s.B * int64_t(x.itemsize());
  switch (vector_bytes(row_bytes, x.data_ptr(), out.data_ptr())) {
    case 16: return launch_select_rows<uint4, I>(x, index, out, s, g, row_bytes, op);
    case 8: return launch_select_rows<uint2, I>(x, index, out, s, g, row_bytes, op);
    case 4: return launch_select_rows<uint32_t, I>(x, index, out, s, g, row_bytes, op);
    case 2: return launch_select_rows<uint16_t, I>(x, index, out, s, g, row_bytes, op);
    default: return launch_select_rows<uint8_t, I>(x, index, out, s, g, row_bytes, op);
  }
}

// Launches gather_kernel over shape S (operands dst, src with dim zeroed, idx).
template <typename T, typename I>
void launch_gather(const Shape& S, const Tensor& out, const Shape& out_strides, const Tensor& x, const Shape& x_strides,
                   int64_t sdim, const Tensor& index, const Shape& index_strides, IndexGuard g, int64_t pos_div,
                   const char* op) {
  const Device d = x.device();
  const int64_t n = shape_numel(S);
  const StridedMeta<3> m = make_meta<3>(op, S, {&out_strides, &x_strides, &index_strides});
  gather_kernel<T, I><<<grid_for(n, d), kThreads, 0, stream(d)>>>(out.data<T>(), x.data<T>(), index.data<I>(), m, sdim,
                                                                   g, pos_div, std::max<int64_t>(index.numel(), 1));
  KILN_CUDA_LAUNCH_CHECK(op);
}

template <typename T, int W>
void launch_segments(const Tensor& out, const Tensor& src, const Tensor& keys, const Tensor& pos, const Split& sp,
                     int64_t J, const char* op) {
  const Device d = out.device();
  Segments s{sp.A, sp.V, J, sp.B / W, (J + kTile - 1) / kTile, 0, 0};
  s.lanes = lanes_for(s.units);
  s.chunks = (s.units + s.lanes - 1) / s.lanes;
  using SV = Vec<sum_t<T>, W>;
  Tensor partial = scratch(s.A * s.tiles * 2 * s.units * int64_t(sizeof(SV)), d);
  const unsigned grid = grid_groups(s.groups(), s.lanes, d);
  cudaStream_t st = stream(d);
  segment_tiles_kernel<T, W><<<grid, kThreads, 0, st>>>(out.data<T>(), src.data<T>(), keys.data<uint64_t>(),
                                                        pos.data<int64_t>(), partial.data<SV>(), s);
  KILN_CUDA_LAUNCH_CHECK(op);
  segment_chains_kernel<T, W><<<grid, kThreads, 0, st>>>(out.data<T>(), keys.data<uint64_t>(), partial.data<SV>(), s);
  KILN_CUDA_LAUNCH_CHECK(op);
}

// index_add step 2: sorts (keys, pos) by key over the bits that V needs (bad indices carry the key V).
void sort_pairs(Tensor& keys, Tensor& pos, int64_t V, const char* op) {
  const Device d = keys.device();
  const int64_t n = keys.numel();
  int bits = 1;
  while (bits < 64 && (uint64_t(V) >> bits) != 0) bits++;
  Tensor keys_out = Tensor::empty({n}, DType::Int64, d), pos_out = Tensor::empty({n}, DType::Int64, d);
  size_t temp_bytes = 0;
  KILN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys.data<uint64_t>(), keys_out.data<uint64_t>(),
                                                  pos.data<int64_t>(), pos_out.data<int64_t>(), n, 0, bits, stream(d)),
                  op);
  Tensor temp = scratch(std::max<int64_t>(int64_t(temp_bytes), 1), d);
  KILN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes, keys.data<uint64_t>(),
                                                  keys_out.data<uint64_t>(), pos.data<int64_t>(),
                                                  pos_out.data<int64_t>(), n, 0, bits, stream(d)),
                  op);
  keys = keys_out;
  pos = pos_out;
}

template <typename T>
void index_add_typed(const Tensor& out, const Tensor& index, const Tensor& src, const Split& sp, IndexGuard g,
                     const char* op) {
  const Device d = out.device();
  const int64_t J = index.numel();
  if (src.numel() == 0 || out.numel() == 0) {
    KILN_DISPATCH_INDEX(index.dtype, op, { validate<scalar_t>(index, g, op); });
    return;
  }
  Tensor keys = Tensor::empty({J}, DType::Int64, d), pos = Tensor::empty({J}, DType::Int64, d);
  KILN_DISPATCH_INDEX(index.dtype, op, {
    const StridedMeta<1> m = make_meta<1>(op, index.shape, {&index.strides});
    sort_keys_kernel<scalar_t><<<grid_for(J, d), kThreads, 0, stream(d)>>>(index.data<scalar_t>(), m,
                                                                           keys.data<uint64_t>(), pos.data<int64_t>(), g);
  });
  KILN_CUDA_LAUNCH_CHECK(op);
  sort_pairs(keys, pos, sp.V, op);
  Tensor srcc = src;
  if (!src.is_contiguous()) {
    srcc = Tensor::empty(src.shape, src.dtype, d);
    copy(src, srcc);
  }
  constexpr size_t vec_align = alignof(Vec<T, 4>);
  if (sp.B % 4 == 0 && aligned_to(out.data_ptr(), vec_align) && aligned_to(srcc.data_ptr(), vec_align))
    launch_segments<T, 4>(out, srcc, keys, pos, sp, J, op);
  else
    launch_segments<T, 1>(out, srcc, keys, pos, sp, J, op);
}

// index_select and embedding; op names the caller.
void index_select_named(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* op) {
  if (x.dim() == 0) return index_select_named(at_least_1d(x), dim, at_least_1d(index), at_least_1d(out), op);
  const IndexedShape s = check_index_select(x, dim, index, out, op);
  if (index.numel() == 0) return;
  const Split sp = split_at(x.shape, dim);
  IndexGuard g = index_guard(x.device(), op, sp.V, dim);
  KILN_DISPATCH_INDEX(index.dtype, op, {
    using I = scalar_t;
    if (out.numel() == 0) {
      validate<I>(index, g, op);
    } else if (x.is_contiguous() && out.is_contiguous()) {
      select_rows<I>(x, index, out, sp, g, op);
    } else {
      KILN_CUDA_DISPATCH_ALL(x.dtype, op, {
        launch_gather<scalar_t, I>(s.shape, out, out.strides, x, s.base_strides, x.strides[dim], index,
                                   s.index_strides, g, sp.B, op);
      });
    }
  });
}

// index_add and embedding_backward; op names the caller.
void index_add_named(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src, const char* op) {
  if (out.dim() == 0) return index_add_named(at_least_1d(out), dim, at_least_1d(index), at_least_1d(src), op);
  const IndexedShape s = check_index_add(out, dim, index, src, op);
  if (index.numel() == 0) return;
  const Split sp = split_at(out.shape, dim);
  IndexGuard g = index_guard(out.device(), op, sp.V, dim);
  DISPATCH_ADDABLE(out.dtype, op, { index_add_typed<scalar_t>(out, index, src, sp, g, op); });
}

}  // namespace

void gather(const Tensor& x_in, int64_t dim, const Tensor& index_in, const Tensor& out_in) {
  const char* op = "gather";
  const Tensor x = at_least_1d(x_in), index = at_least_1d(index_in), out = at_least_1d(out_in);
  check_gather(x, dim, index, out, op);
  if (index.numel() == 0) return;
  IndexGuard g = index_guard(x.device(), op, x.shape[dim], dim);
  Shape xs = x.strides;
  xs[dim] = 0;
  KILN_CUDA_DISPATCH_ALL(x.dtype, op, {
    using T = scalar_t;
    KILN_DISPATCH_INDEX(index.dtype, op, {
      launch_gather<T, scalar_t>(index.shape, out, out.strides, x, xs, x.strides[dim], index, index.strides, g, 1, op);
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
  check_scatter_add(out, dim, index, src, op);
  const int64_t n = index.numel();
  if (n == 0) return;
  const Device d = out.device();
  IndexGuard g = index_guard(d, op, out.shape[dim], dim);
  Shape os = out.strides;
  os[dim] = 0;
  const StridedMeta<3> m = make_meta<3>(op, index.shape, {&os, &src.strides, &index.strides});
  DISPATCH_ADDABLE(out.dtype, op, {
    using T = scalar_t;
    KILN_DISPATCH_INDEX(index.dtype, op, {
      scatter_add_kernel<T, scalar_t><<<grid_for(n, d), kThreads, 0, stream(d)>>>(
          out.data<T>(), src.data<T>(), index.data<scalar_t>(), m, out.strides[dim], g);
    });
  });
  KILN_CUDA_LAUNCH_CHECK(op);
}

}  // namespace kiln::cuda
