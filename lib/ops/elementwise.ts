// Elementwise ops with NumPy broadcasting, PyTorch type promotion and JavaScript numbers as scalar
// operands. Each forward is one native call (native/ops/elementwise.h lists the ops and their
// formulas): operands are promoted to one dtype and broadcast as stride-0 views here, scalars travel
// as kernel parameters, and every op then runs through ewCall, the family's one door to defineOp, so
// the dtype policy (autocast, float32 where a backend lacks a half kernel) lives in dispatch.ts.
// Backward rules sit next to their forwards; gradients of broadcast operands are summed back with
// sumToShape.
import { recordOp } from '../autograd/engine';
import { noGrad } from '../autograd/grad_mode';
import { DType, isFloating, promoteTypes, promoteWithScalar } from '../dtype';
import { DTypeError, DeviceError, ShapeError, ValueError } from '../errors';
import { native } from '../native';
import { broadcastShapes, sameShape, shapeStr } from '../shape';
import { Tensor, TensorOrScalar, emptyTensor } from '../tensor';
import { checkInPlace, clone, to, zerosLike } from './creation';
import { bindKernels, defineOp, fillOutputs, kernelDTypes, opCodes, withDType } from './dispatch';
import { all, sumToShape } from './reduce';

const K = bindKernels('elementwise', {
  unary: '(op:e, x:T, out:T, s0:f, s1:f) -> void',
  binary: '(op:e, a:T, b:T, out:T, s0:f, s1:f) -> void',
  where: '(cond:T, a:T?, b:T?, sa:f, sb:f, out:T) -> void',
});

const U = opCodes('unaryOps', [
  'neg', 'exp', 'log', 'log1p', 'sqrt', 'rsqrt', 'square', 'reciprocal', 'abs', 'sign', 'sin', 'cos', 'tanh',
  'sigmoid', 'relu', 'gelu', 'gelu_tanh', 'silu', 'floor', 'ceil', 'round', 'logical_not', 'add_scalar',
  'mul_scalar', 'affine', 'div_scalar', 'rdiv_scalar', 'pow_scalar', 'rpow_scalar', 'clamp_min', 'clamp_max',
  'clamp', 'eq_scalar', 'ne_scalar', 'lt_scalar', 'le_scalar', 'gt_scalar', 'ge_scalar',
] as const);
const B = opCodes('binaryOps', [
  'add', 'mul', 'div', 'pow', 'maximum', 'minimum', 'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'logical_and', 'logical_or',
  'isclose', 'max_weight', 'clamp_backward', 'relu_backward', 'sigmoid_backward', 'tanh_backward', 'gelu_backward',
  'gelu_tanh_backward', 'silu_backward',
] as const);

/** A tensor operand of ewCall, or null where the op has none there (a scalar, or a unary op). */
type Operand = Tensor | null;
type EwArgs = [a: Operand, b: Operand, body: (a: Operand, b: Operand) => Tensor];

// The ops of this family on torch.autocast's float32 list; the others follow their promoted inputs.
const AUTOCAST_FLOAT32: ReadonlySet<string> = new Set(['exp', 'log', 'log1p', 'rsqrt', 'reciprocal', 'pow']);
const defined = new Map<string, (...args: EwArgs) => Tensor>();

/**
 * The family's one door to defineOp: runs body (the op's kernel calls and recordOp) on the tensor
 * operands a and b, already promoted to one dtype, under op `name`'s dtype policy. body must take the
 * dtype from the operands it is given, which the policy may have changed. One defined op per name,
 * made on first use.
 */
function ewCall(name: string, a: Operand, b: Operand, body: (a: Operand, b: Operand) => Tensor): Tensor {
  let op = defined.get(name);
  if (!op) {
    op = defineOp<EwArgs>({
      name,
      inputs: [0, 1],
      kernels: ['unary', 'binary', 'where'],
      autocast: AUTOCAST_FLOAT32.has(name) ? 'float32' : 'none',
      forward: (x, y, f) => f(x, y),
    });
    defined.set(name, op);
  }
  return op(a, b, body);
}

/** body on x converted to dtype (PyTorch's promotion), through op's policy. */
function unaryCall(op: string, dtype: DType, x: Tensor, body: (x: Tensor) => Tensor): Tensor {
  return withDType(dtype, [x], ([X]) => ewCall(op, X, null, (a) => body(a!)));
}

