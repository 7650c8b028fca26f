// CPU fused attention (the contract is native/ops/attention.h), the twin the CUDA kernels are
// checked against. Per (batch, head) the keys are walked in tiles of kBc with an online softmax,
// so no [L, S] matrix exists: a work item is a tile of kBr query rows of one head, and only a
// kBr x D accumulator, one row of kBc scores and the key tile (transposed, so scores are vectorized
// multiply-adds) are held. Inputs are read through their strides
// (rows of D elements at any row stride; a non-unit stride along D is copied first).
//
// The backward recomputes p = exp(s - lse) tile by tile. It runs as two passes so no two threads
// add into one gradient row (results do not depend on thread timing): pass 1 owns a tile of key
// rows and accumulates their dk and dv over every query that sees them; pass 2 owns a tile of
// query rows and accumulates dq. q is scaled before the product (s = (q * scale) . k), as the
// unfused path does.
#include "../ops/attention.h"
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>
#include "../core/parallel.h"
#include "copy.h"
#include "simd.h"

namespace kiln::cpu {

namespace {

constexpr int64_t kBr = 64;  // query rows per tile
constexpr int64_t kBc = 64;  // key rows per tile

// One head's rows of D elements, the row stride apart.
template <typename T>
struct Rows {
  T* p;
  int64_t rs;
  T* row(int64_t i) const { return p + i * rs; }
};

// The problem's sizes and how causal masking cuts each query row.
struct Dims {
  int64_t B, H, L, S, D;
  bool causal;
  // Number of keys query i sees (end-aligned causal mask: keys 0..S-L+i).
  int64_t keys(int64_t i) const { return causal ? std::min(S, S - L + i + 1) : S; }
  // The first query that sees key j.
  int64_t first_query(int64_t j) const { return causal ? std::max<int64_t>(0, j - (S - L)) : 0; }
};

// t when its last dim has unit stride, else a contiguous copy.
Tensor unit_rows(const Tensor& t) {
  if (t.strides[3] == 1 || t.shape[3] <= 1) return t;
  Tensor c = Tensor::empty(t.shape, t.dtype, t.device());
  copy(t, c);
  return c;
}

template <typename T>
Rows<T> head(const Tensor& t, int64_t bh, int64_t H) {
  const int64_t b = bh / H, h = bh % H;
  return {t.data<T>() + b * t.strides[0] + h * t.strides[1], t.strides[2]};
}

template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t d = 0;
  for (; d + 4 <= n; d += 4) {
    s0 += a[d] * b[d];
    s1 += a[d + 1] * b[d + 1];
    s2 += a[d + 2] * b[d + 2];
    s3 += a[d + 3] * b[d + 3];
  }
  for (; d < n; d++) s0 += a[d] * b[d];
  return (s0 + s1) + (s2 + s3);
}

template <typename T>
inline void axpy(T a, const T* __restrict x, T* __restrict y, int64_t n) {
  for (int64_t d = 0; d < n; d++) y[d] += a * x[d];
}

// Rows j0..j0+cols of X transposed into xt (D x kBc, zero past cols), so the scores of a query row
// against a tile are kBc-wide multiply-adds over D (vectorized) rather than one reduction per key.
template <typename T>
void transpose_tile(const Rows<const T>& X, int64_t j0, int64_t cols, int64_t D, T* xt) {
  for (int64_t d = 0; d < D; d++) std::fill(xt + d * kBc + cols, xt + (d + 1) * kBc, T(0));
  for (int64_t c = 0; c < cols; c++) {
    const T* x = X.row(j0 + c);
    for (int64_t d = 0; d < D; d++) xt[d * kBc + c] = x[d];
  }
}

// s[c] = a . x_c for the kBc rows of a transposed tile xt.
template <typename T>
inline void tile_dots(const T* __restrict a, const T* __restrict xt, int64_t D, T* __restrict s) {
  std::fill(s, s + kBc, T(0));
  for (int64_t d = 0; d < D; d++) {
    const T ad = a[d];
    const T* x = xt + d * kBc;
    for (int64_t c = 0; c < kBc; c++) s[c] += ad * x[c];
  }
}

// Scaled copies of query rows i0..i0+rows into qs (rows x D).
template <typename T>
void load_queries(const Rows<const T>& Q, int64_t i0, int64_t rows, int64_t D, T scale, T* qs) {
  for (int64_t r = 0; r < rows; r++) {
    const T* q = Q.row(i0 + r);
    for (int64_t d = 0; d < D; d++) qs[r * D + d] = q[d] * scale;
  }
}

template <typename T>
void forward(const Tensor& q, const Tensor& k, const Tensor& v, const Dims& n, T scale, const Tensor& out,
             const Tensor& lse) {
  const int64_t D = n.D, qtiles = (n.L + kBr - 1) / kBr;
  parallel_for(n.B * n.H * qtiles, 1, [&](int64_t wb, int64_t we) {
    std::vector<T> qs(kBr * D), acc(kBr * D), m(kBr), l(kBr), s(kBc), kt(D * kBc);
    run_simd([&] {
      for (int64_t w = wb; w < we; w++) {
        const int64_t bh = w / qtiles, i0 = (w % qtiles) * kBr, rows = std::min(kBr, n.L - i0);
        const Rows<const T> Q = head<const T>(q, bh, n.H), K = head<const T>(k, bh, n.H), V = head<const T>(v, bh, n.H);
        load_queries(Q, i0, rows, D, scale, qs.data());
        std::fill(acc.begin(), acc.end(), T(0));
        std::fill(m.begin(), m.end(), -std::numeric_limits<T>::infinity());
        std::fill(l.begin(), l.end(), T(0));
        const int64_t jend = n.keys(i0 + rows - 1);
        for (int64_t j0 = 0; j0 < jend; j0 += kBc) {
          transpose_tile(K, j0, std::min(kBc, n.S - j0), D, kt.data());
          for (int64_t r = 0; r < rows; r++) {
            const int64_t cols = std::min(kBc, n.keys(i0 + r) - j0);
            if (cols <= 0) continue;
            tile_dots(qs.data() + r * D, kt.data(), D, s.data());
            T mx = m[r];
            for (int64_t c = 0; c < cols; c++) mx = std::max(mx, s[c]);
            const T corr = std::exp(m[r] - mx);
            T* ar = acc.data() + r * D;
            for (int64_t d = 0; d < D; d++) ar[d] *= corr;
            T sum = 0;
            for (int64_t c = 0; c < cols; c++) {
              const T p = std::exp(s[c] - mx);
              sum += p;
              axpy(p, V.row(j0 + c), ar, D);
            }
            l[r] = l[r] * corr + sum;
            m[r] = mx;
          }
        }
        T* o = out.data<T>() + (bh * n.L + i0) * D;
        T* ls = lse.data<T>() + bh * n.L + i0;
        for (int64_t r = 0; r < rows; r++) {
          const T inv = T(1) / l[r];
          for (int64_t d = 0; d < D; d++) o[r * D + d] = acc[r * D + d] * inv;
          ls[r] = m[r] + std::log(l[r]);
        }
      }
    });
  });
}

// The backward's shared inner loop over one tile: calls f(r, c, p, ds) for each query row r < rows of
// the tile at i0 (qs: its scaled rows) and each key c < cols of the tile at j0 that the row sees,
// with p = exp(s - lse) the recomputed probability and ds = p * (dout . v - delta) the score gradient.
// kt and vt are the key tile's k and v rows transposed (transpose_tile); sp and dp scratch of kBc.
template <typename T, typename F>
void tile_grads(const Dims& n, int64_t bh, int64_t i0, int64_t rows, int64_t j0, int64_t cols, const T* qs,
                const T* kt, const T* vt, const Rows<const T>& dO, const T* lse, const T* delta, T* sp, T* dp,
                F f) {
  for (int64_t r = 0; r < rows; r++) {
    const int64_t i = i0 + r, seen = std::min(cols, n.keys(i) - j0);
    if (seen <= 0) continue;
    const T li = lse[bh * n.L + i], di = delta[bh * n.L + i];
    tile_dots(qs + r * n.D, kt, n.D, sp);
    tile_dots(dO.row(i), vt, n.D, dp);
    for (int64_t c = 0; c < seen; c++) {
      const T p = std::exp(sp[c] - li);
      f(r, c, p, p * (dp[c] - di));
    }
  }
}

template <typename T>
void backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& dout,
              const Tensor& lse, const Dims& n, T scale, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  const int64_t D = n.D, BH = n.B * n.H;
  // delta_i = dout_i . out_i: the row sum of p * dp that the softmax backward subtracts.
  std::vector<T> delta(BH * n.L);
  parallel_for(BH, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t bh = b0; bh < b1; bh++) {
      const Rows<const T> O = head<const T>(out, bh, n.H), dO = head<const T>(dout, bh, n.H);
      for (int64_t i = 0; i < n.L; i++) delta[bh * n.L + i] = dot(O.row(i), dO.row(i), D);
    }
  });
  const T* lsp = lse.data<T>();
  // Pass 1: dk and dv of a tile of keys, over every query tile that sees them.
  const int64_t ktiles = (n.S + kBc - 1) / kBc;
  parallel_for(BH * ktiles, 1, [&](int64_t wb, int64_t we) {
    std::vector<T> qs(kBr * D), gk(kBc * D), gv(kBc * D), kt(D * kBc), vt(D * kBc), sp(kBc), dp(kBc);
    run_simd([&] {
      for (int64_t w = wb; w < we; w++) {
        const int64_t bh = w / ktiles, j0 = (w % ktiles) * kBc, cols = std::min(kBc, n.S - j0);
        const Rows<const T> Q = head<const T>(q, bh, n.H), K = head<const T>(k, bh, n.H), V = head<const T>(v, bh, n.H);
        const Rows<const T> dO = head<const T>(dout, bh, n.H);
        std::fill(gk.begin(), gk.end(), T(0));
        std::fill(gv.begin(), gv.end(), T(0));
        transpose_tile(K, j0, cols, D, kt.data());
        transpose_tile(V, j0, cols, D, vt.data());
        for (int64_t i0 = n.first_query(j0) / kBr * kBr; i0 < n.L; i0 += kBr) {
          const int64_t rows = std::min(kBr, n.L - i0);
          load_queries(Q, i0, rows, D, scale, qs.data());
          tile_grads(n, bh, i0, rows, j0, cols, qs.data(), kt.data(), vt.data(), dO, lsp, delta.data(), sp.data(),
                     dp.data(), [&](int64_t r, int64_t c, T p, T ds) {
            axpy(p, dO.row(i0 + r), gv.data() + c * D, D);
            axpy(ds, qs.data() + r * D, gk.data() + c * D, D);
          });
        }
        std::copy(gk.begin(), gk.begin() + cols * D, dk.data<T>() + (bh * n.S + j0) * D);
        std::copy(gv.begin(), gv.begin() + cols * D, dv.data<T>() + (bh * n.S + j0) * D);
      }
    });
  });
  // Pass 2: dq of a tile of queries, over every key they see.
  const int64_t qtiles = (n.L + kBr - 1) / kBr;
  parallel_for(BH * qtiles, 1, [&](int64_t wb, int64_t we) {
    std::vector<T> qs(kBr * D), gq(kBr * D), kt(D * kBc), vt(D * kBc), sp(kBc), dp(kBc);
    run_simd([&] {
      for (int64_t w = wb; w < we; w++) {
        const int64_t bh = w / qtiles, i0 = (w % qtiles) * kBr, rows = std::min(kBr, n.L - i0);
        const Rows<const T> Q = head<const T>(q, bh, n.H), K = head<const T>(k, bh, n.H), V = head<const T>(v, bh, n.H);
        const Rows<const T> dO = head<const T>(dout, bh, n.H);
        load_queries(Q, i0, rows, D, scale, qs.data());
        std::fill(gq.begin(), gq.end(), T(0));
        const int64_t jend = n.keys(i0 + rows - 1);
        for (int64_t j0 = 0; j0 < jend; j0 += kBc) {
          const int64_t cols = std::min(kBc, n.S - j0);
          transpose_tile(K, j0, cols, D, kt.data());
          transpose_tile(V, j0, cols, D, vt.data());
          tile_grads(n, bh, i0, rows, j0, cols, qs.data(), kt.data(), vt.data(), dO, lsp, delta.data(), sp.data(),
                     dp.data(), [&](int64_t r, int64_t c, T, T ds) {
            axpy(ds, K.row(j0 + c), gq.data() + r * D, D);
          });
        }
        T* o = dq.data<T>() + (bh * n.L + i0) * D;
        for (int64_t e = 0; e < rows * D; e++) o[e] = gq[e] * scale;
      }
    });
  });
}

