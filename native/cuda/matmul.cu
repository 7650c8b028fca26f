// CUDA batched matrix product through cuBLASLt. cuBLASLt is column-major, kiln row-major: the row-major
// product C = A @ B is computed as the column-major C^T = B^T @ A^T, so B goes in as cuBLASLt's first
// operand and A as its second, and each operand's strides become a transpose flag and a leading
// dimension (no copy unless neither of its two inner strides is 1). A batch is one strided-batched
// call (a batch stride of 0 repeats one matrix). The bias rides in the epilogue when cuBLASLt offers
// one for the case, else it is copied into the output first and the product added to it (beta = 1).
// One handle per device lives for the whole process; the workspace is a cached block per call, on the
// current stream. Matmul descriptors, layouts and the chosen algorithm are cached per problem (shapes,
// strides, dtype, transposes, TF32, epilogue, pointer alignments), so a repeated product costs no
// heuristic query.
//
// The GELU epilogue (linearGelu, GPT's MLP fc): cuBLASLt's GELU_BIAS / GELU_AUX_BIAS apply bias then
// GELU (the tanh form, as ops::ew::gelu_tanh) in the GEMM's epilogue, the AUX forms also writing the
// GELU's input (the pre-activation the backward needs) as a second matrix. In the C^T formulation D
// is N x M column-major with ld N, so the aux matrix is laid out exactly like out (row-major [M, N]):
// AUX_LD = N, AUX_BATCH_STRIDE = M * N. cuBLASLt wants AUX_LD divisible by 8: for other N, or where
// the heuristic offers no algorithm with the epilogue, the product (with the bias) goes to pre (or
// out) and the elementwise gelu_tanh kernel maps it into out (one more read and write of the output).
// What it saves for GPT-2 124M at batch 16 x 1024 in bf16: the fc output is 16384 x 3072 bf16 =
// 100.7 MB per layer; unfused, linear writes it (100.7 MB) and gelu reads it and writes its output
// (201.3 MB); fused, the GEMM writes both in its epilogue (201.3 MB): 100.7 MB less per layer per
// forward, 1.21 GB per step over 12 layers (about 0.25 ms at H200's ~4.8 TB/s), and one kernel launch
// fewer per layer.
#include "../ops/matmul.h"
#include <cublasLt.h>
#include <algorithm>
#include <array>
#include <mutex>
#include <unordered_map>
#include "../ops/elementwise.h"
#include "copy.h"
#include "runtime.h"

#define KILN_CUBLAS_CHECK(call, op)                                                            \
  do {                                                                                         \
    cublasStatus_t kiln_s_ = (call);                                                           \
    if (kiln_s_ != CUBLAS_STATUS_SUCCESS) ::kiln::cuda::throw_cublas(kiln_s_, op, __FILE__, __LINE__); \
  } while (0)

