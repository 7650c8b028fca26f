// Elementwise ops with NumPy broadcasting and scalars (to be implemented).
import type { Tensor, TensorOrScalar } from '../tensor';

function todo(op: string): never {
  throw new Error(`${op}: not implemented yet`);
}

export function add(a: TensorOrScalar, b: TensorOrScalar, alpha?: number): Tensor { return todo('add'); }
export function sub(a: TensorOrScalar, b: TensorOrScalar, alpha?: number): Tensor { return todo('sub'); }
export function mul(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('mul'); }
export function div(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('div'); }
export function pow(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('pow'); }
export function maximum(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('maximum'); }
export function minimum(a: TensorOrScalar, b: TensorOrScalar): Tensor { return todo('minimum'); }
export function neg(x: Tensor): Tensor { return todo('neg'); }
export function exp(x: Tensor): Tensor { return todo('exp'); }
export function log(x: Tensor): Tensor { return todo('log'); }
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