/** body on a and b converted to dtype (PyTorch's promotion), through op's policy. */
function binaryCall(op: string, dtype: DType, a: Tensor, b: Tensor, body: (a: Tensor, b: Tensor) => Tensor): Tensor {
  return withDType(dtype, [a, b], ([A, B2]) => ewCall(op, A, B2, (x, y) => body(x!, y!)));
}

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

/** t broadcast to shape as a stride-0 view (not recorded: callers sum gradients back themselves). */
function broadcastView(t: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(t.shape, shape)) return t;
  const lead = shape.length - t.ndim;
  const strides = shape.map((s, i) => (i < lead || t.shape[i - lead] !== s ? 0 : t.strides[i - lead]));
  return t._viewAs(shape, strides, t.offset);
}

function unaryKernel(code: number, x: Tensor, dtype: DType, s0 = 0, s1 = 0): Tensor {
  const out = emptyTensor(x.shape, dtype, x._dev);
  fillOutputs([out], () => K.unary(code, x._h, out._h, s0, s1));
  return out;
}

function binaryKernel(op: string, code: number, a: Tensor, b: Tensor, dtype: DType, s0 = 0, s1 = 0): Tensor {
  const shape = sameShape(a.shape, b.shape) ? a.shape : broadcastShapes(op, a.shape, b.shape);
  const ea = broadcastView(a, shape), eb = broadcastView(b, shape);
  const out = emptyTensor(shape, dtype, a._dev);
  try {
    fillOutputs([out], () => K.binary(code, ea._h, eb._h, out._h, s0, s1));
  } finally {
    if (ea !== a) ea.dispose();
    if (eb !== b) eb.dispose();
  }
  return out;
}

/**
 * A tensor-with-tensor op on operands converted to dtype and broadcast. `backward` returns gradients of
 * the broadcast shape (null where not needed); they are summed back to each operand's shape.
 */
function binaryOp(
  op: string,
  code: number,
  a: Tensor,
  b: Tensor,
  dtype: DType,
  save: (a: Tensor, b: Tensor, out: Tensor) => Tensor[],
  backward: (g: Tensor, saved: Tensor[], needs: boolean[]) => Array<Tensor | null>,
  s0 = 0,
): Tensor {
  return binaryCall(op, dtype, a, b, (A, B2) => {
    const out = binaryKernel(op, code, A, B2, A.dtype, s0);
    if (!isFloating(A.dtype)) return out;
    const aShape = A.shape, bShape = B2.shape;
    return recordOp(op, [A, B2], out, save(A, B2, out), (g, saved, needs) => {
      const [ga, gb] = backward(g, saved, needs);
      return [ga && needs[0] ? sumToShape(ga, aShape) : null, gb && needs[1] ? sumToShape(gb, bShape) : null];
    });
  });
}

/** The dtype of tensor-with-tensor or tensor-with-scalar arithmetic; two scalars are an error. */
function arithDType(op: string, a: TensorOrScalar, b: TensorOrScalar): DType {
  if (isTensor(a) && isTensor(b)) {
    checkPair(op, a, b);
    return resultType(a, b);
  }
  if (!isTensor(a) && !isTensor(b)) throw new ValueError(op, 'expects at least one tensor operand');
  const [t, s] = isTensor(a) ? [a, scalarArg(op, b, 'other')] : [b as Tensor, scalarArg(op, a, 'input')];
  t._check(op);
  return promoteWithScalar(t.dtype, s);
}

function checkAlpha(op: string, dtype: DType, alpha: number, negate: boolean): void {
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw new ValueError(op, `alpha must be a finite number, got ${alpha}`);
  if (dtype === 'bool' && (negate || alpha !== 1)) {
    throw new DTypeError(op, negate ? 'subtraction of bool tensors is not supported (a.ne(b) is their exclusive or)' : 'alpha must be 1 for bool tensors');
  }
  if (!isFloating(dtype) && !Number.isInteger(alpha)) throw new DTypeError(op, `alpha ${alpha} must be an integer for ${dtype} tensors`);
}

function addSub(op: 'add' | 'sub', a: TensorOrScalar, b: TensorOrScalar, alpha: number): Tensor {
  const dtype = arithDType(op, a, b);
  checkAlpha(op, dtype, alpha, op === 'sub');
  const k = op === 'sub' ? -alpha : alpha;
  if (isTensor(a) && isTensor(b)) {
    return binaryOp(op, B.add, a, b, dtype, () => [], (g, _s, needs) => [g, needs[1] && k !== 1 ? mul(g, k) : g], k);
  }
  if (isTensor(a)) {
    const s = Number(b);
    return unaryCall(op, dtype, a, (A) => recordOp(op, [A], unaryKernel(U.add_scalar, A, A.dtype, k * s), [], (g) => [g]));
  }
  const t = b as Tensor, s = Number(a);
  return unaryCall(op, dtype, t, (T) => recordOp(op, [T], unaryKernel(U.affine, T, T.dtype, k, s), [], (g) => [mul(g, k)]));
}

