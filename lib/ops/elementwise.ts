// Elementwise ops with NumPy broadcasting, PyTorch type promotion and JavaScript numbers as scalar
// operands. Each forward is one native call (native/cpu/elementwise.cc): operands are promoted to one
// dtype and broadcast as stride-0 views here, scalars travel as kernel parameters. Backward rules sit
// next to their forwards; gradients of broadcast operands are summed back with sumToShape.
import { recordOp } from '../autograd/engine';
import { isGradEnabled } from '../autograd/grad_mode';
import { DType, isFloating, promoteTypes, promoteWithScalar } from '../dtype';
import { AutogradError, DTypeError, DeviceError, ShapeError, ValueError } from '../errors';
import { NativeHandle, native } from '../native';
import { broadcastShapes, sameShape, shapeStr } from '../shape';
import { Tensor, TensorOrScalar, emptyTensor } from '../tensor';
import { checkInPlace, to } from './creation';
import { sumToShape } from './reduce';

interface ElementwiseNative {
  unaryOps: Record<string, number>;
  binaryOps: Record<string, number>;
  unary(op: number, x: NativeHandle, out: NativeHandle, s0: number, s1: number): void;
  binary(op: number, a: NativeHandle, b: NativeHandle, out: NativeHandle, s0: number, s1: number): void;
  where(cond: NativeHandle, a: NativeHandle | null, b: NativeHandle | null, out: NativeHandle, sa: number, sb: number): void;
}
const N = native as unknown as ElementwiseNative;

/** Looks up native op codes by name (the lists live in native/cpu/elementwise.h). */
function opCodes<K extends string>(table: Record<string, number>, names: readonly K[]): Record<K, number> {
  const out = {} as Record<K, number>;
  for (const n of names) {
    if (table[n] === undefined) throw new Error(`kiln: the native addon lacks elementwise op '${n}'; rebuild it`);
    out[n] = table[n];
  }
  return out;
}

const U = opCodes(N.unaryOps, [
  'neg', 'exp', 'log', 'add_scalar', 'mul_scalar', 'affine', 'div_scalar', 'rdiv_scalar',
] as const);
const B = opCodes(N.binaryOps, ['add', 'mul', 'div'] as const);

type Scalar = number | boolean;

function isTensor(v: unknown): v is Tensor {
  return v instanceof Tensor;
}

function scalarArg(op: string, v: unknown, name: string): Scalar {
  if (typeof v === 'number' || typeof v === 'boolean') return v;
  throw new ValueError(op, `${name} must be a tensor or a number, got ${v === null ? 'null' : typeof v}`);
}

const CATEGORY: Record<DType, number> = { bool: 0, int32: 1, int64: 1, float16: 2, bfloat16: 2, float32: 2, float64: 2 };

/**
 * PyTorch's result type of two tensors: a 0-d tensor only decides the dtype when it is of a higher
 * category (bool < integer < floating) than the dimensioned operand.
 */
export function resultType(a: Tensor, b: Tensor): DType {
  if ((a.ndim === 0) === (b.ndim === 0)) return promoteTypes(a.dtype, b.dtype);
  const [dimd, zero] = a.ndim === 0 ? [b, a] : [a, b];
  return CATEGORY[zero.dtype] > CATEGORY[dimd.dtype] ? zero.dtype : dimd.dtype;
}

/** Checks both tensors are usable together (alive, same device). */
function checkPair(op: string, a: Tensor, b: Tensor): void {
  a._check(op);
  b._check(op);
  if (a._dev !== b._dev) throw new DeviceError(op, `expects tensors on one device, got ${a.device} and ${b.device}`);
}

/** Runs f on the tensors converted to dtype (differentiably); disposes the converted copies after. */
function withDType<T>(dtype: DType, ts: readonly Tensor[], f: (cs: Tensor[]) => T): T {
  const cs = ts.map((t) => (t.dtype === dtype ? t : to(t, dtype, t.device)));
  try {
    return f(cs);
  } finally {
    cs.forEach((c, i) => c !== ts[i] && c.dispose());
  }
}

/** t broadcast to shape as a stride-0 view (not recorded: callers sum gradients back themselves). */
function broadcastView(t: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(t.shape, shape)) return t;
  const lead = shape.length - t.ndim;
  const strides = shape.map((s, i) => (i < lead || t.shape[i - lead] !== s ? 0 : t.strides[i - lead]));
  return t._viewAs(shape, strides, t.offset);
}

function unaryKernel(code: number, x: Tensor, dtype: DType, s0 = 0, s1 = 0): Tensor {
  const out = emptyTensor(x.shape, dtype, x._dev);
  try {
    N.unary(code, x._h, out._h, s0, s1);
  } catch (e) {
    out.dispose();
    throw e;
  }
  return out;
}

