// Element types: names, native codes, sizes, type promotion and the TypedArrays that hold them.
import { DTypeError } from './errors';

/**
 * Element types. On the CPU, bfloat16 and float16 are computed in float32 by elementwise, reduction and
 * matmul kernels; softmax and layerNorm take float32 or float64 there.
 */
export type DType = 'float32' | 'float64' | 'bfloat16' | 'float16' | 'int32' | 'int64' | 'bool';

/** Codes shared with native/core/dtype.h. */
export const DTYPE_CODE: Record<DType, number> = {
  float32: 0, float64: 1, bfloat16: 2, float16: 3, int32: 4, int64: 5, bool: 6,
};
export const DTYPES: readonly DType[] = ['float32', 'float64', 'bfloat16', 'float16', 'int32', 'int64', 'bool'];

export const ITEMSIZE: Record<DType, number> = {
  float32: 4, float64: 8, bfloat16: 2, float16: 2, int32: 4, int64: 8, bool: 1,
};

export function isFloating(d: DType): boolean {
  return d === 'float32' || d === 'float64' || d === 'bfloat16' || d === 'float16';
}
export function isIntegral(d: DType): boolean {
  return d === 'int32' || d === 'int64';
}

export function checkDType(op: string, d: unknown): DType {
  if (typeof d !== 'string' || !(d in DTYPE_CODE)) {
    throw new DTypeError(op, `unknown dtype ${JSON.stringify(d)}; expected one of ${DTYPES.join(', ')}`);
  }
  return d as DType;
}

const RANK: Record<DType, number> = { bool: 0, int32: 1, int64: 2, float16: 3, bfloat16: 3, float32: 4, float64: 5 };

/** PyTorch's promotion of two tensor dtypes: bool < int32 < int64 < float16/bfloat16 < float32 < float64. */
export function promoteTypes(a: DType, b: DType): DType {
  if (a === b) return a;
  if ((a === 'bfloat16' && b === 'float16') || (a === 'float16' && b === 'bfloat16')) return 'float32';
  return RANK[a] >= RANK[b] ? a : b;
}

/** The dtype of an op between a tensor and a JavaScript number (a number does not widen floats). */
export function promoteWithScalar(t: DType, s: number | boolean): DType {
  if (typeof s === 'boolean') return t;
  if (isFloating(t)) return t;
  if (Number.isInteger(s)) return t === 'bool' ? 'int64' : t;
  return 'float32';
}

export type TypedArrayFor<D extends DType> = D extends 'float32'
  ? Float32Array
  : D extends 'float64'
    ? Float64Array
    : D extends 'int32'
      ? Int32Array
      : D extends 'int64'
        ? BigInt64Array
        : D extends 'bool'
          ? Uint8Array
          : Uint16Array;

/** Any flat array kiln reads data from. */
export type DataArray = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Uint16Array;
