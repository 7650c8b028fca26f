// The one path every op takes to native code. bindKernels gives an op family typed functions for its
// native kernels, checked at load against the signatures the addon reports (native/binding/op_table.h);
// defineOp wraps an op's forward with its argument checks and the dtype policy: autocast's choice of
// compute dtype, and float32 compute where a backend has no kernel for a half dtype (the addon says
// which dtypes each kernel takes). withDType is the one cast helper; fillOutputs frees outputs on throw;
// withKernelMarks hooks every kernel call for kernel profiling.
import { autocastFor } from '../autocast';
import { DType, isFloating } from '../dtype';
import { DTypeError } from '../errors';
import { NativeHandle, native, nativeExports, nativeKernels } from '../native';
import { Tensor } from '../tensor';
import { to } from './creation';

// Signature codes (op_table.h's Codec and Result) and the TypeScript types they cross as.
interface ArgTypes {
  T: NativeHandle;
  'T?': NativeHandle | null;
  'T[]': NativeHandle[];
  i: number;
  f: number;
  b: boolean;
  s: number[];
  d: number;
  e: number;
  u64: bigint;
}
interface ResultTypes {
  void: void;
  u64: bigint;
  f: number;
  b: boolean;
}
type ParseArg<A extends string> = A extends `${string}:${infer C}` ? (C extends keyof ArgTypes ? ArgTypes[C] : never) : never;
type ParseArgs<S extends string> = S extends ''
  ? []
  : S extends `${infer A}, ${infer Rest}`
    ? [ParseArg<A>, ...ParseArgs<Rest>]
    : [ParseArg<S>];
/** @internal The function type of a native kernel signature such as "(x:T, eps:f) -> void". */
export type KernelFn<S extends string> = S extends `(${infer Args}) -> ${infer R}`
  ? R extends keyof ResultTypes
    ? (...args: ParseArgs<Args>) => ResultTypes[R]
    : never
  : never;

// Read once when lib/native.ts loads: op files bind their kernels while modules are still loading
// (circular imports reach here first), so the table must not wait on this module's own body.
function kernels() {
  return nativeKernels;
}

/**
 * @internal Typed functions for a family's native kernels. Each signature must equal what the addon
 * reports for that kernel (an addon built from other sources fails here, at load, not mid-training).
 */
export function bindKernels<const S extends Record<string, string>>(family: string, spec: S): { [K in keyof S]: KernelFn<S[K]> } {
  const table = kernels();
  const bound: Record<string, unknown> = {};
  for (const [name, sig] of Object.entries(spec)) {
    const k = table[name];
    const fn = nativeExports[name];
    if (!k || typeof fn !== 'function') throw new Error(`kiln: the native addon lacks the ${family} kernel '${name}'; rebuild it (npm run build:native)`);
    if (k.signature !== sig) {
      throw new Error(`kiln: the native ${family} kernel '${name}' takes ${k.signature} but lib/ops expects ${sig}; rebuild the addon (npm run build:native)`);
    }
    bound[name] = fn;
  }
  profiled.push({ family, table: bound, names: Object.keys(spec) });
  return bound as { [K in keyof S]: KernelFn<S[K]> };
}

// Every table of native functions that enqueue device work (each family's kernels, and the core's
// copy and fill), for kernel profiling: withKernelMarks swaps them for marking wrappers.
const profiled: Array<{ family: string; table: Record<string, unknown>; names: string[] }> = [
  { family: 'copy', table: native as unknown as Record<string, unknown>, names: ['copy', 'fill'] },
];

// Kernels whose first argument is an op code, and the enum table that names the codes: profiles
// tell unary:exp from unary:gelu_tanh.
const CODE_TABLES: Record<string, string> = { unary: 'unaryOps', binary: 'binaryOps', reduce: 'reduceOps' };

function codeNames(kernel: string): Map<number, string> | null {
  const table = nativeExports[CODE_TABLES[kernel] ?? ''];
  if (typeof table !== 'object' || table === null) return null;
  return new Map(Object.entries(table).map(([name, code]) => [code as number, name]));
}