function binaryKernel(op: string, code: number, a: Tensor, b: Tensor, dtype: DType, s0 = 0, s1 = 0): Tensor {
  const shape = broadcastShapes(op, a.shape, b.shape);
  const ea = broadcastView(a, shape), eb = broadcastView(b, shape);
  const out = emptyTensor(shape, dtype, a._dev);
  try {
    N.binary(code, ea._h, eb._h, out._h, s0, s1);
  } catch (e) {
    out.dispose();
    throw e;
  } finally {
    if (ea !== a) ea.dispose();
    if (eb !== b) eb.dispose();
  }
  return out;
}

/** The dtype of tensor-with-tensor or tensor-with-scalar arithmetic; two scalars are an error. */
function arithDType(op: string, a: TensorOrScalar, b: TensorOrScalar): DType {
  if (isTensor(a) && isTensor(b)) {
    checkPair(op, a, b);
    return resultType(a, b);
  }
  if (isTensor(a)) return a._check(op), promoteWithScalar(a.dtype, scalarArg(op, b, 'other'));
  if (isTensor(b)) return b._check(op), promoteWithScalar(b.dtype, scalarArg(op, a, 'input'));
  throw new ValueError(op, 'expects at least one tensor operand');
}

function checkAlpha(op: string, dtype: DType, alpha: number, negate: boolean): void {
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw new ValueError(op, `alpha must be a finite number, got ${alpha}`);
  if (dtype === 'bool' && (negate || alpha !== 1)) {
    throw new DTypeError(op, negate ? 'subtraction of bool tensors is not supported; use logicalXor or logicalNot' : 'alpha must be 1 for bool tensors');
  }
  if (!isFloating(dtype) && !Number.isInteger(alpha)) throw new DTypeError(op, `alpha ${alpha} must be an integer for ${dtype} tensors`);
}

function addSub(op: 'add' | 'sub', a: TensorOrScalar, b: TensorOrScalar, alpha: number): Tensor {
  const dtype = arithDType(op, a, b);
  checkAlpha(op, dtype, alpha, op === 'sub');
  const k = op === 'sub' ? -alpha : alpha;
  if (isTensor(a) && isTensor(b)) {
    return withDType(dtype, [a, b], ([A, B2]) => {
      const out = binaryKernel(op, B.add, A, B2, dtype, k);
      const aShape = A.shape, bShape = B2.shape;
      return recordOp(op, [A, B2], out, [], (g, _s, needs) => [
        needs[0] ? sumToShape(g, aShape) : null,
        needs[1] ? sumToShape(k === 1 ? g : mul(g, k), bShape) : null,
      ]);
    });
  }
  if (isTensor(a)) {
    const s = Number(b);
    return withDType(dtype, [a], ([A]) => recordOp(op, [A], unaryKernel(U.add_scalar, A, dtype, k * s), [], (g) => [g]));
  }
  const t = b as Tensor, s = Number(a);
  return withDType(dtype, [t], ([T]) => recordOp(op, [T], unaryKernel(U.affine, T, dtype, k, s), [], (g) => [mul(g, k)]));
}

/** a + alpha * b, broadcasting; either side may be a number. */
export function add(a: TensorOrScalar, b: TensorOrScalar, alpha = 1): Tensor {
  return addSub('add', a, b, alpha);
}

/** a - alpha * b, broadcasting; either side may be a number. */
export function sub(a: TensorOrScalar, b: TensorOrScalar, alpha = 1): Tensor {
  return addSub('sub', a, b, alpha);
}

export function mul(a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const dtype = arithDType('mul', a, b);
  if (isTensor(a) && isTensor(b)) {
    return withDType(dtype, [a, b], ([A, B2]) => {
      const out = binaryKernel('mul', B.mul, A, B2, dtype);
      const aShape = A.shape, bShape = B2.shape;
      return recordOp('mul', [A, B2], out, [A, B2], (g, [sa, sb], needs) => [
        needs[0] ? sumToShape(mul(g, sb), aShape) : null,
        needs[1] ? sumToShape(mul(g, sa), bShape) : null,
      ]);
    });
  }
  const [t, s] = isTensor(a) ? [a, Number(b)] : [b as Tensor, Number(a)];
  return withDType(dtype, [t], ([T]) => recordOp('mul', [T], unaryKernel(U.mul_scalar, T, dtype, s), [], (g) => [mul(g, s)]));
}