/** a + alpha * b, broadcasting; either side may be a number. */
export function add(a: TensorOrScalar, b: TensorOrScalar, alpha = 1): Tensor {
  return addSub('add', a, b, alpha);
}

/** a - alpha * b, broadcasting; either side may be a number. */
export function sub(a: TensorOrScalar, b: TensorOrScalar, alpha = 1): Tensor {
  return addSub('sub', a, b, alpha);
}

/**
 * a * b elementwise, broadcasting; either side may be a number (like torch.mul). The result dtype
 * follows PyTorch promotion (resultType).
 */
export function mul(a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const dtype = arithDType('mul', a, b);
  if (isTensor(a) && isTensor(b)) {
    return binaryOp('mul', B.mul, a, b, dtype, (A, B2) => [A, B2], (g, [x, y], needs) => [
      needs[0] ? mul(g, y) : null,
      needs[1] ? mul(g, x) : null,
    ]);
  }
  const [t, s] = isTensor(a) ? [a, Number(b)] : [b as Tensor, Number(a)];
  return unaryCall('mul', dtype, t, (T) => recordOp('mul', [T], unaryKernel(U.mul_scalar, T, T.dtype, s), [], (g) => [mul(g, s)]));
}

/** True division: integer and bool operands give float32, like PyTorch. */
export function div(a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const promoted = arithDType('div', a, b);
  const dtype = isFloating(promoted) ? promoted : 'float32';
  if (isTensor(a) && isTensor(b)) {
    return binaryOp('div', B.div, a, b, dtype, (_A, B2, out) => [B2, out], (g, [y, q], needs) => {
      const ga = div(g, y);
      return [ga, needs[1] ? neg(mul(ga, q)) : null];
    });
  }
  if (isTensor(a)) {
    const s = Number(b);
    return unaryCall('div', dtype, a, (A) => recordOp('div', [A], unaryKernel(U.div_scalar, A, A.dtype, s), [], (g) => [div(g, s)]));
  }
  const s = Number(a);
  return unaryCall('div', dtype, b as Tensor, (T) => {
    const out = unaryKernel(U.rdiv_scalar, T, T.dtype, s);
    // d(s / x)/dx = -s / x^2 = -y / x
    return recordOp('div', [T], out, [T, out], (g, [x, y]) => [neg(div(mul(g, y), x))]);
  });
}

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
  return unaryCall(op, dtype, x, (X) => {
    const out = unaryKernel(code, X, X.dtype);
    if (!backward || !isFloating(X.dtype)) return out;
    const saved = save === 'x' ? [X] : save === 'y' ? [out] : [];
    return recordOp(op, [X], out, saved, (g, s) => [backward(g, s[0])]);
  });
}

/** -x elementwise (bool tensors are a DTypeError). */
export function neg(x: Tensor): Tensor {
  return unaryOp('neg', U.neg, x, false, null, (g) => neg(g));
}
/** e^x elementwise; integer and bool inputs give float32. */
export function exp(x: Tensor): Tensor {
  return unaryOp('exp', U.exp, x, true, 'y', (g, y) => mul(g, y));
}
/** Natural logarithm elementwise (-Infinity at 0, NaN below); integer and bool inputs give float32. */
export function log(x: Tensor): Tensor {
  return unaryOp('log', U.log, x, true, 'x', (g, x0) => div(g, x0));
}
/** log(1 + x), accurate for small x; integer and bool inputs give float32. */
export function log1p(x: Tensor): Tensor {
  return unaryOp('log1p', U.log1p, x, true, 'x', (g, x0) => div(g, add(x0, 1)));
}
/** Square root elementwise (NaN for negative inputs); integer and bool inputs give float32. */
export function sqrt(x: Tensor): Tensor {
  return unaryOp('sqrt', U.sqrt, x, true, 'y', (g, y) => div(g, mul(y, 2)));
}
/** 1 / sqrt(x) elementwise; integer and bool inputs give float32. */
export function rsqrt(x: Tensor): Tensor {
  // d(x^-1/2)/dx = -y^3 / 2
  return unaryOp('rsqrt', U.rsqrt, x, true, 'y', (g, y) => mul(g, mul(pow(y, 3), -0.5)));
}
/** x * x elementwise, keeping the dtype (bool is a DTypeError). */
export function square(x: Tensor): Tensor {
  return unaryOp('square', U.square, x, false, 'x', (g, x0) => mul(g, mul(x0, 2)));
}
/** 1 / x elementwise; integer and bool inputs give float32. */
export function reciprocal(x: Tensor): Tensor {
  return unaryOp('reciprocal', U.reciprocal, x, true, 'y', (g, y) => neg(mul(g, square(y))));
}
/** |x| elementwise, keeping the dtype; the gradient at 0 is 0. */
export function abs(x: Tensor): Tensor {
  return unaryOp('abs', U.abs, x, false, 'x', (g, x0) => mul(g, sign(x0)));
}
/** Sine (radians) elementwise; integer and bool inputs give float32. */
export function sin(x: Tensor): Tensor {
  return unaryOp('sin', U.sin, x, true, 'x', (g, x0) => mul(g, cos(x0)));
}
/** Cosine (radians) elementwise; integer and bool inputs give float32. */
export function cos(x: Tensor): Tensor {
  return unaryOp('cos', U.cos, x, true, 'x', (g, x0) => neg(mul(g, sin(x0))));
}

