// Softmax, log-softmax and cross-entropy fused with log-softmax (to be implemented).
import type { Tensor } from '../tensor';

function todo(op: string): never {
  throw new Error(`${op}: not implemented yet`);
}

export interface CrossEntropyOptions {
  ignoreIndex?: number;
  labelSmoothing?: number;
  reduction?: 'mean' | 'sum' | 'none';
}
export function softmax(x: Tensor, dim = -1): Tensor { return todo('softmax'); }
export function logSoftmax(x: Tensor, dim = -1): Tensor { return todo('logSoftmax'); }
export function crossEntropy(logits: Tensor, target: Tensor, opts: CrossEntropyOptions = {}): Tensor { return todo('crossEntropy'); }
