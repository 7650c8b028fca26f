// Matrix products: matmul with torch.matmul semantics (dot, matrix-vector, batched with broadcast
// batch dims), linear (x @ weight^T + bias) and linearGelu (gelu_tanh(linear), the activation in the
// product's epilogue), each with its backward next to it. Native code multiplies 3-D [batch, M, K] @
// [batch, K, N] strided views; this file reduces every case to one such call, as views whenever the
// layout allows (transposed operands become gemm flags, not copies). All are autocast 'lowPrecision'
// ops; the half dtypes a backend's bmm lacks (the CPU's) compute in float32 through defineOp. gemmRaw
// and gemmKernels reach the CPU GEMM implementations directly.
import { recordOp, willRecord } from '../autograd/engine';
import { DTYPE_CODE, isFloating } from '../dtype';
import { DTypeError, DeviceError, ShapeError, ValueError } from '../errors';
import { NativeHandle, native, nativeExports } from '../native';
import { contiguousStrides, numel, shapeStr } from '../shape';
import { Tensor, emptyTensor } from '../tensor';
import { bindKernels, defineOp, fillOutputs, opCodes } from './dispatch';
import { geluBackward } from './elementwise';
import { sum, sumToShape } from './reduce';
import { permute, reshape, transpose } from './shape';

const mm = bindKernels('matmul', {
  bmm: '(a:T, b:T, bias:T?, epilogue:e, out:T, pre:T?) -> void',
  gemmRaw: '(impl:e, a:T, b:T, c:T, transA:b, transB:b, alpha:f, beta:f) -> void',
});

// What bmm applies after the bias: nothing, or GELU's tanh form (native/ops/matmul.h).
type Epilogue = 'none' | 'gelu_tanh';
const EPILOGUES = opCodes('bmmEpilogues', ['none', 'gelu_tanh'] as const);

/**
 * @internal The GEMM implementations gemmRaw runs: 'auto' (what matmul uses), 'builtin' (kiln's
 * blocked implementation with the best micro-kernel for this CPU, in every build), 'builtin:baseline'
 * / 'builtin:avx2' / 'builtin:avx512' (one micro-kernel) or 'blas' (OpenBLAS directly).
 */
export type GemmImpl = 'auto' | 'builtin' | 'builtin:baseline' | 'builtin:avx2' | 'builtin:avx512' | 'blas';
const GEMM_IMPLS: readonly GemmImpl[] = ['auto', 'builtin', 'builtin:baseline', 'builtin:avx2', 'builtin:avx512', 'blas'];
const GEMM_CODES = opCodes('gemmImpls', GEMM_IMPLS);
// The addon lists, once at load, the implementations this build and CPU run.
const GEMM_SUPPORTED = nativeExports.gemmKernels;

/** @internal The gemmRaw implementations this build and CPU run, besides 'auto'. */
export function gemmKernels(): GemmImpl[] {
  return GEMM_IMPLS.filter((g) => g !== 'auto' && Array.isArray(GEMM_SUPPORTED) && GEMM_SUPPORTED.includes(g));
}

/**
 * @internal c = alpha * op(a) @ op(b) + beta * c in place on 2-D float32/float64 CPU tensors with
 * contiguous rows (op(x) = x^T when trans), through one GEMM implementation (a ValueError where this
 * build or CPU lacks it). For tests and benchmarks; no autograd.
 */
export function gemmRaw(impl: GemmImpl, a: Tensor, b: Tensor, c: Tensor, transA: boolean, transB: boolean, alpha: number, beta: number): void {
  const code = GEMM_IMPLS.includes(impl) ? GEMM_CODES[impl] : undefined;
  if (code === undefined) throw new ValueError('gemmRaw', `unknown GEMM implementation '${impl}'`);
  for (const x of [a, b, c]) x._check('gemmRaw');
  mm.gemmRaw(code, a._h, b._h, c._h, transA, transB, alpha, beta);
}