/** A fused backward kernel: code(saved, g) with saved the op's input or output. */
function fusedBackward(op: string, code: number, saved: Tensor, g: Tensor): Tensor {
  return binaryKernel(op, code, saved, g, g.dtype);
}

/** Hyperbolic tangent elementwise; integer and bool inputs give float32. */
export function tanh(x: Tensor): Tensor {
  return unaryOp('tanh', U.tanh, x, true, 'y', (g, y) => fusedBackward('tanh', B.tanh_backward, y, g));
}
/** 1 / (1 + e^-x) elementwise; integer and bool inputs give float32. */
export function sigmoid(x: Tensor): Tensor {
  return unaryOp('sigmoid', U.sigmoid, x, true, 'y', (g, y) => fusedBackward('sigmoid', B.sigmoid_backward, y, g));
}
/** max(x, 0) elementwise, keeping the dtype (like torch.relu). */
export function relu(x: Tensor): Tensor {
  return unaryOp('relu', U.relu, x, false, 'y', (g, y) => fusedBackward('relu', B.relu_backward, y, g));
}
/** x * sigmoid(x) elementwise (swish); integer and bool inputs give float32. */
export function silu(x: Tensor): Tensor {
  return unaryOp('silu', U.silu, x, true, 'x', (g, x0) => fusedBackward('silu', B.silu_backward, x0, g));
}
/** x * Phi(x) with the exact normal CDF (erf), or its tanh approximation (approximate = 'tanh'). */
export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor {
  if (approximate !== 'none' && approximate !== 'tanh') {
    throw new ValueError('gelu', `approximate must be 'none' or 'tanh', got ${JSON.stringify(approximate)}`);
  }
  const [f, bw] = approximate === 'tanh' ? [U.gelu_tanh, B.gelu_tanh_backward] : [U.gelu, B.gelu_backward];
  return unaryOp('gelu', f, x, true, 'x', (g, x0) => fusedBackward('gelu', bw, x0, g));
}
/** @internal gelu's backward, grad * gelu'(x), for ops that keep gelu's input x themselves (linearGelu). */
export function geluBackward(x: Tensor, grad: Tensor, approximate: 'none' | 'tanh'): Tensor {
  return fusedBackward('gelu', approximate === 'tanh' ? B.gelu_tanh_backward : B.gelu_backward, x, grad);
}

/** Piecewise-constant ops: zero gradient; integer tensors come back unchanged (as a copy) for rounding. */
function stepOp(op: string, code: number, x: Tensor, rounding: boolean): Tensor {
  x._check(op);
  if (rounding && !isFloating(x.dtype)) return clone(x);
  return unaryOp(op, code, x, false, null, (g) => zerosLike(g));
}
/** -1, 0 or 1 by the sign of each element, in x's dtype; the gradient is zero. */
export function sign(x: Tensor): Tensor {
  return stepOp('sign', U.sign, x, false);
}
/** Rounds down elementwise; integer tensors come back as an unchanged copy. The gradient is zero. */
export function floor(x: Tensor): Tensor {
  return stepOp('floor', U.floor, x, true);
}
/** Rounds up elementwise; integer tensors come back as an unchanged copy. The gradient is zero. */
export function ceil(x: Tensor): Tensor {
  return stepOp('ceil', U.ceil, x, true);
}
/** Rounds half to even, like PyTorch. */
export function round(x: Tensor): Tensor {
  return stepOp('round', U.round, x, true);
}

