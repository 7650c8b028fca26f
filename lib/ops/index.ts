// Indexing ops: embedding, gather, indexSelect, scatterAdd (to be implemented).
import type { Tensor } from '../tensor';

function todo(op: string): never {
  throw new Error(`${op}: not implemented yet`);
}

export function embedding(indices: Tensor, weight: Tensor): Tensor { return todo('embedding'); }
export function gather(x: Tensor, dim: number, index: Tensor): Tensor { return todo('gather'); }
export function indexSelect(x: Tensor, dim: number, index: Tensor): Tensor { return todo('indexSelect'); }
export function scatterAdd(x: Tensor, dim: number, index: Tensor, src: Tensor): Tensor { return todo('scatterAdd'); }
