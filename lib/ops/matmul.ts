// Matrix products (to be implemented).
import type { Tensor } from '../tensor';

function todo(op: string): never {
  throw new Error(`${op}: not implemented yet`);
}

export function matmul(a: Tensor, b: Tensor): Tensor { return todo('matmul'); }
/** x @ weight^T + bias, like torch.nn.functional.linear. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor { return todo('linear'); }