Dims dims_of(const Tensor& q, const Tensor& k, bool causal) {
  return {q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.shape[3], causal};
}

}  // namespace

void attention_forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, bool causal, double scale,
                       const Tensor& out, const Tensor& lse) {
  ops::check_attention_forward(q_in, k_in, v_in, causal, scale, out, lse);
  const Tensor q = unit_rows(q_in), k = unit_rows(k_in), v = unit_rows(v_in);
  KILN_DISPATCH_FLOAT(q.dtype, "flashAttention", {
    forward<scalar_t>(q, k, v, dims_of(q, k, causal), scalar_t(scale), out, lse);
  });
}

void attention_backward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& out_in,
                        const Tensor& dout_in, const Tensor& lse, bool causal, double scale, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv) {
  ops::check_attention_backward(q_in, k_in, v_in, out_in, dout_in, lse, causal, scale, dq, dk, dv);
  const Tensor q = unit_rows(q_in), k = unit_rows(k_in), v = unit_rows(v_in);
  const Tensor out = unit_rows(out_in), dout = unit_rows(dout_in);
  KILN_DISPATCH_FLOAT(q.dtype, "flashAttention backward", {
    backward<scalar_t>(q, k, v, out, dout, lse, dims_of(q, k, causal), scalar_t(scale), dq, dk, dv);
  });
}

}  // namespace kiln::cpu
