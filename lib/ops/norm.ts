// Layer normalization: one fused native forward (y plus per-row mean and rstd, saved for
// backward) and one fused native backward giving grad_x, grad_weight and grad_bias together.
import { recordOp } from '../autograd/engine';
import { DTypeError, DeviceError, ShapeError, ValueError } from '../errors';
import { NativeHandle, native } from '../native';
import { sameShape, shapeStr } from '../shape';
import { Tensor, emptyTensor } from '../tensor';
import { checkFloating, fillOutputs, halfOnCpuViaFloat32 } from './softmax';

interface NormNative {
  layerNormForward(
    x: NativeHandle, weight: NativeHandle | null, bias: NativeHandle | null, normDims: number, eps: number,
    y: NativeHandle, mean: NativeHandle, rstd: NativeHandle,
  ): void;
  layerNormBackward(
    gy: NativeHandle, x: NativeHandle, mean: NativeHandle, rstd: NativeHandle, weight: NativeHandle | null,
    normDims: number, gx: NativeHandle | null, gweight: NativeHandle | null, gbias: NativeHandle | null,
  ): void;
}
const N = native as unknown as NormNative;

function checkParam(op: string, name: string, p: Tensor, x: Tensor, shape: readonly number[]): void {
  p._check(op);
  if (!sameShape(p.shape, shape)) {
    throw new ShapeError(op, `${name} shape ${shapeStr(p.shape)} does not match normalizedShape ${shapeStr(shape)}`);
  }
  if (p.dtype !== x.dtype) throw new DTypeError(op, `${name} dtype ${p.dtype} differs from input dtype ${x.dtype}`);
  if (p._dev !== x._dev) throw new DeviceError(op, `${name} is on ${p.device} but the input is on ${x.device}`);
}

/**
 * Normalizes x over its last normalizedShape.length dims (which must equal normalizedShape) to
 * zero mean and unit variance (biased), then scales by weight and shifts by bias when given, like
 * torch.nn.functional.layer_norm.
 */
export function layerNorm(
  x: Tensor, normalizedShape: number | readonly number[], weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5,
): Tensor {
  const op = 'layerNorm';
  x._check(op);
  const ns = typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
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
  const viaFloat = halfOnCpuViaFloat32(x, [x, weight, bias], (xf, wf, bf) => layerNorm(xf!, ns, wf, bf, eps));
  if (viaFloat) return viaFloat;
  const rows = x.shape.slice(0, lead);
  const y = emptyTensor(x.shape, x.dtype, x._dev);
  const mean = emptyTensor(rows, x.dtype, x._dev);
  const rstd = emptyTensor(rows, x.dtype, x._dev);
  fillOutputs([y, mean, rstd], () =>
    N.layerNormForward(x._h, weight?._h ?? null, bias?._h ?? null, ns.length, eps, y._h, mean._h, rstd._h),
  );
  const hasWeight = !!weight;
  const saved = hasWeight ? [x, mean, rstd, weight!] : [x, mean, rstd];
  const out = recordOp(op, [x, weight, bias], y, saved, (g, s, needs) => {
    const [xs, m, r] = s;
    const w = hasWeight ? s[3] : null;
    const gx = needs[0] ? emptyTensor(xs.shape, xs.dtype, xs._dev) : null;
    const gw = needs[1] ? emptyTensor(ns, xs.dtype, xs._dev) : null;
    const gb = needs[2] ? emptyTensor(ns, xs.dtype, xs._dev) : null;
    N.layerNormBackward(g._h, xs._h, m._h, r._h, w ? w._h : null, ns.length, gx ? gx._h : null, gw ? gw._h : null, gb ? gb._h : null);
    return [gx, gw, gb];
  });
  mean.dispose();
  rstd.dispose();
  return out;
}
