// Training checkpoints in the safetensors layout, so that PyTorch and Hugging Face tools read the
// weights directly (safetensors.torch.load_file). One file holds:
//   - the model's weights under their state-dict names (a tied weight is stored once; the other
//     names are listed in the metadata, as Hugging Face files leave out tied heads);
//   - the optimizer's per-parameter tensors as `optimizer.state.<index>.<key>`;
//   - in __metadata__: "format": "pt" (what transformers checks), "kiln.format", and JSON strings for
//     the aliases, the optimizer's groups and scalar state, and the caller's own state (step,
//     scheduler, data position, random generator, model config, ...), and the checksums that
//     saveSafetensors adds (format 2; format 1 checkpoints, without them, are still read).
// Reading validates the file (safetensors.ts, checksums included) and then every piece of the
// metadata: a malformed checkpoint is a FormatError and leaves nothing allocated. Reading also
// removes the temporary files that killed writers left in the checkpoint's folder (atomic.ts), as
// resuming after a kill is when they are found.
import { dirname, resolve } from 'path';
import { FormatError, ValueError } from '../errors';
import type { Module } from '../nn/module';
import type { Optimizer, OptimizerStateDict, ParamState } from '../optim/optimizer';
import { Tensor } from '../tensor';
import { removeOrphanedTemps } from './atomic';
import { CHECKSUM_KEY } from './checksum';
import { loadSafetensors, saveSafetensors } from './safetensors';

/** Format 2 adds the checksums, which a format 2 file must carry so that losing them is noticed. */
const FORMAT = 'kiln.checkpoint/2';
const FORMAT_V1 = 'kiln.checkpoint/1';
const OPT_PREFIX = 'optimizer.state.';

/** What a checkpoint saves. */
export interface CheckpointContents {
  /** The weights: a module (its stateDict()) or tensors by name. */
  model: Module | Map<string, Tensor>;
  /** The optimizer whose state (moments, step counts, group options) to save. */
  optimizer?: Optimizer<any> | null;
  /** Anything JSON-serializable: step, scheduler and data-loader state, generator state, config. */
  state?: Record<string, unknown>;
}

/** A checkpoint read back. The tensors are new: dispose them with disposeCheckpoint(). */
export interface Checkpoint {
  /** Model weights by name, tied names included (sharing one tensor). */
  weights: Map<string, Tensor>;
  /** The optimizer's state dict, or null when none was saved. */
  optimizer: OptimizerStateDict | null;
  /** The caller's state ({} when none was saved, or for a plain safetensors weights file). */
  state: Record<string, unknown>;
  /** The raw __metadata__ strings, less the checksums (verified already). */
  metadata: Record<string, string>;
}

/** True when a and b view the same elements of the same storage (tied weights). */
function sameView(a: Tensor, b: Tensor): boolean {
  return (
    a.dtype === b.dtype && a.offset === b.offset && a.shape.length === b.shape.length &&
    a.shape.every((d, i) => d === b.shape[i] && a.strides[i] === b.strides[i]) && a._sharesStorage(b)
  );
}

/** Saves weights, optimizer state and JSON state to one safetensors file, atomically. */
export function saveCheckpoint(path: string, c: CheckpointContents): void {
  const op = 'saveCheckpoint';
  const isMap = c.model instanceof Map;
  const sd = isMap ? (c.model as Map<string, Tensor>) : (c.model as Module).stateDict();
  try {
    const tensors = new Map<string, Tensor>();
    const aliases: Record<string, string> = {};
    const stored: Array<[string, Tensor]> = [];
    for (const [name, t] of sd) {
      if (name.startsWith(OPT_PREFIX)) throw new ValueError(op, `weight name '${name}' collides with the optimizer's '${OPT_PREFIX}' prefix`);
      const twin = stored.find(([, s]) => sameView(s, t));
      if (twin) {
        aliases[name] = twin[0];
      } else {
        stored.push([name, t]);
        tensors.set(name, t);
      }
    }
    const metadata: Record<string, string> = { format: 'pt', 'kiln.format': FORMAT };
    if (Object.keys(aliases).length) metadata['kiln.aliases'] = JSON.stringify(aliases);
    if (c.optimizer) {
      const osd = c.optimizer.stateDict();
      const state: Record<string, { numbers: Record<string, number>; tensors: string[] }> = {};
      for (const [idx, s] of Object.entries(osd.state)) {
        const entry = (state[idx] = { numbers: {} as Record<string, number>, tensors: [] as string[] });
        for (const [k, v] of Object.entries(s)) {
          if (v instanceof Tensor) {
            entry.tensors.push(k);
            tensors.set(`${OPT_PREFIX}${idx}.${k}`, v);
          } else {
            entry.numbers[k] = v;
          }
        }
      }
      metadata['kiln.optimizer'] = JSON.stringify({ paramGroups: osd.paramGroups, state });
    }
    if (c.state) metadata['kiln.state'] = JSON.stringify(c.state);
    saveSafetensors(path, tensors, metadata);
  } finally {
    if (!isMap) for (const t of sd.values()) t.dispose();
  }
}