/** a ** b; either side may be a number. Integer tensors to negative integer powers are an error. */
export function pow(a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const dtype = arithDType('pow', a, b);
  if (isTensor(a) && isTensor(b)) {
    return binaryOp('pow', B.pow, a, b, dtype, (A, B2, out) => [A, B2, out], (g, [x, e, y], needs) => [
      needs[0] ? mul(g, mul(e, pow(x, sub(e, 1)))) : null,
      // d/de x^e = x^e log x, taken as 0 where x == 0 and e >= 0 (where log x is -inf), like PyTorch.
      needs[1] ? mul(g, maskedFill(mul(y, log(x)), logicalAnd(eq(x, 0), ge(e, 0)), 0)) : null,
    ]);
  }
  if (isTensor(a)) {
    const s = Number(b);
    if (!isFloating(dtype) && s < 0) throw new ValueError('pow', `integer tensors to negative integer powers (${s}) are not allowed`);
    return unaryCall('pow', dtype, a, (X) => {
      const float = isFloating(X.dtype);
      // The common exponents have exact, faster kernels.
      const special: Record<number, number> = { 2: U.square, 0.5: U.sqrt, [-1]: U.reciprocal, [-0.5]: U.rsqrt };
      const out = special[s] !== undefined && (s === 2 || float) ? unaryKernel(special[s], X, X.dtype) : unaryKernel(U.pow_scalar, X, X.dtype, s);
      if (!float) return out;
      return recordOp('pow', [X], out, [X], (g, [x]) => [s === 0 ? zerosLike(g) : mul(g, mul(s === 2 ? x : pow(x, s - 1), s))]);
    });
  }
  const s = Number(a);
  return unaryCall('pow', dtype, b as Tensor, (X) => {
    const out = unaryKernel(U.rpow_scalar, X, X.dtype, s);
    if (!isFloating(X.dtype)) return out;
    return recordOp('pow', [X], out, [X, out], (g, [x, y]) => {
      const d = mul(g, mul(y, Math.log(s)));
      return [s === 0 ? maskedFill(d, ge(x, 0), 0) : d];
    });
  });
}

/** Elementwise maximum (maximum) or minimum; NaN propagates. Tied elements share the gradient. */
function extremum(op: 'maximum' | 'minimum', a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const dtype = arithDType(op, a, b);
  const isMax = op === 'maximum';
  if (isTensor(a) && isTensor(b)) {
    return binaryOp(op, isMax ? B.maximum : B.minimum, a, b, dtype, (A, B2) => [A, B2], (g, [x, y], needs) => {
      // The share of a: 1 where it wins, 1/2 on ties, 0 where it loses.
      const ga = mul(g, isMax ? binaryKernel(op, B.max_weight, x, y, x.dtype) : binaryKernel(op, B.max_weight, y, x, x.dtype));
      return [ga, needs[1] ? sub(g, ga) : null];
    });
  }
  const [t, s] = isTensor(a) ? [a, Number(b)] : [b as Tensor, Number(a)];
  return clampOp(op, t, isMax ? s : null, isMax ? null : s, dtype);
}
/**
 * The larger of a and b elementwise, broadcasting; either side may be a number. NaN propagates; ties
 * split the gradient evenly.
 */
export function maximum(a: TensorOrScalar, b: TensorOrScalar): Tensor {
  return extremum('maximum', a, b);
}
/**
 * The smaller of a and b elementwise, broadcasting; either side may be a number. NaN propagates; ties
 * split the gradient evenly.
 */
export function minimum(a: TensorOrScalar, b: TensorOrScalar): Tensor {
  return extremum('minimum', a, b);
}

function clampOp(op: string, x: Tensor, lo: number | null, hi: number | null, dtype: DType): Tensor {
  return unaryCall(op, dtype, x, (X) => {
    const out =
      lo !== null && hi !== null ? unaryKernel(U.clamp, X, X.dtype, lo, hi)
      : lo !== null ? unaryKernel(U.clamp_min, X, X.dtype, lo)
      : unaryKernel(U.clamp_max, X, X.dtype, hi!);
    if (!isFloating(X.dtype)) return out;
    const [l, h] = [lo ?? -Infinity, hi ?? Infinity];
    return recordOp(op, [X], out, [X], (g, [x0]) => [binaryKernel(op, B.clamp_backward, x0, g, g.dtype, l, h)]);
  });
}