namespace kiln::cuda {

[[noreturn]] static void throw_cublas(cublasStatus_t s, const char* op, const char* file, int line) {
  throw Error(ErrorCode::Cuda, op,
              str_cat(cublasLtGetStatusName(s), ": ", cublasLtGetStatusString(s), " (", file, ":", line, ")"));
}

namespace {

constexpr const char* kOp = "matmul";
// What cuBLAS asks for on Hopper; kept for the process, so it is allocated once per device.
constexpr int64_t kWorkspaceBytes = int64_t(32) << 20;
// Distinct problems remembered before the cache starts over (a run sees a few dozen).
constexpr size_t kMaxPlans = 4096;

// How cuBLASLt reads the [R, C] matrices x of a 3-D operand as the factor x^T of C^T = B^T @ A^T: a
// column-major rows x cols matrix with leading dimension ld that is x^T itself (op N) or x (op T).
struct LtOperand {
  const void* data;
  cublasOperation_t op;
  int64_t rows, cols, ld, batch_stride;
  Tensor copy;  // owns the data when the operand had to be copied
};

LtOperand lt_operand(const Tensor& x) {
  const int64_t R = x.shape[1], C = x.shape[2], s0 = x.strides[1], s1 = x.strides[2];
  const int64_t bs = x.shape[0] > 1 ? x.strides[0] : 0;
  // Row-major x is the column-major C x R matrix x^T: taken as it is.
  if ((s1 == 1 || C == 1) && (R == 1 || s0 >= C)) return {x.data_ptr(), CUBLAS_OP_N, C, R, R == 1 ? C : s0, bs, {}};
  // Column-major x is the column-major R x C matrix x: transposed by cuBLASLt.
  if ((s0 == 1 || R == 1) && (C == 1 || s1 >= R)) return {x.data_ptr(), CUBLAS_OP_T, R, C, C == 1 ? R : s1, bs, {}};
  // A broadcast batch (stride 0) copies one matrix, not all of them.
  Tensor src = x;
  const bool repeated = x.strides[0] == 0;
  if (repeated) src.shape[0] = 1;
  Tensor c = Tensor::empty(src.shape, x.dtype, x.device());
  copy(src, c);
  LtOperand o{c.data_ptr(), CUBLAS_OP_N, C, R, C, repeated || x.shape[0] == 1 ? 0 : R * C, {}};
  o.copy = std::move(c);
  return o;
}

// The largest power of two (at most 256, cuBLASLt's default assumption) dividing the address of every
// matrix of an operand: its base and its batch stride in bytes.
int64_t alignment(const void* p, int64_t batch_stride_bytes) {
  const uint64_t v = uint64_t(reinterpret_cast<uintptr_t>(p)) | uint64_t(batch_stride_bytes) | 256u;
  return int64_t(v & (~v + 1));
}

struct Types {
  cudaDataType_t data, scale;
  cublasComputeType_t compute;
};

Types types_of(DType dt, bool tf32) {
  switch (dt) {
    case DType::Float32: return {CUDA_R_32F, CUDA_R_32F, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F};
    case DType::Float64: return {CUDA_R_64F, CUDA_R_64F, CUBLAS_COMPUTE_64F};
    case DType::BFloat16: return {CUDA_R_16BF, CUDA_R_32F, CUBLAS_COMPUTE_32F};
    case DType::Float16: return {CUDA_R_16F, CUDA_R_32F, CUBLAS_COMPUTE_32F};
    default: throw_dtype_unsupported(kOp, dt);
  }
}

// One problem as cuBLASLt sees it: D (m x n, column-major, ld m) = op(A) (m x k) @ op(B) (k x n).
// Every field that changes the descriptors or the algorithm choice, as plain integers for hashing.
// kGelu: 0 none, 1 GELU wanted, 2 GELU with its input saved as the aux matrix.
enum Field { kDevice, kDType, kTf32, kBias, kGelu, kOpA, kOpB, kM, kN, kK, kBatch, kRowsA, kColsA, kLdA, kStrideA,
             kRowsB, kColsB, kLdB, kStrideB, kAlignA, kAlignB, kAlignD, kAlignBias, kAlignAux, kFields };
using PlanKey = std::array<int64_t, kFields>;

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t v : k) h = (h ^ uint64_t(v)) * 1099511628211ull;
    return size_t(h);
  }
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool epilogue = false;  // the bias is added by cuBLASLt
  bool gelu = false;      // so is the GELU (and the aux matrix written, when the key asks for it)
};

void destroy(Plan& p) {
  if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  if (p.a) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b) cublasLtMatrixLayoutDestroy(p.b);
  if (p.d) cublasLtMatrixLayoutDestroy(p.d);
}

struct DeviceLt {
  cublasLtHandle_t handle = nullptr;
};

struct LtState {
  std::mutex mutex;
  std::unordered_map<int, DeviceLt> devices;
  std::unordered_map<PlanKey, Plan, PlanKeyHash> plans;
};

// Never destroyed: handles must not be released after the driver has been torn down at exit.
LtState& state() {
  static LtState* s = new LtState();
  return *s;
}

DeviceLt& device_lt(LtState& s, Device d) {
  DeviceLt& lt = s.devices[d.index];
  if (!lt.handle) {
    set_device(d);
    KILN_CUBLAS_CHECK(cublasLtCreate(&lt.handle), kOp);
  }
  return lt;
}

template <typename V>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const V& v) {
  KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &v, sizeof(v)), kOp);
}

template <typename V>
void set_pref(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const V& v) {
  KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &v, sizeof(v)), kOp);
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t dt, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                                   int64_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, dt, uint64_t(rows), uint64_t(cols), ld), kOp);
  if (batch > 1) {
    const int32_t count = int32_t(batch);
    try {
      KILN_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)), kOp);
      KILN_CUBLAS_CHECK(
          cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)), kOp);
    } catch (...) {
      cublasLtMatrixLayoutDestroy(l);
      throw;
    }
  }
  return l;
}

// The GELU epilogues cuBLASLt fuses: aux N x M matrices need a leading dimension divisible by 8.
bool gelu_epilogue_possible(const PlanKey& k) { return k[kGelu] == 1 || (k[kGelu] == 2 && k[kM] % 8 == 0); }

