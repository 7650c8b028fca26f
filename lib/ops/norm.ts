// Layer normalization: one fused native forward (y plus per-row mean and rstd, saved for
// backward) and one fused native backward giving grad_x, grad_weight and grad_bias together; and
// addLayerNorm, the residual add of a pre-norm Transformer fused into the next norm's forward.
import { recordOp } from '../autograd/engine';
import { promoteTypes } from '../dtype';
import { DTypeError, DeviceError, ShapeError, ValueError } from '../errors';
import { sameShape, shapeStr } from '../shape';
import { Tensor, emptyTensor } from '../tensor';
import { to } from './creation';
import { bindKernels, defineOp, fillOutputs, withDType } from './dispatch';
import { checkFloating } from './softmax';

const N = bindKernels('norm', {
  layerNormForward: '(x:T, weight:T?, bias:T?, normDims:i, eps:f, y:T, mean:T, rstd:T) -> void',
  addLayerNormForward: '(x:T, delta:T, weight:T?, bias:T?, eps:f, sum:T, y:T, mean:T, rstd:T) -> void',
  layerNormBackward: '(gy:T, x:T, mean:T, rstd:T, weight:T?, normDims:i, gx:T?, gweight:T?, gbias:T?) -> void',
});

function checkParam(op: string, name: string, p: Tensor, x: Tensor, shape: readonly number[]): void {
  p._check(op);
  if (!sameShape(p.shape, shape)) {
    throw new ShapeError(op, `${name} shape ${shapeStr(p.shape)} does not match normalizedShape ${shapeStr(shape)}`);
  }
  if (p.dtype !== x.dtype) throw new DTypeError(op, `${name} dtype ${p.dtype} differs from input dtype ${x.dtype}`);
  if (p._dev !== x._dev) throw new DeviceError(op, `${name} is on ${p.device} but the input is on ${x.device}`);
}

function normalizedDims(normalizedShape: number | readonly number[]): number[] {
  return typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
}

type LayerNormArgs = [x: Tensor, normalizedShape: number | readonly number[], weight?: Tensor | null, bias?: Tensor | null, eps?: number];

function checkEps(op: string, eps: number): void {
  if (typeof eps !== 'number' || !(eps >= 0) || !Number.isFinite(eps)) {
    throw new ValueError(op, `eps must be a finite non-negative number, got ${eps}`);
  }
}

/** Records y = layerNorm(x) with the statistics its forward computed, and frees them (the graph keeps its own). */
function recordLayerNorm(x: Tensor, ns: number[], weight: Tensor | null | undefined, bias: Tensor | null | undefined, y: Tensor, mean: Tensor, rstd: Tensor): Tensor {
  const hasWeight = !!weight;
  const saved = hasWeight ? [x, mean, rstd, weight!] : [x, mean, rstd];
  const out = recordOp('layerNorm', [x, weight, bias], y, saved, (g, s, needs) => {
    const [xs, m, r] = s;
    const w = hasWeight ? s[3] : null;
    const gx = needs[0] ? emptyTensor(xs.shape, xs.dtype, xs._dev) : null;
    const gw = needs[1] ? emptyTensor(ns, xs.dtype, xs._dev) : null;
    const gb = needs[2] ? emptyTensor(ns, xs.dtype, xs._dev) : null;
    fillOutputs([gx, gw, gb].filter((t): t is Tensor => !!t), () =>
      N.layerNormBackward(g._h, xs._h, m._h, r._h, w ? w._h : null, ns.length, gx?._h ?? null, gw?._h ?? null, gb?._h ?? null),
    );
    return [gx, gw, gb];
  });
  mean.dispose();
  rstd.dispose();
  return out;
}

const layerNormOp = defineOp<LayerNormArgs>({
  name: 'layerNorm',
  inputs: [0, 2, 3],
  kernels: ['layerNormForward', 'layerNormBackward'],
  autocast: 'float32',
  check(x, normalizedShape, weight, bias, eps = 1e-5) {
    const op = 'layerNorm';
    x._check(op);
    const ns = normalizedDims(normalizedShape);
    checkFloating(op, x);
    const lead = x.ndim - ns.length;
    if (ns.some((d) => !Number.isInteger(d) || d < 0) || lead < 0 || !sameShape(x.shape.slice(lead), ns)) {
      throw new ShapeError(
        op,
        `normalizedShape ${shapeStr(ns)} does not match the trailing dims of input shape ${shapeStr(x.shape)}`,
      );
    }
    if (weight) checkParam(op, 'weight', weight, x, ns);
    if (bias) checkParam(op, 'bias', bias, x, ns);
    checkEps(op, eps);
  },
  forward(x, normalizedShape, weight, bias, eps = 1e-5) {
    const ns = normalizedDims(normalizedShape);
    const rows = x.shape.slice(0, x.ndim - ns.length);
    const y = emptyTensor(x.shape, x.dtype, x._dev);
    const mean = emptyTensor(rows, x.dtype, x._dev);
    const rstd = emptyTensor(rows, x.dtype, x._dev);
    fillOutputs([y, mean, rstd], () =>
      N.layerNormForward(x._h, weight?._h ?? null, bias?._h ?? null, ns.length, eps, y._h, mean._h, rstd._h),
    );
    return recordLayerNorm(x, ns, weight, bias, y, mean, rstd);
  },
});