/** Limits x to [min, max] (either may be omitted); the gradient passes where x is inside. */
export function clamp(x: Tensor, min?: number | null, max?: number | null): Tensor {
  x._check('clamp');
  const lo = min ?? null, hi = max ?? null;
  if (lo === null && hi === null) throw new ValueError('clamp', 'at least one of min and max must be given');
  let dtype = x.dtype;
  for (const [name, v] of [['min', lo], ['max', hi]] as const) {
    if (v === null) continue;
    if (typeof v !== 'number') throw new ValueError('clamp', `${name} must be a number, got ${typeof v}`);
    dtype = promoteWithScalar(dtype, v);
  }
  return clampOp('clamp', x, lo, hi, dtype);
}

const FLIPPED = { eq: 'eq', ne: 'ne', lt: 'gt', le: 'ge', gt: 'lt', ge: 'le' } as const;
type CompareOp = keyof typeof FLIPPED;

/** Comparisons give bool tensors; operands of different dtypes compare after promotion. */
function compare(op: CompareOp, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const dtype = arithDType(op, a, b);
  if (isTensor(a) && isTensor(b)) return binaryCall(op, dtype, a, b, (A, B2) => binaryKernel(op, B[op], A, B2, 'bool'));
  const [t, s, code] = isTensor(a) ? [a, Number(b), op] : [b as Tensor, Number(a), FLIPPED[op]];
  return unaryCall(op, dtype, t, (T) => unaryKernel(U[`${code}_scalar`], T, 'bool', s));
}
/**
 * a == b elementwise as a bool tensor, broadcasting; either side may be a number. Mixed dtypes compare
 * after promotion.
 */
export function eq(a: TensorOrScalar, b: TensorOrScalar): Tensor { return compare('eq', a, b); }
/** a != b elementwise as a bool tensor (broadcasting, numbers allowed, as eq). */
export function ne(a: TensorOrScalar, b: TensorOrScalar): Tensor { return compare('ne', a, b); }
/** a < b elementwise as a bool tensor (broadcasting, numbers allowed, as eq). */
export function lt(a: TensorOrScalar, b: TensorOrScalar): Tensor { return compare('lt', a, b); }
/** a <= b elementwise as a bool tensor (broadcasting, numbers allowed, as eq). */
export function le(a: TensorOrScalar, b: TensorOrScalar): Tensor { return compare('le', a, b); }
/** a > b elementwise as a bool tensor (broadcasting, numbers allowed, as eq). */
export function gt(a: TensorOrScalar, b: TensorOrScalar): Tensor { return compare('gt', a, b); }
/** a >= b elementwise as a bool tensor (broadcasting, numbers allowed, as eq). */
export function ge(a: TensorOrScalar, b: TensorOrScalar): Tensor { return compare('ge', a, b); }

function tensorArg(op: string, v: unknown, name: string): Tensor {
  if (!isTensor(v)) throw new ValueError(op, `${name} must be a tensor`);
  v._check(op);
  return v;
}

/** True where x is zero (any dtype; NaN counts as true, i.e. non-zero). */
export function logicalNot(x: Tensor): Tensor {
  tensorArg('logicalNot', x, 'input');
  return unaryCall('logicalNot', x.dtype, x, (X) => unaryKernel(U.logical_not, X, 'bool'));
}
function logical(op: 'logicalAnd' | 'logicalOr', a: Tensor, b: Tensor): Tensor {
  tensorArg(op, a, 'input');
  tensorArg(op, b, 'other');
  checkPair(op, a, b);
  return binaryCall(op, promoteTypes(a.dtype, b.dtype), a, b, (A, B2) =>
    binaryKernel(op, op === 'logicalAnd' ? B.logical_and : B.logical_or, A, B2, 'bool'));
}
/** True where both a and b are non-zero, broadcasting; any dtypes (like torch.logical_and). */
export function logicalAnd(a: Tensor, b: Tensor): Tensor { return logical('logicalAnd', a, b); }
/** True where a or b is non-zero, broadcasting; any dtypes (like torch.logical_or). */
export function logicalOr(a: Tensor, b: Tensor): Tensor { return logical('logicalOr', a, b); }

function checkCond(op: string, cond: Tensor, name: string): void {
  tensorArg(op, cond, name);
  if (cond.dtype !== 'bool') throw new DTypeError(op, `${name} must be a bool tensor, got ${cond.dtype}`);
}