/** A strided view's metadata, before it becomes a native handle. */
interface Layout {
  shape: number[];
  strides: number[];
  offset: number;
}

function checkOperand(op: string, what: string, x: Tensor, ref: Tensor): void {
  x._check(op);
  if (x._dev !== ref._dev) throw new DeviceError(op, `${what} is on ${x.device}, expected ${ref.device}`);
  if (!isFloating(x.dtype)) throw new DTypeError(op, `expects floating point tensors, got ${what} of dtype ${x.dtype}`);
  if (x.dtype !== ref.dtype) throw new DTypeError(op, `dtypes differ: ${ref.dtype} and ${x.dtype} (${what})`);
}

/**
 * The stride of dims [0, n) of a layout merged into one dim, or null when their strides do not allow
 * it. Size-1 dims do not count; a merged dim of size <= 1 gets stride 0.
 */
function mergedStride(l: Layout, n: number): number | null {
  let stride: number | null = null;
  let span = 1;
  for (let i = n - 1; i >= 0; i--) {
    if (l.shape[i] === 1) continue;
    if (stride === null) stride = l.strides[i];
    else if (l.strides[i] !== stride * span) return null;
    span *= l.shape[i];
  }
  return span <= 1 ? 0 : stride;
}

/** x's [..., R, C] matrices, broadcast over `batch` (stride 0 where x has no such dim or size 1). */
function batchedLayout(x: Tensor, rows: number, cols: number, rowStride: number, colStride: number, batch: readonly number[]): Layout {
  const nb = x.ndim - 2;
  const lead = batch.length - Math.max(nb, 0);
  const strides = batch.map((d, i) => (i < lead || x.shape[i - lead] !== d ? 0 : x.strides[i - lead]));
  return { shape: [...batch, rows, cols], strides: [...strides, rowStride, colStride], offset: x.offset };
}

function viewHandle(x: Tensor, shape: number[], strides: number[], offset: number, owned: NativeHandle[]): NativeHandle {
  const h = native.view(x._h, shape, strides, offset);
  owned.push(h);
  return h;
}

/** A [batch, R, C] handle for a [..., R, C] layout: its batch dims merged, or a contiguous copy when they do not merge. */
function handle3d(x: Tensor, l: Layout, owned: NativeHandle[]): NativeHandle {
  const nb = l.shape.length - 2;
  const shape3 = [numel(l.shape.slice(0, nb)), l.shape[nb], l.shape[nb + 1]];
  const bs = mergedStride(l, nb);
  if (bs !== null) return viewHandle(x, shape3, [bs, l.strides[nb], l.strides[nb + 1]], l.offset, owned);
  const src = viewHandle(x, l.shape, l.strides, l.offset, owned);
  const copy = native.empty(l.shape, DTYPE_CODE[x.dtype], x._dev);
  owned.push(copy);
  native.copy(src, copy);
  const h = native.view(copy, shape3, contiguousStrides(shape3), 0);
  owned.push(h);
  return h;
}

/**
 * a @ b (+ bias, then the epilogue) for layouts la [...batch, M, K] and lb [...batch, K, N] over a and
 * b, as a new contiguous tensor of outShape (batch * M * N elements); pre (contiguous, of outShape)
 * gets the epilogue's input when given. When b is one matrix for the whole batch and a's rows merge
 * across it, this is a single [batch * M, K] @ [K, N] product.
 */