// Builds the descriptors for k and asks the heuristic for the best algorithm, with as much of the
// epilogue fused as cuBLASLt has an algorithm for: bias and GELU (and aux), else the bias alone, else
// none (bias_ptr, aux_ptr: their alignments guide the choice).
Plan make_plan(cublasLtHandle_t handle, const PlanKey& k, const void* bias_ptr, void* aux_ptr) {
  const Types t = types_of(DType(k[kDType]), k[kTf32] != 0);
  Plan p;
  cublasLtMatmulPreference_t pref = nullptr;
  try {
    KILN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, t.compute, t.scale), kOp);
    set_desc(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(k[kOpA]));
    set_desc(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(k[kOpB]));
    p.a = make_layout(t.data, k[kRowsA], k[kColsA], k[kLdA], k[kBatch], k[kStrideA]);
    p.b = make_layout(t.data, k[kRowsB], k[kColsB], k[kLdB], k[kBatch], k[kStrideB]);
    p.d = make_layout(t.data, k[kM], k[kN], k[kM], k[kBatch], k[kM] * k[kN]);
    KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref), kOp);
    set_pref(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(kWorkspaceBytes));
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, uint32_t(k[kAlignA]));
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, uint32_t(k[kAlignB]));
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, uint32_t(k[kAlignD]));
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, uint32_t(k[kAlignD]));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    // No algorithm for the case is NOT_SUPPORTED with nothing found, which is not an error here; nor,
    // for an epilogue, is INVALID_VALUE (an epilogue this dtype or layout does not take).
    auto query = [&](bool epilogue) {
      cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
      if (s != CUBLAS_STATUS_NOT_SUPPORTED && !(epilogue && s == CUBLAS_STATUS_INVALID_VALUE)) KILN_CUBLAS_CHECK(s, kOp);
      return s == CUBLAS_STATUS_SUCCESS && found > 0;
    };
    auto try_epilogue = [&](cublasLtEpilogue_t e) {
      set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, e);
      if (query(true)) return true;
      set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_DEFAULT);
      return false;
    };
    if (k[kBias]) set_desc(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias_ptr);
    if (gelu_epilogue_possible(k)) {
      const bool aux = k[kGelu] == 2;
      if (aux) {
        set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux_ptr);
        set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(k[kM]));
        if (k[kBatch] > 1) set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, int64_t(k[kM] * k[kN]));
      }
      const cublasLtEpilogue_t e = k[kBias] ? (aux ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS)
                                            : (aux ? CUBLASLT_EPILOGUE_GELU_AUX : CUBLASLT_EPILOGUE_GELU);
      p.gelu = p.epilogue = try_epilogue(e);
      if (!p.gelu && aux) {
        set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(nullptr));
        set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(0));
        if (k[kBatch] > 1) set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, int64_t(0));
      }
    }
    if (!p.gelu && k[kBias]) p.epilogue = try_epilogue(CUBLASLT_EPILOGUE_BIAS);
    KILN_CHECK(p.epilogue || query(false), Cuda, kOp, "cuBLASLt has no algorithm for ", dtype_name(DType(k[kDType])),
               " [", k[kBatch], " x ", k[kN], " x ", k[kK], "] @ [", k[kK], " x ", k[kM],
               "] (column-major, alignments ", k[kAlignA], "/", k[kAlignB], "/", k[kAlignD], " bytes)");
    p.algo = result.algo;
    cublasLtMatmulPreferenceDestroy(pref);
  } catch (...) {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    destroy(p);
    throw;
  }
  return p;
}

}  // namespace