/** cond ? a : b with a and b (tensors of dtype, or numbers) and cond broadcast together. */
function whereKernel(op: string, cond: Tensor, a: Tensor | number, b: Tensor | number, dtype: DType): Tensor {
  const shape = broadcastShapes(op, ...[cond, a, b].filter(isTensor).map((v) => v.shape));
  const views = [cond, a, b].map((v) => (isTensor(v) ? broadcastView(v, shape) : null));
  const out = emptyTensor(shape, dtype, cond._dev);
  try {
    fillOutputs([out], () =>
      K.where(views[0]!._h, views[1]?._h ?? null, views[2]?._h ?? null, isTensor(a) ? 0 : a, isTensor(b) ? 0 : b, out._h),
    );
  } finally {
    views.forEach((v, i) => v && v !== [cond, a, b][i] && v.dispose());
  }
  return out;
}

/** Elements of a where cond is true, of b elsewhere; cond, a and b broadcast together, a or b may be numbers. */
export function where(cond: Tensor, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  checkCond('where', cond, 'condition');
  let dtype: DType;
  if (isTensor(a) || isTensor(b)) {
    dtype = arithDType('where', a, b);
    for (const v of [a, b]) if (isTensor(v) && v._dev !== cond._dev) throw new DeviceError('where', `condition on ${cond.device}, values on ${v.device}`);
  } else {
    const [sa, sb] = [scalarArg('where', a, 'input'), scalarArg('where', b, 'other')];
    dtype = typeof sa === 'boolean' && typeof sb === 'boolean' ? 'bool' : Number.isInteger(sa) && Number.isInteger(sb) ? 'int64' : 'float32';
  }
  const ts = [a, b].filter(isTensor);
  return withDType(dtype, ts, (cs) =>
    ewCall('where', isTensor(a) ? cs[0] : null, isTensor(b) ? cs[cs.length - 1] : null, (A, B2) => {
      const outDType = A?.dtype ?? B2?.dtype ?? dtype;
      const out = whereKernel('where', cond, A ?? Number(a), B2 ?? Number(b), outDType);
      if (!isFloating(outDType)) return out;
      const aShape = A ? A.shape : [], bShape = B2 ? B2.shape : [];
      return recordOp('where', [A, B2], out, [cond], (g, [c], needs) => [
        needs[0] ? sumToShape(whereKernel('where', c, g, 0, g.dtype), aShape) : null,
        needs[1] ? sumToShape(whereKernel('where', c, 0, g, g.dtype), bShape) : null,
      ]);
    }),
  );
}

/** x with value where mask (bool, broadcastable to x's shape) is true; keeps x's dtype. */
export function maskedFill(x: Tensor, mask: Tensor, value: number): Tensor {
  tensorArg('maskedFill', x, 'input');
  checkCond('maskedFill', mask, 'mask');
  checkPair('maskedFill', x, mask);
  const v = Number(scalarArg('maskedFill', value, 'value'));
  if (!sameShape(broadcastShapes('maskedFill', x.shape, mask.shape), x.shape)) {
    throw new ShapeError('maskedFill', `mask of shape ${shapeStr(mask.shape)} cannot be broadcast to the input's shape ${shapeStr(x.shape)}`);
  }
  if (!isFloating(x.dtype) && !Number.isFinite(v)) throw new ValueError('maskedFill', `cannot fill a ${x.dtype} tensor with ${v}`);
  return unaryCall('maskedFill', x.dtype, x, (X) => {
    const out = whereKernel('maskedFill', mask, v, X, X.dtype);
    if (!isFloating(X.dtype)) return out;
    return recordOp('maskedFill', [X], out, [mask], (g, [m]) => [whereKernel('maskedFill', m, 0, g, g.dtype)]);
  });
}

/** Whether a value of dtype `from` may be written into a tensor of dtype `to` (PyTorch's canCast). */
function canCast(from: DType, to: DType): boolean {
  if (isFloating(from) && !isFloating(to)) return false;
  return !(from !== 'bool' && to === 'bool');
}

/**
 * x op= other, written into x's storage (x may be a strided view; other broadcasts to x's shape).
 * In-place ops are not recorded by autograd, so they refuse tensors that take part in a recorded graph.
 */
