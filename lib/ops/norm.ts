// Layer normalization: one fused native forward (y plus per-row mean and rstd, saved for
// backward) and one fused native backward giving grad_x, grad_weight and grad_bias together.
import { recordOp } from '../autograd/engine';
import { DTypeError, DeviceError, ShapeError, ValueError } from '../errors';
import { sameShape, shapeStr } from '../shape';
import { Tensor, emptyTensor } from '../tensor';
import { bindKernels, defineOp, fillOutputs } from './dispatch';
import { checkFloating } from './softmax';

const N = bindKernels('norm', {
  layerNormForward: '(x:T, weight:T?, bias:T?, normDims:i, eps:f, y:T, mean:T, rstd:T) -> void',
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
    if (typeof eps !== 'number' || !(eps >= 0) || !Number.isFinite(eps)) {
      throw new ValueError(op, `eps must be a finite non-negative number, got ${eps}`);
    }
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