function parseJSON(path: string, key: string, text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FormatError('readCheckpoint', `${path}: metadata '${key}' is not valid JSON (${(e as Error).message})`);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Rebuilds the optimizer state dict from its metadata and the optimizer.state.* tensors (which it takes). */
function optimizerState(path: string, meta: unknown, tensors: Map<string, Tensor>): OptimizerStateDict {
  const bad = (what: string) => new FormatError('readCheckpoint', `${path}: optimizer state: ${what}`);
  if (!isObject(meta) || !Array.isArray(meta.paramGroups) || !isObject(meta.state)) throw bad('expected {paramGroups, state}');
  const paramGroups = meta.paramGroups.map((g, i) => {
    if (!isObject(g) || !Array.isArray(g.params) || !g.params.every((p) => Number.isSafeInteger(p) && p >= 0)) {
      throw bad(`group ${i} must be an object with params, an array of parameter indices`);
    }
    return g as OptimizerStateDict['paramGroups'][number];
  });
  const used = new Set<string>();
  const state: Record<number, ParamState> = {};
  for (const [idx, entry] of Object.entries(meta.state)) {
    if (!/^(0|[1-9][0-9]*)$/.test(idx)) throw bad(`state key '${idx}' is not a parameter index`);
    if (!isObject(entry) || !isObject(entry.numbers) || !Array.isArray(entry.tensors)) throw bad(`state ${idx} must be {numbers, tensors}`);
    const s: ParamState = {};
    for (const [k, v] of Object.entries(entry.numbers)) {
      if (typeof v !== 'number') throw bad(`state ${idx}.${k} must be a number`);
      s[k] = v;
    }
    for (const k of entry.tensors) {
      const name = `${OPT_PREFIX}${idx}.${String(k)}`;
      const t = tensors.get(name);
      if (typeof k !== 'string' || !t) throw bad(`tensor '${name}' is missing from the file`);
      s[k] = t;
      used.add(name);
    }
    state[Number(idx)] = s;
  }
  for (const name of tensors.keys()) if (name.startsWith(OPT_PREFIX) && !used.has(name)) throw bad(`tensor '${name}' belongs to no parameter`);
  return { state, paramGroups };
}

/**
 * Reads a checkpoint written by saveCheckpoint (or a plain safetensors weights file: then there is no
 * optimizer and no state). Tensors land on opts.device (default cpu). Dispose the result with
 * disposeCheckpoint().
 */
export function readCheckpoint(path: string, opts: { device?: string } = {}): Checkpoint {
  removeOrphanedTemps(dirname(resolve(path)));
  const { tensors, metadata, checksummed } = loadSafetensors(path, { device: opts.device });
  try {
    const fmt = metadata['kiln.format'];
    const kilnKey = Object.keys(metadata).find((k) => k.startsWith('kiln.'));
    if (fmt === undefined && kilnKey !== undefined) {
      throw new FormatError('readCheckpoint', `${path}: metadata '${kilnKey}' without 'kiln.format' (was that entry damaged?)`);
    }
    if (fmt !== undefined && fmt !== FORMAT && fmt !== FORMAT_V1) {
      throw new FormatError('readCheckpoint', `${path}: unsupported checkpoint format '${fmt}' (this kiln reads '${FORMAT_V1}' and '${FORMAT}')`);
    }
    if (fmt === FORMAT && !checksummed) throw new FormatError('readCheckpoint', `${path}: a '${FORMAT}' checkpoint without its '${CHECKSUM_KEY}' checksums (was the entry damaged?)`);
    const weights = new Map<string, Tensor>();
    for (const [name, t] of tensors) if (!name.startsWith(OPT_PREFIX)) weights.set(name, t);
    const aliases = parseJSON(path, 'kiln.aliases', metadata['kiln.aliases']);
    if (aliases !== undefined) {
      if (!isObject(aliases)) throw new FormatError('readCheckpoint', `${path}: kiln.aliases must map names to names`);
      for (const [name, target] of Object.entries(aliases)) {
        const t = typeof target === 'string' ? weights.get(target) : undefined;
        if (!t || weights.has(name)) throw new FormatError('readCheckpoint', `${path}: alias '${name}' -> ${JSON.stringify(target)} names no stored weight or shadows one`);
        weights.set(name, t);
      }
    }
    const optMeta = parseJSON(path, 'kiln.optimizer', metadata['kiln.optimizer']);
    const optimizer = optMeta === undefined ? null : optimizerState(path, optMeta, tensors);
    if (!optimizer && [...tensors.keys()].some((n) => n.startsWith(OPT_PREFIX))) {
      throw new FormatError('readCheckpoint', `${path}: optimizer tensors without the optimizer's metadata`);
    }
    const saved = parseJSON(path, 'kiln.state', metadata['kiln.state']);
    const state = saved === undefined ? {} : saved;
    if (!isObject(state)) throw new FormatError('readCheckpoint', `${path}: kiln.state must be a JSON object`);
    return { weights, optimizer, state, metadata };
  } catch (e) {
    for (const t of tensors.values()) t.dispose();
    throw e;
  }
}

/** Frees the tensors of a checkpoint read with readCheckpoint(). */
export function disposeCheckpoint(c: Checkpoint): void {
  for (const t of c.weights.values()) t.dispose();
  for (const s of Object.values(c.optimizer?.state ?? {})) for (const v of Object.values(s)) if (v instanceof Tensor) v.dispose();
}

/**
 * Restores a checkpoint into a model (strict: same names and shapes) and, when given, an optimizer,
 * and returns the saved state for the caller (scheduler, data, step, ...). The file's tensors are
 * freed once copied.
 */
export function loadCheckpoint(path: string, into: { model?: Module; optimizer?: Optimizer<any> | null; strict?: boolean }): Record<string, unknown> {
  const device = into.model?.parameters()[0]?.device;
  const c = readCheckpoint(path, { device });
  try {
    if (into.optimizer && !c.optimizer) throw new FormatError('loadCheckpoint', `${path} holds no optimizer state`);
    into.model?.loadStateDict(c.weights, { strict: into.strict ?? true });
    if (into.optimizer) into.optimizer.loadStateDict(c.optimizer!);
    return c.state;
  } finally {
    disposeCheckpoint(c);
  }
}