/**
 * @internal Runs fn with mark(family, kernel) called before every native kernel call (lib/cuda.ts's
 * profileKernels records a timing event there); kernel is the kernel's name, with the op's name for
 * the code-taking elementwise and reduce kernels ('unary:exp'). The plain functions come back when
 * fn returns or throws.
 */
export function withKernelMarks<T>(mark: (family: string, kernel: string) => void, fn: () => T): T {
  const saved = profiled.map(({ table, names }) => names.map((n) => table[n]));
  profiled.forEach(({ family, table, names }, i) =>
    names.forEach((name, j) => {
      const call = saved[i][j] as (...args: unknown[]) => unknown;
      const codes = codeNames(name);
      table[name] = (...args: unknown[]) => {
        mark(family, codes ? `${name}:${codes.get(args[0] as number) ?? args[0]}` : name);
        return call(...args);
      };
    }),
  );
  try {
    return fn();
  } finally {
    profiled.forEach(({ table, names }, i) => names.forEach((name, j) => (table[name] = saved[i][j])));
  }
}

/**
 * @internal Looks up native op codes by name in an enum table the addon exports (op_table.h's
 * export_enum); a name the addon lacks means it was built from other sources.
 */
export function opCodes<K extends string>(table: string, names: readonly K[]): Record<K, number> {
  const codes = nativeExports[table];
  if (typeof codes !== 'object' || codes === null) throw new Error(`kiln: the native addon lacks the op table '${table}'; rebuild it (npm run build:native)`);
  const byName = new Map(Object.entries(codes));
  const out = {} as Record<K, number>;
  for (const n of names) {
    const code = byName.get(n);
    if (typeof code !== 'number') throw new Error(`kiln: the native addon lacks op '${n}' in ${table}; rebuild it (npm run build:native)`);
    out[n] = code;
  }
  return out;
}

/** @internal The dtypes a native kernel takes on a device (-1 is the CPU). */
export function kernelDTypes(name: string, dev: number): readonly DType[] {
  const k = kernels()[name];
  if (!k) throw new Error(`kiln: the native addon lacks kernel '${name}'; rebuild it (npm run build:native)`);
  return dev === -1 ? k.cpu : k.cuda;
}

/** @internal Runs a native call that fills freshly allocated outputs; disposes them if it throws. */
export function fillOutputs(outputs: Tensor[], call: () => void): void {
  try {
    call();
  } catch (e) {
    for (const t of outputs) t.dispose();
    throw e;
  }
}

/**
 * @internal Runs f on the tensors converted to dtype (differentiably; null stays null); disposes the
 * converted copies after. The one place ops change their inputs' dtype.
 */
export function withDType<T, A extends Tensor | null | undefined>(dtype: DType, ts: readonly A[], f: (cs: A[]) => T): T {
  if (ts.every((t) => !t || t.dtype === dtype)) return f([...ts]);
  const cs = ts.map((t) => (t && t.dtype !== dtype ? (to(t, dtype, t.device) as A) : t));
  try {
    return f(cs);
  } finally {
    cs.forEach((c, i) => c !== ts[i] && c!.dispose());
  }
}

/**
 * How autocast treats an op (torch.autocast's lists): 'lowPrecision' ops (matmul, linear, attention's
 * products) compute in the autocast dtype; 'float32' ops (softmax, norms, losses, reductions) in
 * float32; 'none' ops follow their inputs.
 */
export type AutocastCategory = 'lowPrecision' | 'float32' | 'none';

