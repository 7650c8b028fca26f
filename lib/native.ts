// Loads the compiled addon (build/Release/kiln.node, from cmake-js or node-gyp) and explains what was
// tried when it does not load.
import * as path from 'path';
import * as fs from 'fs';
import type { DType } from './dtype';

/**
 * A handle to a native tensor view: a number into the addon's handle table (see
 * native/binding/common.cc); only kiln's own modules create and read them.
 */
export type NativeHandle = number & { readonly __kilnHandle: unique symbol };

/** The core functions every build exports (op families declare their own slices). */
export interface NativeCore {
  empty(shape: number[], dtype: number, device: number): NativeHandle;
  fromBytes(bytes: ArrayBufferView | ArrayBuffer, shape: number[], dtype: number, device: number): NativeHandle;
  /** Copies the elements, row-major in the tensor's dtype, into out (exactly their size). */
  readBytes(h: NativeHandle, out: ArrayBuffer): void;
  view(h: NativeHandle, shape: number[], strides: number[], offset: number): NativeHandle;
  alias(h: NativeHandle): NativeHandle;
  dispose(h: NativeHandle): void;
  isDisposed(h: NativeHandle): boolean;
  copy(src: NativeHandle, dst: NativeHandle): void;
  fill(dst: NativeHandle, value: number): void;
  sameStorage(a: NativeHandle, b: NativeHandle): boolean;
  /** Writes to a storage so far (views share it); in-place ops bump it, autograd compares it. */
  version(h: NativeHandle): number;
  bumpVersion(h: NativeHandle): void;
  memoryStats(): { tensors: number; storages: number; bytes: number; peakBytes: number; cachedBytes: number };
  emptyCache(): void;
  resetPeakMemory(): void;
  buildInfo(): { openmp: boolean; blas: string; cuda: boolean; threads: number; simd: 'avx2' | 'baseline' };
  setNumThreads(n: number): void;
  setErrorFactory(f: (code: number, op: string, message: string) => Error): void;
  /** Every op-family kernel: its signature (native/binding/op_table.h) and the dtypes each backend takes. */
  kernels(): Record<string, { signature: string; cpu: DType[]; cuda: DType[] }>;
}

// OpenMP worker threads that spin after each parallel region starve OpenBLAS's own threads (and
// everything else on a busy machine): an sgemm right after an elementwise kernel ran several times
// slower. Sleeping workers cost a few microseconds per region instead. libgomp reads this when the
// addon loads; a user's own setting wins.
process.env.OMP_WAIT_POLICY ??= 'passive';

// require() gives the addon untyped; it is typed twice below, never cast.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function load(): any {
  const root = path.join(__dirname, '..');
  const candidates = [
    process.env.KILN_NATIVE_PATH,
    path.join(root, 'build', 'Release', 'kiln.node'),
    path.join(root, 'build', 'Debug', 'kiln.node'),
  ].filter((p): p is string => !!p);
  const failures: string[] = [];
  for (const file of candidates) {
    if (!fs.existsSync(file)) {
      failures.push(`  ${file}: not found`);
      continue;
    }
    try {
      return require(file);
    } catch (e) {
      failures.push(`  ${file}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  throw new Error(
    'kiln: could not load the native addon. Tried:\n' +
      failures.join('\n') +
      '\nBuild it with `npm run build:native` (needs cmake or python3+make, and g++). ' +
      'A CUDA build needs the CUDA libraries at run time; rebuild with KILN_CUDA=OFF to run on the CPU only. ' +
      'Set KILN_NATIVE_PATH to load a kiln.node from elsewhere.',
  );
}

const addon = load();

/** The loaded addon's core functions (tensor storage, memory, build facts). */
export const native: NativeCore = addon;

/**
 * The addon's exports by name, for lib/ops/dispatch.ts's bindKernels, which checks each kernel's
 * signature before typing it.
 */
export const nativeExports: Readonly<Record<string, unknown>> = addon;

/** Every op-family kernel's signature and dtypes per backend (read by lib/ops/dispatch.ts). */
export const nativeKernels: Readonly<ReturnType<NativeCore['kernels']>> = native.kernels();