function product(a: Tensor, la: Layout, b: Tensor, lb: Layout, bias: Tensor | null, outShape: number[], epilogue: Epilogue = 'none', pre: Tensor | null = null): Tensor {
  const out = emptyTensor(outShape, a.dtype, a._dev);
  if (out.numel === 0) return out;
  const nb = la.shape.length - 2;
  const batch = numel(la.shape.slice(0, nb));
  const [M, K] = la.shape.slice(nb);
  const n = lb.shape[nb + 1];
  const owned: NativeHandle[] = [];
  try {
    const rowStride = mergedStride(lb, nb) === 0 ? mergedStride(la, nb + 1) : null;
    let ha: NativeHandle, hb: NativeHandle;
    let outShape3: number[], outStrides3: number[];
    if (rowStride !== null) {
      ha = viewHandle(a, [1, batch * M, K], [0, rowStride, la.strides[nb + 1]], la.offset, owned);
      hb = viewHandle(b, [1, K, n], [0, lb.strides[nb], lb.strides[nb + 1]], lb.offset, owned);
      [outShape3, outStrides3] = [[1, batch * M, n], [0, n, 1]];
    } else {
      ha = handle3d(a, la, owned);
      hb = handle3d(b, lb, owned);
      [outShape3, outStrides3] = [[batch, M, n], contiguousStrides([batch, M, n])];
    }
    const ho = viewHandle(out, outShape3, outStrides3, 0, owned);
    const hp = pre ? viewHandle(pre, outShape3, outStrides3, 0, owned) : null;
    mm.bmm(ha, hb, bias ? bias._h : null, EPILOGUES[epilogue], ho, hp);
  } catch (e) {
    out.dispose();
    throw e;
  } finally {
    for (const h of owned) native.dispose(h);
  }
  return out;
}

