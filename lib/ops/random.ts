// Seeded random numbers (counter-based) and dropout (to be implemented).
import type { Tensor } from '../tensor';
import type { TensorOptions } from './creation';

function todo(op: string): never {
  throw new Error(`${op}: not implemented yet`);
}

export function manualSeed(seed: number): void { todo('manualSeed'); }
export function rand(shape: readonly number[], opts: TensorOptions = {}): Tensor { return todo('rand'); }
export function randn(shape: readonly number[], opts: TensorOptions = {}): Tensor { return todo('randn'); }
export function randint(low: number, high: number, shape: readonly number[], opts: TensorOptions = {}): Tensor { return todo('randint'); }
export function randLike(t: Tensor, opts: TensorOptions = {}): Tensor { return todo('randLike'); }
export function randnLike(t: Tensor, opts: TensorOptions = {}): Tensor { return todo('randnLike'); }
export function randintLike(t: Tensor, low: number, high: number, opts: TensorOptions = {}): Tensor { return todo('randintLike'); }
export function dropout(x: Tensor, p = 0.5, training = true): Tensor { return todo('dropout'); }
