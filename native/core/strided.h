// Strided iteration for elementwise kernels: walks N same-shaped operands (any strides, zero
// strides for broadcast) in row-major order, merging dimensions that are laid out contiguously,
// and hands the innermost run to a loop body so contiguous cases vectorize. Parallel over rows
// (and over chunks of a long inner run) with parallel_for.
#pragma once
#include <array>
#include <cstdint>
#include <vector>
#include "parallel.h"
#include "tensor.h"

namespace kiln {

template <size_t N>
struct StridedPlan {
  Shape shape;                         // merged dims, outermost first; never empty
  std::array<Shape, N> strides;        // per operand, in elements
};

// Merges adjacent dims when every operand is laid out contiguously across them; drops size-1 dims.
template <size_t N>
StridedPlan<N> plan_strided(const Shape& shape, const std::array<const Shape*, N>& strides) {
  StridedPlan<N> p;
  for (size_t d = 0; d < shape.size(); d++) {
    if (shape[d] == 1) continue;
    bool merge = !p.shape.empty();
    if (merge) {
      for (size_t k = 0; k < N; k++)
        if (p.strides[k].back() != (*strides[k])[d] * shape[d]) { merge = false; break; }
    }
    if (merge) {
      p.shape.back() *= shape[d];
      for (size_t k = 0; k < N; k++) p.strides[k].back() = (*strides[k])[d];
    } else {
      p.shape.push_back(shape[d]);
      for (size_t k = 0; k < N; k++) p.strides[k].push_back((*strides[k])[d]);
    }
  }
  if (p.shape.empty()) {
    p.shape.push_back(shape_numel(shape) == 0 ? 0 : 1);
    for (size_t k = 0; k < N; k++) p.strides[k].push_back(1);
  }
  return p;
}

// body(count, offsets, inner_strides): process `count` elements; operand k starts at element
// offset offsets[k] (relative to its data pointer) and advances by inner_strides[k].
template <size_t N, typename Body>
void strided_for(const Shape& shape, const std::array<const Shape*, N>& strides, Body body, int64_t grain = 65536) {
  StridedPlan<N> p = plan_strided<N>(shape, strides);
  const int64_t nd = int64_t(p.shape.size());
  const int64_t cols = p.shape.back();
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < nd; d++) rows *= p.shape[d];
  if (rows == 0 || cols == 0) return;
  std::array<int64_t, N> inner;
  for (size_t k = 0; k < N; k++) inner[k] = p.strides[k].back();

  // Split long inner runs so that few long rows still spread across threads.
  const int64_t total = rows * cols;
  int64_t chunk = cols;
  const int64_t nt = num_threads();
  if (total >= grain && rows < nt * 4) chunk = std::max<int64_t>(4096, (cols + nt * 4 - 1) / (nt * 4));
  const int64_t chunks_per_row = (cols + chunk - 1) / chunk;
  const int64_t tasks = rows * chunks_per_row;
  const int64_t task_grain = std::max<int64_t>(1, grain / std::min(chunk, cols));

  parallel_for(tasks, total >= grain ? task_grain : tasks + 1, [&](int64_t tb, int64_t te) {
    std::array<int64_t, N> off;
    for (int64_t t = tb; t < te; t++) {
      int64_t row = t / chunks_per_row;
      int64_t c0 = (t % chunks_per_row) * chunk;
      off.fill(0);
      for (int64_t d = nd - 2, r = row; d >= 0; d--) {
        int64_t i = r % p.shape[d];
        r /= p.shape[d];
        for (size_t k = 0; k < N; k++) off[k] += i * p.strides[k][d];
      }
      for (size_t k = 0; k < N; k++) off[k] += c0 * inner[k];
      body(std::min(chunk, cols - c0), off, inner);
    }
  });
}

}  // namespace kiln
