// Layer normalization with fused forward and backward kernels (to be implemented).
import type { Tensor } from '../tensor';

function todo(op: string): never {
  throw new Error(`${op}: not implemented yet`);
}

export function layerNorm(x: Tensor, normalizedShape: number | readonly number[], weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor { return todo('layerNorm'); }