/** True division: integer and bool operands give float32, like PyTorch. */
export function div(a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const promoted = arithDType('div', a, b);
  const dtype = isFloating(promoted) ? promoted : 'float32';
  if (isTensor(a) && isTensor(b)) {
    return withDType(dtype, [a, b], ([A, B2]) => {
      const out = binaryKernel('div', B.div, A, B2, dtype);
      const aShape = A.shape, bShape = B2.shape;
      return recordOp('div', [A, B2], out, [B2, out], (g, [sb, y], needs) => {
        const ga = div(g, sb);
        return [needs[0] ? sumToShape(ga, aShape) : null, needs[1] ? sumToShape(neg(mul(ga, y)), bShape) : null];
      });
    });
  }
  if (isTensor(a)) {
    const s = Number(b);
    return withDType(dtype, [a], ([A]) => recordOp('div', [A], unaryKernel(U.div_scalar, A, dtype, s), [], (g) => [div(g, s)]));
  }
  const s = Number(a);
  return withDType(dtype, [b as Tensor], ([T]) => {
    const out = unaryKernel(U.rdiv_scalar, T, dtype, s);
    // d(s / x)/dx = -s / x^2 = -y / x
    return recordOp('div', [T], out, [T, out], (g, [x, y]) => [neg(div(mul(g, y), x))]);
  });
}

export function pow(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('pow'); }
export function maximum(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('maximum'); }
export function minimum(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('minimum'); }

/**
 * One-input op: converts integer and bool inputs to float32 first when `float` (exp, log, ... like
 * PyTorch), runs the kernel, and records `backward(g, saved)` where saved is the input ('x') or the
 * output ('y').
 */
function unaryOp(
  op: string,
  code: number,
  x: Tensor,
  float: boolean,
  save: 'x' | 'y' | null,
  backward: ((g: Tensor, saved: Tensor) => Tensor) | null,
): Tensor {
  x._check(op);
  if (!float && x.dtype === 'bool') throw new DTypeError(op, 'does not take bool tensors');
  const dtype = float && !isFloating(x.dtype) ? 'float32' : x.dtype;
  return withDType(dtype, [x], ([X]) => {
    const out = unaryKernel(code, X, dtype);
    if (!backward || !isFloating(dtype)) return out;
    const saved = save === 'x' ? [X] : save === 'y' ? [out] : [];
    return recordOp(op, [X], out, saved, (g, s) => [backward(g, s[0])]);
  });
}

export function neg(x: Tensor): Tensor {
  return unaryOp('neg', U.neg, x, false, null, (g) => neg(g));
}
export function exp(x: Tensor): Tensor {
  return unaryOp('exp', U.exp, x, true, 'y', (g, y) => mul(g, y));
}
export function log(x: Tensor): Tensor {
  return unaryOp('log', U.log, x, true, 'x', (g, x0) => div(g, x0));
}
export function log1p(x: Tensor): Tensor { return todo('log1p'); }
export function sqrt(x: Tensor): Tensor { return todo('sqrt'); }
export function rsqrt(x: Tensor): Tensor { return todo('rsqrt'); }
export function square(x: Tensor): Tensor { return todo('square'); }
export function reciprocal(x: Tensor): Tensor { return todo('reciprocal'); }
export function abs(x: Tensor): Tensor { return todo('abs'); }
export function sign(x: Tensor): Tensor { return todo('sign'); }
export function sin(x: Tensor): Tensor { return todo('sin'); }
export function cos(x: Tensor): Tensor { return todo('cos'); }
export function tanh(x: Tensor): Tensor { return todo('tanh'); }
export function sigmoid(x: Tensor): Tensor { return todo('sigmoid'); }
export function relu(x: Tensor): Tensor { return todo('relu'); }
export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor { return todo('gelu'); }
export function silu(x: Tensor): Tensor { return todo('silu'); }
export function floor(x: Tensor): Tensor { return todo('floor'); }
export function ceil(x: Tensor): Tensor { return todo('ceil'); }
export function round(x: Tensor): Tensor { return todo('round'); }
export function clamp(x: Tensor, min?: number | null, max?: number | null): Tensor { return todo('clamp'); }
export function eq(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('eq'); }
export function ne(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('ne'); }
export function lt(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('lt'); }
export function le(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('le'); }
export function gt(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('gt'); }
export function ge(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('ge'); }
export function logicalNot(x: Tensor): Tensor { return todo('logicalNot'); }
export function logicalAnd(a: Tensor, b: Tensor): Tensor { return todo('logicalAnd'); }
export function logicalOr(a: Tensor, b: Tensor): Tensor { return todo('logicalOr'); }
export function where(cond: Tensor, a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('where'); }
export function maskedFill(x: Tensor, mask: Tensor, value: number): Tensor { return todo('maskedFill'); }
export function add_(x: Tensor, other: TensorOrScalar, alpha?: number): void { todo('add_'); }
export function sub_(x: Tensor, other: TensorOrScalar, alpha?: number): void { todo('sub_'); }
export function mul_(x: Tensor, other: TensorOrScalar): void { todo('mul_'); }
export function div_(x: Tensor, other: TensorOrScalar): void { todo('div_'); }
export function allclose(a: Tensor, b: Tensor, rtol = 1e-5, atol = 1e-8): boolean { return todo('allclose'); }
function todo(op: string): never {
  throw new Error(`${op}: not implemented yet`);
}