/** @internal What defineOp needs to know about an op. */
export interface OpDef<A extends unknown[]> {
  /** The op's name, as errors give it. */
  name: string;
  /** Positions of the floating-point tensor arguments the dtype policy converts (all to one dtype). */
  inputs: readonly number[];
  /** The native kernels forward and backward call: a dtype none of them takes computes in float32. */
  kernels: readonly string[];
  /** The op's autocast list (default 'none'). */
  autocast?: AutocastCategory;
  /**
   * For a 'float32' op whose kernels compute in float32 whatever their input: under autocast a
   * bfloat16/float16 input the backend's kernels take goes in as it is, not widened first (forward
   * then writes float32 results itself), saving the widened copy.
   */
  autocastKeepsHalf?: boolean;
  /** Argument checks, run on the arguments the op will compute with (after autocast's casts). */
  check?: (...args: A) => void;
  /** The forward: native calls and recordOp; it runs with the compute dtype settled. */
  forward: (...args: A) => Tensor;
}

const HALF: readonly DType[] = ['bfloat16', 'float16'];

/**
 * @internal Wraps an op's forward in the dtype and device policy: under autocast its floating inputs
 * are cast to the dtype its category computes in; then its checks run; where the backend has no kernel
 * for a half dtype it computes in float32 and the result is cast back.
 */
export function defineOp<A extends unknown[]>(def: OpDef<A>): (...args: A) => Tensor {
  const category = def.autocast ?? 'none';
  // Casts the floating inputs only: an integer operand stays as it is, so its dtype error (or its
  // meaning, for an index) is the op's to report under autocast as without it. Autocast leaves
  // float64 alone too, as torch.autocast does.
  const castArgs = (args: A, dtype: DType, f: (args: A) => Tensor, keepFloat64 = false): Tensor => {
    const eligible = (t: Tensor) => isFloating(t.dtype) && !(keepFloat64 && t.dtype === 'float64');
    const at = def.inputs.filter((i) => args[i] instanceof Tensor && eligible(args[i] as Tensor));
    return withDType(dtype, at.map((i) => args[i] as Tensor), (cs) => {
      const next = [...args] as A;
      at.forEach((i, k) => (next[i] = cs[k]));
      return f(next);
    });
  };
  // The first tensor among the inputs: its dtype and device decide the policy.
  const leadOf = (args: A): Tensor | null => {
    for (const i of def.inputs) if (args[i] instanceof Tensor) return args[i] as Tensor;
    return null;
  };
  // The dtypes every kernel of the op takes, per backend (read once: the addon's table is fixed).
  const covered: Array<ReadonlySet<DType> | undefined> = [];
  const takes = (dev: number): ReadonlySet<DType> => {
    const backend = dev === -1 ? 0 : 1;
    return (covered[backend] ??= new Set(kernelDTypes(def.kernels[0], dev).filter((d) => def.kernels.every((k) => kernelDTypes(k, dev).includes(d)))));
  };
  const run = (args: A): Tensor => {
    def.check?.(...args);
    const lead = leadOf(args);
    if (!lead) return def.forward(...args);
    const dtype = lead.dtype;
    const ok = takes(lead._dev);
    if (ok.has(dtype)) return def.forward(...args);
    if (!HALF.includes(dtype) || !ok.has('float32')) {
      throw new DTypeError(def.name, `has no ${lead.device} kernel for ${dtype} (it takes ${[...ok].join(', ')})`);
    }
    const out = castArgs(args, 'float32', (wide) => def.forward(...wide));
    // Only a result computed in float32 goes back: comparisons, argmax and the like keep bool / int64.
    if (out.dtype !== 'float32') return out;
    const back = to(out, dtype, out.device);
    if (back !== out) out.dispose();
    return back;
  };
  return (...args: A): Tensor => {
    const lead = leadOf(args);
    const ac = category === 'none' || !lead || !isFloating(lead.dtype) ? null : autocastFor(lead._dev);
    if (!ac || !lead) return run(args);
    if (def.autocastKeepsHalf && HALF.includes(lead.dtype) && takes(lead._dev).has(lead.dtype)) return run(args);
    const target: DType = category === 'lowPrecision' ? ac.dtype : 'float32';
    return castArgs(args, target, run, true);
  };
}