/** Broadcasts batch shapes like torch.matmul, naming both full shapes on failure. */
function broadcastBatch(op: string, a: readonly number[], b: readonly number[], sa: readonly number[], sb: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1, y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) {
      throw new ShapeError(op, `batch dimensions of shapes ${shapeStr(sa)} and ${shapeStr(sb)} cannot be broadcast together`);
    }
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** How matmul reduces its arguments to one product (torch.matmul's promotions and broadcasting). */
interface MatmulPlan {
  /** The arguments' shapes with a 1-D a as [1, K] and a 1-D b as [K, 1]. */
  aP: number[];
  bP: number[];
  M: number;
  K: number;
  N: number;
  /** The broadcast batch dims. */
  batch: number[];
  outShape: number[];
}

/** matmul's shape checks and plan, naming both shapes on failure. */
function matmulPlan(op: string, a: Tensor, b: Tensor): MatmulPlan {
  if (a.ndim === 0 || b.ndim === 0) {
    throw new ShapeError(op, `both arguments need at least one dimension, got shapes ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`);
  }
  const aP = a.ndim === 1 ? [1, a.shape[0]] : [...a.shape];
  const bP = b.ndim === 1 ? [b.shape[0], 1] : [...b.shape];
  const M = aP[aP.length - 2], K = aP[aP.length - 1], Kb = bP[bP.length - 2], N = bP[bP.length - 1];
  if (K !== Kb) {
    throw new ShapeError(op, `shapes ${shapeStr(a.shape)} and ${shapeStr(b.shape)} cannot be multiplied (${K} columns vs ${Kb} rows)`);
  }
  const batch = broadcastBatch(op, aP.slice(0, -2), bP.slice(0, -2), a.shape, b.shape);
  const outShape = [...batch, ...(a.ndim > 1 ? [M] : []), ...(b.ndim > 1 ? [N] : [])];
  return { aP, bP, M, K, N, batch, outShape };
}

const matmulOp = defineOp<[a: Tensor, b: Tensor]>({
  name: 'matmul',
  inputs: [0, 1],
  kernels: ['bmm'],
  autocast: 'lowPrecision',
  check(a, b) {
    checkOperand('matmul', 'the first argument', a, a);
    checkOperand('matmul', 'the second argument', b, a);
    matmulPlan('matmul', a, b);
  },
  forward(a, b) {
    const op = 'matmul';
    const { aP, bP, M, K, N, batch, outShape } = matmulPlan(op, a, b);
    const sa = a.strides, sb = b.strides;
    const la = a.ndim === 1 ? batchedLayout(a, 1, K, 0, sa[0], batch) : batchedLayout(a, M, K, sa[a.ndim - 2], sa[a.ndim - 1], batch);
    const lb = b.ndim === 1 ? batchedLayout(b, K, 1, sb[0], 0, batch) : batchedLayout(b, K, N, sb[b.ndim - 2], sb[b.ndim - 1], batch);
    const out = product(a, la, b, lb, null, outShape);

    // Backward: grad_a = grad @ b^T, grad_b = a^T @ grad, summed over the batch dims each one was broadcast over.
    const saved: Tensor[] = [];
    const ia = b.requiresGrad ? saved.push(a) - 1 : -1;
    const ib = a.requiresGrad ? saved.push(b) - 1 : -1;
    const aShape = a.shape, bShape = b.shape;
    return recordOp(op, [a, b], out, saved, (g, s, needs) => {
      const B = numel(batch);
      const gP = reshape(g, [...batch, M, N]);
      let ga: Tensor | null = null, gb: Tensor | null = null;
      if (needs[0]) {
        const bm = reshape(s[ib], bP);
        if (B > 1 && numel(aP.slice(0, -2)) === 1) {
          // a is one matrix for the whole batch: contract over batch and N in one product.
          const gFold = reshape(permute(reshape(gP, [B, M, N]), [1, 0, 2]), [M, B * N]);
          const bFold = reshape(transpose(reshape(bm, [B, K, N]), 1, 2), [B * N, K]);
          ga = matmul(gFold, bFold);
        } else {
          ga = sumToShape(matmul(gP, transpose(bm, -1, -2)), aP);
        }
        ga = reshape(ga, aShape);
      }
      if (needs[1]) {
        const am = reshape(s[ia], aP);
        if (B > 1 && numel(bP.slice(0, -2)) === 1) {
          // b is one matrix for the whole batch: contract over batch and M in one product.
          gb = matmul(transpose(reshape(am, [B * M, K]), 0, 1), reshape(gP, [B * M, N]));
        } else {
          gb = sumToShape(matmul(transpose(am, -1, -2), gP), bP);
        }
        gb = reshape(gb, bShape);
      }
      return [ga, gb];
    });
  },
});

/**
 * Matrix product with torch.matmul semantics: 1-D @ 1-D is a dot product (0-D result); a 1-D first
 * argument is a row vector and a 1-D second argument a column vector (their added dim is removed
 * from the result); N-D arguments multiply their last two dims as matrices over broadcast batch dims.
 * Under {@link autocast} it computes in the autocast dtype from float32 inputs (the result has that dtype).
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  return matmulOp(a, b);
}

type LinearArgs = [x: Tensor, weight: Tensor, bias?: Tensor | null];

/** linear's checks under op's name (linear, linearGelu). */
function checkLinear(op: string, x: Tensor, weight: Tensor, bias: Tensor | null | undefined): void {
  checkOperand(op, 'the input', x, x);
  checkOperand(op, 'the weight', weight, x);
  if (bias) checkOperand(op, 'the bias', bias, x);
  if (weight.ndim !== 2) throw new ShapeError(op, `weight must be 2-D [out, in], got shape ${shapeStr(weight.shape)}`);
  const [outF, inF] = weight.shape;
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== inF) {
    throw new ShapeError(op, `input of shape ${shapeStr(x.shape)} does not fit weight of shape ${shapeStr(weight.shape)} (expected last dim ${inF})`);
  }
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== outF)) {
    throw new ShapeError(op, `bias of shape ${shapeStr(bias.shape)} does not fit weight of shape ${shapeStr(weight.shape)} (expected [${outF}])`);
  }
}

/** x @ weight^T (+ bias, then the epilogue; pre gets the epilogue's input) as one native product. */
function linearProduct(x: Tensor, weight: Tensor, bias: Tensor | null, epilogue: Epilogue, pre: Tensor | null): Tensor {
  const [outF, inF] = weight.shape;
  const lead = x.shape.slice(0, -1);
  // x as [...batch, M, in] (1-D x is one row); weight^T as an [in, out] view, the same for every batch.
  const batch = lead.slice(0, -1);
  const lx = x.ndim === 1
    ? batchedLayout(x, 1, inF, 0, x.strides[0], [])
    : batchedLayout(x, lead[lead.length - 1], inF, x.strides[x.ndim - 2], x.strides[x.ndim - 1], batch);
  const lw: Layout = { shape: [...batch, inF, outF], strides: [...batch.map(() => 0), weight.strides[1], weight.strides[0]], offset: weight.offset };
  return product(x, lx, weight, lw, bias, [...lead, outF], epilogue, pre);
}