/**
 * Normalizes x over its last normalizedShape.length dims (which must equal normalizedShape) to
 * zero mean and unit variance (biased), then scales by weight and shifts by bias when given, like
 * torch.nn.functional.layer_norm.
 */
export function layerNorm(
  x: Tensor, normalizedShape: number | readonly number[], weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5,
): Tensor {
  return layerNormOp(x, normalizedShape, weight, bias, eps);
}

// defineOp's forward returns one tensor (normed); the sum leaves through `sum` of this holder.
type AddLayerNormArgs = [x: Tensor, delta: Tensor, weight: Tensor | null, bias: Tensor | null, eps: number, out: { sum?: Tensor }];

const addLayerNormOp = defineOp<AddLayerNormArgs>({
  name: 'addLayerNorm',
  inputs: [0, 1, 2, 3],
  kernels: ['addLayerNormForward', 'layerNormBackward'],
  autocast: 'float32',
  check(x, delta, weight, bias, eps) {
    const op = 'addLayerNorm';
    x._check(op);
    delta._check(op);
    checkFloating(op, x);
    if (x.ndim === 0) throw new ShapeError(op, 'expects an input of at least one dim, got a 0-d tensor');
    if (delta._dev !== x._dev) throw new DeviceError(op, `delta is on ${delta.device} but the input is on ${x.device}`);
    if (!sameShape(delta.shape, x.shape)) throw new ShapeError(op, `delta shape ${shapeStr(delta.shape)} does not match input shape ${shapeStr(x.shape)}`);
    if (delta.dtype !== x.dtype) throw new DTypeError(op, `delta dtype ${delta.dtype} differs from input dtype ${x.dtype}`);
    const ns = [x.shape[x.ndim - 1]];
    if (weight) checkParam(op, 'weight', weight, x, ns);
    if (bias) checkParam(op, 'bias', bias, x, ns);
    checkEps(op, eps);
  },
  forward(x, delta, weight, bias, eps, out) {
    const ns = [x.shape[x.ndim - 1]];
    const sum = emptyTensor(x.shape, x.dtype, x._dev);
    const y = emptyTensor(x.shape, x.dtype, x._dev);
    const mean = emptyTensor(x.shape.slice(0, -1), x.dtype, x._dev);
    const rstd = emptyTensor(x.shape.slice(0, -1), x.dtype, x._dev);
    fillOutputs([sum, y, mean, rstd], () =>
      N.addLayerNormForward(x._h, delta._h, weight?._h ?? null, bias?._h ?? null, eps, sum._h, y._h, mean._h, rstd._h),
    );
    // Two nodes, as x.add(delta) then layerNorm would record: the gradients reaching sum from its
    // own uses and through the norm add up in the engine, then flow to x and delta unchanged.
    out.sum = recordOp('addLayerNorm', [x, delta], sum, [], (g) => [g, g]);
    return recordLayerNorm(out.sum, ns, weight, bias, y, mean, rstd);
  },
});

/**
 * @internal [sum, normed] with sum = x + delta and normed = layerNorm(sum) over the last dim (weight,
 * bias optional): a pre-norm Transformer's residual add and the next norm in one native pass that
 * reads x and delta once. Equal to `const sum = x.add(delta); [sum, layerNorm(sum, [E], weight, bias,
 * eps)]`, gradients included: x and delta promote like add's operands, and under autocast both
 * outputs are float32 like layerNorm's.
 */
export function addLayerNorm(x: Tensor, delta: Tensor, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): [Tensor, Tensor] {
  x._check('addLayerNorm');
  delta._check('addLayerNorm');
  const dtype = promoteTypes(x.dtype, delta.dtype);
  return withDType(dtype, [x, delta], ([X, D]) => {
    const out: { sum?: Tensor } = {};
    const normed = addLayerNormOp(X, D, weight ?? null, bias ?? null, eps, out);
    // Where the backend computed a half dtype in float32, defineOp cast normed back; sum likewise.
    let sum = out.sum!;
    if (sum.dtype !== normed.dtype) {
      const back = to(sum, normed.dtype, sum.device);
      sum.dispose();
      sum = back;
    }
    return [sum, normed];
  });
}
