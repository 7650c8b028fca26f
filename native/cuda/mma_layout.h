// The fragment layout of mma.sync.aligned.m16n8k16 with bfloat16 operands (PTX ISA, "Matrix
// Fragments for mma.m16n8k16 with floating point type") and the loads that fill fragments from
// row-major bfloat16 tiles. Plain C++ usable on the host, so test/ops/attention_mma_host.test.ts
// checks exactly these functions against an m16n8k16 emulation written from the PTX tables; the
// device-only parts (the instruction itself, bfloat16 rounding, cp.async) are in mma.cuh.
//
// Fragments of one warp, lane l, g = l / 4, t = l % 4; each 32-bit register holds two bfloat16, the
// lower-indexed element in the low half:
//   A (16 x 16, rows m, cols k): reg r holds (m, k), (m, k + 1) with m = g + 8 (r % 2), k = 2 t + 8 (r / 2)
//   B (16 x 8, rows k, cols n):  reg r holds (k, n), (k + 1, n) with k = 2 t + 8 r, n = g
//   C (16 x 8, float32):         elem i is (g + 8 (i / 2), 2 t + i % 2)
// So the C fragments of two adjacent 8-column tiles (cols 16 j .. 16 j + 15) are, element for element,
// the A fragment of the 16 x 16 block at k = 16 j (a_from_c): a product's result feeds the next
// product from registers, as FlashAttention-2 does with P.
#pragma once
#include <cstdint>
#include "../core/host_device.h"

namespace kiln::cuda::mma {

struct Coord {
  int row, col;
};

// The coordinates above; the loaders below read through them.
KILN_HOST_DEVICE constexpr Coord a_coord(int lane, int reg) {
  return {lane / 4 + 8 * (reg % 2), 2 * (lane % 4) + 8 * (reg / 2)};
}
KILN_HOST_DEVICE constexpr Coord b_coord(int lane, int reg) { return {2 * (lane % 4) + 8 * reg, lane / 4}; }
KILN_HOST_DEVICE constexpr Coord c_coord(int lane, int i) {
  return {lane / 4 + 8 * (i / 2), 2 * (lane % 4) + i % 2};
}

// Two bfloat16 bit patterns as one register, lo in the low half.
KILN_HOST_DEVICE uint32_t pack_bits(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

// Two adjacent bfloat16 (p[0], p[1]) as one register: one 32-bit load on the device (p is 4-byte
// aligned: even offsets into even-strided tiles), the same value on the host.
KILN_HOST_DEVICE uint32_t load_pair(const uint16_t* p) {
#ifdef __CUDA_ARCH__
  return *reinterpret_cast<const uint32_t*>(p);
#else
  return pack_bits(p[0], p[1]);
#endif
}

// A fragment of the 16 x 16 block at base (element (m, k) at base[m * stride + k]).
template <typename E>
KILN_HOST_DEVICE void load_a(uint32_t (&a)[4], const E* base, int stride, int lane) {
  const uint16_t* p = reinterpret_cast<const uint16_t*>(base);
#pragma unroll
  for (int r = 0; r < 4; r++) {
    const Coord c = a_coord(lane, r);
    a[r] = load_pair(p + c.row * stride + c.col);
  }
}

// B fragment of the 16 x 8 block whose element (k, n) is at base[n * stride + k]: B is the transpose
// of row-major rows (keys or queries), so the two k of a register are adjacent in memory.
template <typename E>
KILN_HOST_DEVICE void load_b(uint32_t (&b)[2], const E* base, int stride, int lane) {
  const uint16_t* p = reinterpret_cast<const uint16_t*>(base);
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const Coord c = b_coord(lane, r);
    b[r] = load_pair(p + c.col * stride + c.row);
  }
}

// B fragment of the 16 x 8 block whose element (k, n) is at base[k * stride + n] (row-major rows
// indexed by k): the two k of a register are a row apart, gathered one bfloat16 at a time.
template <typename E>
KILN_HOST_DEVICE void load_b_rows(uint32_t (&b)[2], const E* base, int stride, int lane) {
  const uint16_t* p = reinterpret_cast<const uint16_t*>(base);
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const Coord c = b_coord(lane, r);
    b[r] = pack_bits(p[c.row * stride + c.col], p[(c.row + 1) * stride + c.col]);
  }
}

// The A fragment of columns 16 j .. 16 j + 15 from the C fragments of the 8-column tiles 2 j and
// 2 j + 1 (lo and hi), each pair of values made one register by pack (rounding to bfloat16): A reg
// r = (row g + 8 (r % 2), cols 2 t + 8 (r / 2) + {0, 1}) is elements 2 (r % 2) and 2 (r % 2) + 1 of
// tile 2 j + r / 2.
template <typename Pack>
KILN_HOST_DEVICE void a_from_c(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4], Pack pack) {
#pragma unroll
  for (int r = 0; r < 4; r++) {
    const float(&c)[4] = r / 2 == 0 ? lo : hi;
    a[r] = pack(c[2 * (r % 2)], c[2 * (r % 2) + 1]);
  }
}

}  // namespace kiln::cuda::mma