/**
 * Records out as op on [x, weight, bias] whose backward turns out's gradient into the product's
 * gradient g (toProduct: the identity for linear, the GELU's backward for linearGelu), then takes
 * grad_x = g @ weight, grad_weight = g^T @ x, grad_bias = g summed over rows. `extra` are tensors
 * toProduct needs, saved first.
 */
function recordLinear(op: string, x: Tensor, weight: Tensor, bias: Tensor | null | undefined, out: Tensor, extra: Tensor[], toProduct: (g: Tensor, extra: Tensor[]) => Tensor): Tensor {
  const [outF, inF] = weight.shape;
  const rows = numel(x.shape.slice(0, -1));
  const saved: Tensor[] = [...extra];
  const ix = weight.requiresGrad ? saved.push(x) - 1 : -1;
  const iw = x.requiresGrad ? saved.push(weight) - 1 : -1;
  const xShape = x.shape, nExtra = extra.length;
  return recordOp(op, [x, weight, bias], out, saved, (g, s, needs) => {
    const g2 = reshape(toProduct(g, s.slice(0, nExtra)), [rows, outF]);
    return [
      needs[0] ? reshape(matmul(g2, s[iw]), xShape) : null,
      needs[1] ? matmul(transpose(g2, 0, 1), reshape(s[ix], [rows, inF])) : null,
      needs[2] ? sum(g2, 0) : null,
    ];
  });
}

/** A linear-shaped op (linear, linearGelu): linear's inputs, dtype policy and checks, its own forward. */
function linearDef(name: string, forward: (...args: LinearArgs) => Tensor): (...args: LinearArgs) => Tensor {
  return defineOp<LinearArgs>({
    name,
    inputs: [0, 1, 2],
    kernels: ['bmm'],
    autocast: 'lowPrecision',
    check: (x, weight, bias) => checkLinear(name, x, weight, bias),
    forward,
  });
}

const linearOp = linearDef('linear', (x, weight, bias) => {
  const out = linearProduct(x, weight, bias ?? null, 'none', null);
  return recordLinear('linear', x, weight, bias, out, [], (g) => g);
});

/**
 * x @ weight^T + bias, like torch.nn.functional.linear: x [..., in], weight [out, in], bias [out].
 * Under {@link autocast} it computes in the autocast dtype from float32 inputs (the result has that dtype).
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  return linearOp(x, weight, bias);
}

const linearGeluOp = linearDef('linearGelu', (x, weight, bias) => {
  // The GELU's input is kept only where a backward may need it.
  const pre = willRecord([x, weight, bias]) ? emptyTensor([...x.shape.slice(0, -1), weight.shape[0]], x.dtype, x._dev) : null;
  let out!: Tensor;
  fillOutputs(pre ? [pre] : [], () => (out = linearProduct(x, weight, bias ?? null, 'gelu_tanh', pre)));
  if (!pre) return out;
  try {
    return recordLinear('linearGelu', x, weight, bias, out, [pre], (g, [p]) => geluBackward(p, g, 'tanh'));
  } finally {
    pre.dispose();
  }
});

/**
 * @internal gelu(linear(x, weight, bias), 'tanh') with the bias and the GELU in the product's epilogue
 * (cuBLASLt's GELU_AUX_BIAS on CUDA): one pass writes the activation and, when a backward may need it,
 * its input. What GPT's MLP runs for its fc layer; autocast treats it as linear.
 */
export function linearGelu(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  return linearGeluOp(x, weight, bias);
}
