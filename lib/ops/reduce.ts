// Reductions along any dims with keepdim (to be implemented).
import type { Tensor } from '../tensor';

function todo(op: string): never {
  throw new Error(`${op}: not implemented yet`);
}

export type DimArg = number | readonly number[];
export function sum(x: Tensor, dim?: DimArg, keepdim = false): Tensor { return todo('sum'); }
export function mean(x: Tensor, dim?: DimArg, keepdim = false): Tensor { return todo('mean'); }
export function max(x: Tensor, dim?: DimArg, keepdim = false): Tensor { return todo('max'); }
export function min(x: Tensor, dim?: DimArg, keepdim = false): Tensor { return todo('min'); }
export function argmax(x: Tensor, dim?: number, keepdim = false): Tensor { return todo('argmax'); }
export function argmin(x: Tensor, dim?: number, keepdim = false): Tensor { return todo('argmin'); }
export function variance(x: Tensor, dim?: DimArg, opts: { correction?: number; keepdim?: boolean } = {}): Tensor { return todo('var'); }
export function std(x: Tensor, dim?: DimArg, opts: { correction?: number; keepdim?: boolean } = {}): Tensor { return todo('std'); }
export function logsumexp(x: Tensor, dim: DimArg, keepdim = false): Tensor { return todo('logsumexp'); }
export function all(x: Tensor, dim?: DimArg, keepdim = false): Tensor { return todo('all'); }
export function any(x: Tensor, dim?: DimArg, keepdim = false): Tensor { return todo('any'); }
/** Sums a broadcast gradient back down to shape (the backward of broadcasting). */
export function sumToShape(x: Tensor, shape: readonly number[]): Tensor { return todo('sumToShape'); }