function inPlace(op: string, kind: 'add' | 'mul' | 'div', x: Tensor, other: TensorOrScalar, alpha: number): void {
  checkInPlace(op, x, isTensor(other) ? other : null);
  if (x.shape.some((s, i) => s > 1 && x.strides[i] === 0)) {
    throw new ValueError(op, `cannot write in place into a broadcast view of shape ${shapeStr(x.shape)} (several elements share memory)`);
  }
  let promoted = isTensor(other) ? (checkPair(op, x, other), resultType(x, other)) : promoteWithScalar(x.dtype, scalarArg(op, other, 'other'));
  if (kind === 'div' && !isFloating(promoted)) promoted = 'float32';
  if (!canCast(promoted, x.dtype)) throw new DTypeError(op, `result type ${promoted} can't be cast to the tensor's dtype ${x.dtype}`);
  if (kind === 'add') checkAlpha(op, x.dtype, alpha, op === 'sub_');
  if (x.dtype !== 'float32' && !kernelDTypes(isTensor(other) ? 'binary' : 'unary', x._dev).includes(x.dtype)) {
    // No kernel for x's dtype on its device (float16 on CUDA): compute in float32, round back into x.
    const wide = noGrad(() => to(x, 'float32', x.device));
    try {
      inPlace(op, kind, wide, other, alpha);
      native.copy(wide._h, x._h);
    } finally {
      wide.dispose();
    }
    x._bumpVersion();
    return;
  }
  const k = op === 'sub_' ? -alpha : alpha;
  if (!isTensor(other)) {
    const s = Number(other);
    const [code, s0] = kind === 'add' ? [U.add_scalar, k * s] : kind === 'mul' ? [U.mul_scalar, s] : [U.div_scalar, s];
    K.unary(code, x._h, x._h, s0, 0);
  } else {
    if (!sameShape(broadcastShapes(op, x.shape, other.shape), x.shape)) {
      throw new ShapeError(op, `other of shape ${shapeStr(other.shape)} cannot be broadcast to the tensor's shape ${shapeStr(x.shape)}`);
    }
    // An operand sharing x's storage is copied first so that no element is read after it was written.
    const cast = other.dtype === x.dtype ? other : to(other, x.dtype, other.device);
    const src = native.sameStorage(cast._h, x._h) ? clone(cast) : cast;
    const view = broadcastView(src, x.shape);
    try {
      K.binary(kind === 'add' ? B.add : kind === 'mul' ? B.mul : B.div, x._h, view._h, x._h, kind === 'add' ? k : 0, 0);
    } finally {
      for (const tmp of new Set([view, src, cast])) if (tmp !== other) tmp.dispose();
    }
  }
  x._bumpVersion();
}
/**
 * In place: x += alpha * other, other broadcast to x's shape (like torch.Tensor.add_). x keeps its
 * dtype: a result type it cannot hold (float into int) is a DTypeError. In-place ops are not
 * recorded by autograd: while grad mode is on, x or other requiring grad is an error (update
 * parameters inside noGrad()).
 */
export function add_(x: Tensor, other: TensorOrScalar, alpha = 1): void { inPlace('add_', 'add', x, other, alpha); }
/** In place: x -= alpha * other (broadcasting and dtype rules as add_). */
export function sub_(x: Tensor, other: TensorOrScalar, alpha = 1): void { inPlace('sub_', 'add', x, other, alpha); }
/** In place: x *= other (broadcasting and dtype rules as add_). */
export function mul_(x: Tensor, other: TensorOrScalar): void { inPlace('mul_', 'mul', x, other, 1); }
/**
 * In place: x /= other, true division; integer x is a DTypeError since the quotient is floating point
 * (rules as add_).
 */
export function div_(x: Tensor, other: TensorOrScalar): void { inPlace('div_', 'div', x, other, 1); }

/** |a - b| <= atol + rtol * |b| elementwise (inf equals inf of the same sign; NaN is never close). */
export function isclose(a: Tensor, b: Tensor, rtol = 1e-5, atol = 1e-8): Tensor {
  tensorArg('isclose', a, 'input');
  tensorArg('isclose', b, 'other');
  checkPair('isclose', a, b);
  if (!(rtol >= 0) || !(atol >= 0)) throw new ValueError('isclose', `rtol and atol must be non-negative, got ${rtol} and ${atol}`);
  const promoted = resultType(a, b);
  const dtype = isFloating(promoted) ? promoted : 'float64';
  return noGrad(() => binaryCall('isclose', dtype, a, b, (A, B2) => binaryKernel('isclose', B.isclose, A, B2, 'bool', rtol, atol)));
}

/** True when every element of a is close to b's (broadcasting), like torch.allclose. */
export function allclose(a: Tensor, b: Tensor, rtol = 1e-5, atol = 1e-8): boolean {
  const c = isclose(a, b, rtol, atol);
  const r = all(c);
  try {
    return r.item() !== 0;
  } finally {
    c.dispose();
    r.dispose();
  }
}
