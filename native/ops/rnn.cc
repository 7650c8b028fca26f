// The recurrent family's argument checks (native/ops/rnn.h), run by both backends before any kernel.
#include "rnn.h"

namespace kiln::ops {

namespace {

// Kernels index raw rows: every operand is a contiguous [rows, cols] matrix of one dtype.
void check_mat(const char* op, const Tensor& t, const char* name, int64_t rows, int64_t cols, DType dtype) {
  KILN_CHECK(t.dim() == 2 && t.shape[0] == rows && t.shape[1] == cols, Shape, op, name, " must have shape [", rows,
             ", ", cols, "], got ", shape_str(t.shape));
  KILN_CHECK(t.dtype == dtype, DType, op, name, " dtype ", dtype_name(t.dtype), " differs from the gates' dtype ",
             dtype_name(dtype));
  KILN_CHECK(t.is_contiguous(), Value, op, name, " of shape ", shape_str(t.shape), " must be contiguous");
}

// The size a [n, blocks * H] operand of a floating dtype gives (t: the first operand of a kernel).
CellDims dims_of(const char* op, const Tensor& t, const char* name, int64_t blocks) {
  KILN_CHECK(t.dim() == 2 && t.shape[1] % blocks == 0, Shape, op, name, " must have shape [n, ", blocks,
             " * hiddenSize], got ", shape_str(t.shape));
  KILN_CHECK(is_floating(t.dtype), DType, op, name, " must be floating point, got ", dtype_name(t.dtype));
  const CellDims d{t.shape[0], t.shape[1] / blocks};
  check_mat(op, t, name, d.n, blocks * d.H, t.dtype);
  return d;
}

// The gates xg and hg: [n, gates * H], the same shape and dtype; returns n and H.
CellDims check_gates(const char* op, const Tensor& xg, const Tensor& hg, int64_t gates) {
  const CellDims d = dims_of(op, xg, "input gates", gates);
  check_mat(op, hg, "hidden gates", d.n, gates * d.H, xg.dtype);
  return d;
}

// The gradient of h: dh and the optional dy, [n, H].
void check_dh(const char* op, const Tensor& dh, const Tensor* dy, CellDims d, DType dtype) {
  check_mat(op, dh, "gradient of h", d.n, d.H, dtype);
  if (dy) check_mat(op, *dy, "gradient of the output", d.n, d.H, dtype);
}

}  // namespace

CellDims check_rnn_cell_forward(const Tensor& xg, const Tensor& hg, const Tensor& h) {
  const char* op = "rnnCell";
  const CellDims d = check_gates(op, xg, hg, 1);
  check_mat(op, h, "h", d.n, d.H, xg.dtype);
  return d;
}

CellDims check_rnn_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor& h, const Tensor& dpre) {
  const char* op = "rnnCell backward";
  const CellDims d = dims_of(op, h, "h", 1);
  check_dh(op, dh, dy, d, h.dtype);
  check_mat(op, dpre, "gradient of the gates", d.n, d.H, h.dtype);
  return d;
}

CellDims check_lstm_cell_forward(const Tensor& xg, const Tensor& hg, const Tensor& cPrev, const Tensor& h,
                                 const Tensor& c, const Tensor& act) {
  const char* op = "lstmCell";
  const CellDims d = check_gates(op, xg, hg, 4);
  check_mat(op, cPrev, "previous cell state", d.n, d.H, xg.dtype);
  check_mat(op, h, "h", d.n, d.H, xg.dtype);
  check_mat(op, c, "c", d.n, d.H, xg.dtype);
  check_mat(op, act, "saved activations", d.n, 4 * d.H, xg.dtype);
  return d;
}

CellDims check_lstm_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor* dc, const Tensor& act,
                                  const Tensor& cPrev, const Tensor& c, const Tensor& dgates, const Tensor* dcPrev) {
  const char* op = "lstmCell backward";
  const CellDims d = dims_of(op, act, "saved activations", 4);
  const DType dt = act.dtype;
  check_dh(op, dh, dy, d, dt);
  if (dc) check_mat(op, *dc, "gradient of c", d.n, d.H, dt);
  check_mat(op, cPrev, "previous cell state", d.n, d.H, dt);
  check_mat(op, c, "c", d.n, d.H, dt);
  check_mat(op, dgates, "gradient of the gates", d.n, 4 * d.H, dt);
  if (dcPrev) check_mat(op, *dcPrev, "gradient of the previous cell state", d.n, d.H, dt);
  return d;
}

CellDims check_gru_cell_forward(const Tensor& xg, const Tensor& hg, const Tensor& hPrev, const Tensor& h,
                                const Tensor& act) {
  const char* op = "gruCell";
  const CellDims d = check_gates(op, xg, hg, 3);
  check_mat(op, hPrev, "previous h", d.n, d.H, xg.dtype);
  check_mat(op, h, "h", d.n, d.H, xg.dtype);
  check_mat(op, act, "saved activations", d.n, 4 * d.H, xg.dtype);
  return d;
}

CellDims check_gru_cell_backward(const Tensor& dh, const Tensor* dy, const Tensor& act, const Tensor& hPrev,
                                 const Tensor& dxg, const Tensor& dhg, const Tensor* dhPrev) {
  const char* op = "gruCell backward";
  const CellDims d = dims_of(op, act, "saved activations", 4);
  const DType dt = act.dtype;
  check_dh(op, dh, dy, d, dt);
  check_mat(op, hPrev, "previous h", d.n, d.H, dt);
  check_mat(op, dxg, "gradient of the input gates", d.n, 3 * d.H, dt);
  check_mat(op, dhg, "gradient of the hidden gates", d.n, 3 * d.H, dt);
  if (dhPrev) check_mat(op, *dhPrev, "gradient of the previous h", d.n, d.H, dt);
  return d;
}

}  // namespace kiln::ops