void bmm(const Tensor& a, const Tensor& b, const Tensor* bias, ops::Epilogue epilogue, const Tensor& out,
         const Tensor* pre) {
  const ops::BmmSizes z = ops::check_bmm(a, b, bias, epilogue, out, pre);
  const int64_t batch = z.batch, M = z.M, K = z.K, N = z.N;
  KILN_CHECK(batch <= INT32_MAX, Shape, kOp, "a batch of ", batch, " matrices exceeds cuBLASLt's limit");
  if (out.numel() == 0) return;
  const bool gelu = epilogue == ops::Epilogue::GeluTanh;
  const Types types = types_of(out.dtype, allow_tf32());
  const Device dev = out.device();
  cudaStream_t s = stream(dev);
  // Where the product (with the bias) goes when the GELU is not fused: pre when wanted, else out,
  // which the elementwise gelu_tanh then maps into out.
  const Tensor& prod = pre ? *pre : out;
  auto unfused_gelu = [&] {
    if (gelu) unary(ops::UnaryOp::gelu_tanh, prod, out, 0, 0);
  };

  // The bias on every row of the output, as a broadcast view.
  auto bias_rows = [&] {
    Tensor v = *bias;
    v.shape = out.shape;
    v.strides = {0, 0, bias->strides[0]};
    return v;
  };
  if (K == 0) {
    if (bias) copy(bias_rows(), prod);
    else fill(prod, 0);
    unfused_gelu();
    return;
  }

  const LtOperand A = lt_operand(b), B = lt_operand(a);
  Tensor packed_bias;  // the epilogue reads a dense vector
  const void* bias_ptr = nullptr;
  if (bias) {
    if (bias->strides[0] != 1 && N > 1) {
      packed_bias = Tensor::empty({N}, bias->dtype, dev);
      copy(*bias, packed_bias);
    }
    bias_ptr = packed_bias.storage ? packed_bias.data_ptr() : bias->data_ptr();
  }
  void* aux_ptr = pre ? pre->data_ptr() : nullptr;
  const int64_t item = int64_t(out.itemsize());
  PlanKey key{};
  key[kDevice] = dev.index;
  key[kDType] = int64_t(out.dtype);
  key[kTf32] = types.compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  key[kBias] = bias != nullptr;
  key[kGelu] = gelu ? (pre ? 2 : 1) : 0;
  key[kOpA] = A.op;
  key[kOpB] = B.op;
  key[kM] = N;
  key[kN] = M;
  key[kK] = K;
  key[kBatch] = batch;
  key[kRowsA] = A.rows;
  key[kColsA] = A.cols;
  key[kLdA] = A.ld;
  key[kStrideA] = A.batch_stride;
  key[kRowsB] = B.rows;
  key[kColsB] = B.cols;
  key[kLdB] = B.ld;
  key[kStrideB] = B.batch_stride;
  key[kAlignA] = alignment(A.data, A.batch_stride * item);
  key[kAlignB] = alignment(B.data, B.batch_stride * item);
  // D is out, or pre when the GELU cannot be fused: the plan must suit both.
  key[kAlignD] = std::min(alignment(out.data_ptr(), batch > 1 ? M * N * item : 0),
                          pre ? alignment(aux_ptr, batch > 1 ? M * N * item : 0) : int64_t(256));
  key[kAlignBias] = bias ? alignment(bias_ptr, 0) : 0;
  key[kAlignAux] = pre ? alignment(aux_ptr, batch > 1 ? M * N * item : 0) : 0;

  LtState& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  DeviceLt& lt = device_lt(st, dev);
  auto it = st.plans.find(key);
  if (it == st.plans.end()) {
    if (st.plans.size() >= kMaxPlans) {
      for (auto& [k, p] : st.plans) destroy(p);
      st.plans.clear();
    }
    it = st.plans.emplace(key, make_plan(lt.handle, key, bias_ptr, aux_ptr)).first;
  }
  Plan& plan = it->second;
  // With the GELU fused cuBLASLt writes out (and the aux matrix); else the product goes to prod.
  void* dst = plan.gelu ? out.data_ptr() : prod.data_ptr();
  if (plan.epilogue) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias_ptr);
  else if (bias) copy(bias_rows(), prod);
  if (plan.gelu && pre) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux_ptr);
  const bool accumulate = bias && !plan.epilogue;
  const float alpha32 = 1, beta32 = accumulate ? 1 : 0;
  const double alpha64 = 1, beta64 = accumulate ? 1 : 0;
  const bool f64 = types.scale == CUDA_R_64F;
  // The workspace comes from the caching allocator on the current stream, so matmuls on two streams
  // never share one (a block is reused only on the stream it was allocated on; no cudaMalloc here).
  const Tensor workspace = Tensor::empty({kWorkspaceBytes}, DType::Bool, dev);  // raw bytes
  KILN_CUBLAS_CHECK(cublasLtMatmul(lt.handle, plan.desc, f64 ? static_cast<const void*>(&alpha64) : &alpha32, A.data,
                                   plan.a, B.data, plan.b, f64 ? static_cast<const void*>(&beta64) : &beta32, dst,
                                   plan.d, dst, plan.d, &plan.algo, workspace.data_ptr(), size_t(kWorkspaceBytes), s),
                    kOp);
  if (!plan.gelu) unfused_gelu();
}

}  // namespace kiln::cuda
