// The fuzz loop of fuzz.test.ts, run in a child process so that a crash or a hang fails the test
// with the case that caused it instead of taking tap down. From a seed it damages four valid files in
// thousands of ways (truncations, appended bytes, bogus header lengths, bit flips and byte changes
// in the header and the data, byte insertions, and structural edits: bad dtypes, shapes, offsets,
// huge numbers, duplicate names, overlapping ranges, bad metadata, bad checksums, bad optimizer
// state), loads each, and checks the outcome against what the case must give:
//   - a structurally bad file: a FormatError;
//   - a file whose meaning did not change (other key order or whitespace): the original content;
//   - a file carrying kiln's checksums whose meaning changed: a FormatError, wherever the damage is;
//   - a file without checksums: what an independent reading of the safetensors rules (reference()
//     below) says: a FormatError when they are broken, else the bytes the header points at;
//   - a checkpoint whose optimizer state is invalid: an error of kiln's from loadStateDict.
// Any other error class, or anything left allocated, is a failure too. Prints "case <n>" before each
// case (the parent names the case a crash happened in) and one final line "result <json>".
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { isDeepStrictEqual } from 'util';
import * as zlib from 'zlib';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { KilnError } from '../../lib/errors';
import { headerCrc } from '../../lib/io/checksum';
import { disposeCheckpoint, loadSafetensors, readCheckpoint, saveCheckpoint, saveSafetensors } from '../../lib/io/index';

const seed = Number(process.argv[2] ?? 1);
const randomPerBase = Number(process.argv[3] ?? 700);

// mulberry32: small, fast and deterministic.
let s = seed >>> 0;
function rand(): number {
  s = (s + 0x6d2b79f5) >>> 0;
  let x = s;
  x = Math.imul(x ^ (x >>> 15), x | 1);
  x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
  return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
}
const randInt = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[randInt(xs.length)];

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-fuzz-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'case.safetensors');

// ---- the safetensors rules, read independently of lib/io ----

const ITEM: Record<string, number> = { F32: 4, F64: 8, BF16: 2, F16: 2, I32: 4, I64: 8, BOOL: 1 };
const KILN_DTYPE: Record<string, string> = { F32: 'float32', F64: 'float64', BF16: 'bfloat16', F16: 'float16', I32: 'int32', I64: 'int64', BOOL: 'bool' };
const isObj = (v: unknown): v is Record<string, any> => v !== null && typeof v === 'object' && !Array.isArray(v);
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

interface RefTensor { dtype: string; shape: number[]; bytes: Buffer }
interface Ref { header: Record<string, any>; tensors: Map<string, RefTensor>; metadata: Record<string, string>; data: Buffer }

/** The file as the safetensors rules read it, or null where they reject it. */
function reference(buf: Buffer): Ref | null {
  if (buf.length < 8) return null;
  const n = buf.readBigUInt64LE(0);
  if (n > 100_000_000n || n > BigInt(buf.length - 8)) return null;
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, 8 + Number(n))));
  } catch {
    return null;
  }
  if (!isObj(header)) return null;
  const data = buf.subarray(8 + Number(n));
  const tensors = new Map<string, RefTensor>();
  const spans: Array<[number, number]> = [];
  let metadata: Record<string, string> = {};
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObj(e) || !Object.values(e).every((v) => typeof v === 'string')) return null;
      metadata = e;
      continue;
    }
    if (!isObj(e) || typeof e.dtype !== 'string' || !Object.hasOwn(ITEM, e.dtype) || !Array.isArray(e.shape) || !e.shape.every(isCount)) return null;
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every(isCount) || off[0] > off[1]) return null;
    let numel = 1;
    for (const d of e.shape) if (!Number.isSafeInteger((numel *= d))) return null;
    if (off[1] - off[0] !== numel * ITEM[e.dtype]) return null;
    spans.push([off[0], off[1]]);
    tensors.set(name, { dtype: e.dtype, shape: e.shape, bytes: data.subarray(off[0], off[1]) });
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let end = 0;
  for (const [b, e] of spans) {
    if (b !== end) return null;
    end = e;
  }
  return end === data.length ? { header, tensors, metadata, data } : null;
}

// ---- the four files everything starts from ----

interface Base { name: string; bytes: Buffer; ref: Ref; checksummed: boolean; checkpoint: boolean }

/** Header text as given, for what JSON.stringify cannot write (duplicate keys). */
class Text {
  constructor(readonly text: string) {}
}

/** Values JSON.stringify cannot write (1e400, 2^64, -0) travel as placeholders: RAW(raw, '1e400'). */
const RAW = (raw: string[], text: string) => `\u0000${raw.push(text) - 1}`;
function serialize(v: unknown, raw: string[]): string {
  let text = v instanceof Text ? v.text : JSON.stringify(v);
  raw.forEach((r, i) => (text = text.split(JSON.stringify(`\u0000${i}`)).join(r)));
  return text;
}

function build(header: unknown, data: Buffer, raw: string[] = []): Buffer {
  const text = serialize(header, raw);
  const json = Buffer.from(text, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

function makeBase(name: string, bytes: Buffer, checkpoint: boolean): Base {
  const ref = reference(bytes);
  if (!ref) throw new Error(`base file ${name} is not valid`);
  return { name, bytes, ref, checkpoint, checksummed: Object.hasOwn(ref.metadata, 'kiln.crc32') };
}

function bases(): Base[] {
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => randInt(256)));
  // Another writer's file: no metadata, no padding, keys out of order, a bool byte of 2.
  const foreign = build({
    h: { dtype: 'BF16', shape: [4], data_offsets: [24, 32] },
    a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] },
    m: { dtype: 'BOOL', shape: [3], data_offsets: [32, 35] },
    i: { dtype: 'I64', shape: [2], data_offsets: [35, 51] },
    z: { dtype: 'F64', shape: [0, 5], data_offsets: [51, 51] },
    s: { dtype: 'F16', shape: [], data_offsets: [51, 53] },
  }, Buffer.concat([Buffer.from(new Float32Array([1, -2, 3.5, 0, 7, 8]).buffer), bytes(8), Buffer.from([2, 0, 1]), bytes(16), bytes(2)]));

  kiln.manualSeed(seed);
  saveSafetensors(file, {
    x: kiln.randn([3, 2]), mask: kiln.tensor([true, false, true, true, false]), empty: kiln.zeros([0]), n: kiln.tensor([5, -6], { dtype: 'int32' }),
  }, { note: 'fuzz' });
  const plain = fs.readFileSync(file);

  const [w, b] = [kiln.randn([3, 4]).requiresGrad_(true), kiln.randn([3]).requiresGrad_(true)];
  const opt = new kiln.optim.Adam([w, b], { lr: 0.01, amsgrad: true });
  w.grad = kiln.randn([3, 4]);
  b.grad = kiln.randn([3]);
  opt.step();
  saveCheckpoint(file, { model: new Map([['w', w], ['b', b], ['tied', w]]), optimizer: opt, state: { step: 1, schedule: { warmup: 10 } } });
  const ckpt = fs.readFileSync(file);
  opt.dispose();
  kiln.dispose([w, b]);

  // The same checkpoint as format 1 (before checksums) wrote it.
  const ref = reference(ckpt)!;
  const { 'kiln.crc32': _, ...meta } = ref.metadata;
  const legacy = build({ ...ref.header, __metadata__: { ...meta, 'kiln.format': 'kiln.checkpoint/1' } }, ref.data);
  return [makeBase('foreign', foreign, false), makeBase('plain', plain, false), makeBase('checkpoint', ckpt, true), makeBase('legacy', legacy, true)];
}

// ---- cases ----

type Expect = 'oracle' | 'bad' | 'same' | 'bad-state';
/** signed: the checksums were recomputed after the damage, as if the file had been written so. */
interface Case { base: Base; kind: string; bytes: Buffer; expect: Expect; signed: boolean }

/**
 * Recomputes the checksum entry after an edit (the data is unchanged, so the tensors keep their crcs),
 * so that the checks behind the checksums are what must catch the edit.
 */
function resign(h: Record<string, any>): void {
  const meta = h.__metadata__;
  if (!isObj(meta) || typeof meta['kiln.crc32'] !== 'string') return;
  const old = JSON.parse(meta['kiln.crc32']).tensors;
  const entries = Object.entries(h).filter(([k]) => k !== '__metadata__');
  const tensors = Object.fromEntries(entries.map(([k]) => [k, old[k] ?? '00000000']));
  const layout = entries.map(([k, e]): [string, any] => [k, { dtype: e?.dtype, shape: e?.shape, dataOffsets: e?.data_offsets }]);
  meta['kiln.crc32'] = JSON.stringify({ header: headerCrc(layout, meta), tensors });
}

function byteCases(base: Base, n: number): Case[] {
  const out: Case[] = [];
  const buf = base.bytes;
  const dataStart = buf.length - base.ref.data.length;
  const hlen = Number(buf.readBigUInt64LE(0));
  const add = (kind: string, bytes: Buffer) => out.push({ base, kind, bytes, expect: 'oracle', signed: false });
  const special = [0x00, 0x20, 0x09, 0x0a, 0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x2d, 0x30, 0x39, 0x65, 0x2e, 0x80, 0xc0, 0xff];
  for (let i = 0; i < n; i++) {
    const b = Buffer.from(buf);
    const op = randInt(10);
    if (op === 0) {
      add('truncated', buf.subarray(0, randInt(buf.length)));
    } else if (op === 1) {
      add('bytes appended', Buffer.concat([buf, Buffer.from(Array.from({ length: 1 + randInt(64) }, () => randInt(256)))]));
    } else if (op === 2) {
      const len = pick([0n, 1n, 7n, BigInt(hlen - 1), BigInt(hlen + 1), BigInt(hlen + 8), BigInt(buf.length - 8), BigInt(buf.length),
        2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, BigInt(randInt(buf.length)), BigInt(Math.floor(rand() * 2 ** 52)) * 4096n]);
      b.writeBigUInt64LE(len, 0);
      add('header length', b);
    } else if (op === 3 || op === 4) {
      const at = 8 + randInt(hlen);
      if (op === 3) b[at] ^= 1 << randInt(8);
      else b[at] = rand() < 0.5 ? pick(special) : randInt(256);
      add(op === 3 ? 'header bit flip' : 'header byte changed', b);
    } else if ((op === 5 || op === 6) && base.ref.data.length) {
      const at = dataStart + randInt(base.ref.data.length);
      if (op === 5) b[at] ^= 1 << randInt(8);
      else b[at] = (b[at] + 1 + randInt(255)) & 0xff;
      add(op === 5 ? 'data bit flip' : 'data byte changed', b);
    } else if (op === 7) {
      for (let k = 2 + randInt(7); k > 0; k--) b[randInt(b.length)] ^= 1 << randInt(8);
      add('several bit flips', b);
    } else if (op === 8) {
      const at = 8 + randInt(hlen);
      add(rand() < 0.5 ? 'header byte removed' : 'header byte inserted', rand() < 0.5
        ? Buffer.concat([buf.subarray(0, at), buf.subarray(at + 1)])
        : Buffer.concat([buf.subarray(0, at), Buffer.from([pick(special)]), buf.subarray(at)]));
    } else {
      // The bytes of one length field copied over another spot of the header (huge digits, zeros).
      const at = 8 + randInt(Math.max(1, hlen - 8));
      buf.copy(b, at, 0, Math.min(8, hlen - (at - 8)));
      add('header overwritten', b);
    }
  }
  return out;
}

/** Structural edits of the parsed header, each with what it must give. */
function editCases(base: Base): Case[] {
  const out: Case[] = [];
  const names = [...base.ref.tensors.keys()];
  const edit: Edit = (kind, expect, fn, signed = base.checksummed) => {
    const h = structuredClone(base.ref.header);
    const raw: string[] = [];
    const replaced = fn(h, raw);
    const header = replaced === undefined ? h : replaced;
    if (signed && isObj(header)) resign(header);
    out.push({ base, kind, expect, signed, bytes: build(header, base.ref.data, raw) });
  };
  /** The header with `name: entry` once more at its end, where JSON.parse keeps the later one. */
  const duplicated = (h: Record<string, any>, name: string, entry: unknown) => new Text(`${JSON.stringify(h).slice(0, -1)},${JSON.stringify(name)}:${JSON.stringify(entry)}}`);
  for (const name of names) {
    const e = base.ref.tensors.get(name)!;
    const bytes = e.bytes.length;
    for (const dtype of ['F8_E4M3', 'U8', 'I16', 'f32', '', 42, null, ['F32']]) edit(`${name}: dtype ${JSON.stringify(dtype)}`, 'bad', (h) => void (h[name].dtype = dtype));
    const other = Object.keys(ITEM).find((d) => d !== e.dtype && ITEM[d] === ITEM[e.dtype]);
    if (other) edit(`${name}: dtype ${other}, same size`, 'oracle', (h) => void (h[name].dtype = other));
    const shapes: unknown[] = [[-1], [1.5], [bytes + 1], 'x', [[2]], null, [2 ** 53], [2 ** 40, 2 ** 40, 0]];
    for (const shape of shapes) edit(`${name}: shape ${JSON.stringify(shape)}`, 'bad', (h) => void (h[name].shape = shape));
    edit(`${name}: shape 1e400`, 'bad', (h, raw) => void (h[name].shape = [RAW(raw, '1e400')]));
    edit(`${name}: shape reversed`, 'oracle', (h) => void (h[name].shape = [...h[name].shape].reverse()));
    const [b0, b1] = (base.ref.header[name] as any).data_offsets;
    const offsets: unknown[] = [[b1, b0 - 1], [b0, b1, b1], [b0], [b0 + 1, b1 + 1], [b0 + 1e9, b1 + 1e9], [-1, b1], 'x', null, [b0, b1 + 1]];
    for (const off of offsets) edit(`${name}: data_offsets ${JSON.stringify(off)}`, 'bad', (h) => void (h[name].data_offsets = off));
    edit(`${name}: data_offsets past 2^64`, 'bad', (h, raw) => void (h[name].data_offsets = [b0, RAW(raw, '18446744073709551617')]));
    if (b0 === 0) edit(`${name}: data_offsets -0`, 'oracle', (h, raw) => void (h[name].data_offsets = [RAW(raw, '-0'), b1]), false);
    edit(`${name}: entry removed`, bytes ? 'bad' : 'oracle', (h) => void delete h[name]);
    edit(`${name}: entry not an object`, 'bad', (h) => void (h[name] = [h[name]]));
    const twin = names.find((n) => n !== name && (base.ref.header[n] as any).data_offsets[1] - (base.ref.header[n] as any).data_offsets[0] === bytes && bytes > 0);
    if (twin) edit(`${name}: the range of ${twin} (overlap)`, 'bad', (h) => void (h[name].data_offsets = [...h[twin].data_offsets]));
    // Duplicate names: JSON.parse keeps the last; a different last entry leaves a gap.
    edit(`${name}: duplicated, same entry`, 'same', (h) => duplicated(h, name, h[name]), false);
    if (bytes) edit(`${name}: duplicated, other offsets`, 'bad', (h) => duplicated(h, name, { ...h[name], data_offsets: [b1 + 8, b1 + 8 + bytes] }), false);
  }
  edit('an extra tensor past the end', 'bad', (h) => void (h.extra = { dtype: 'F32', shape: [1], data_offsets: [base.ref.data.length, base.ref.data.length + 4] }));
  for (const header of [[], 'x', 3, null, true]) edit(`header ${JSON.stringify(header)}`, 'bad', () => header);
  for (const meta of [[], 'x', { a: 1 }, { a: null }, { a: {} }, { a: ['x'] }]) edit(`__metadata__ ${JSON.stringify(meta)}`, 'bad', (h) => void (h.__metadata__ = meta));
  edit('keys reversed', 'same', (h) => Object.fromEntries(Object.entries(h).reverse()), false);
  if (base.checksummed) {
    const sums = JSON.parse(base.ref.metadata['kiln.crc32']);
    const bad = ['{', '[]', '{}', JSON.stringify({ ...sums, header: 'zzzzzzzz' }), JSON.stringify({ ...sums, tensors: {} }),
      JSON.stringify({ ...sums, tensors: { ...sums.tensors, ghost: '00000000' } }), JSON.stringify({ ...sums, tensors: { ...sums.tensors, [names[0]]: '0000000' } })];
    for (const v of bad) edit(`kiln.crc32 ${v.slice(0, 40)}`, 'bad', (h) => void (h.__metadata__['kiln.crc32'] = v), false);
    edit('kiln.crc32 removed', base.checkpoint ? 'bad' : 'oracle', (h) => void delete h.__metadata__['kiln.crc32'], false);
    edit('a tensor crc changed', 'bad', (h) => {
      const t = { ...sums.tensors };
      t[names[0]] = t[names[0]] === 'ffffffff' ? '00000000' : 'ffffffff';
      h.__metadata__['kiln.crc32'] = JSON.stringify({ ...sums, tensors: t });
    }, false);
  }
  if (base.checkpoint) checkpointEdits(base, edit);
  return out;
}

type Edit = (kind: string, expect: Expect, fn: (h: Record<string, any>, raw: string[]) => unknown, signed?: boolean) => void;

/** Damage to a checkpoint's own metadata: the format, state, aliases and optimizer state. */
function checkpointEdits(base: Base, edit: Edit): void {
  const meta = (h: Record<string, any>, key: string, v: string) => void (h.__metadata__[key] = v);
  for (const v of ['kiln.checkpoint/9', '', 'x']) edit(`kiln.format ${JSON.stringify(v)}`, 'bad', (h) => meta(h, 'kiln.format', v));
  for (const v of ['{step:', '[]', '3', 'null']) edit(`kiln.state ${v}`, 'bad', (h) => meta(h, 'kiln.state', v));
  for (const v of ['{', '[]', '{"tied": "nope"}', '{"w": "b"}', '{"tied": 3}']) edit(`kiln.aliases ${v}`, 'bad', (h) => meta(h, 'kiln.aliases', v));
  const opt = JSON.parse(base.ref.metadata['kiln.optimizer']);
  // An edit of the optimizer metadata; raw values go in as placeholders like the header's.
  const optEdit = (kind: string, expect: Expect, fn: (o: any, raw: string[]) => unknown) => edit(`kiln.optimizer: ${kind}`, expect, (h) => {
    const o = structuredClone(opt);
    const raw: string[] = [];
    const replaced = fn(o, raw);
    h.__metadata__['kiln.optimizer'] = serialize(replaced === undefined ? o : replaced, raw);
  });
  for (const v of [[], 'x', null, { paramGroups: [] }]) optEdit(`replaced by ${JSON.stringify(v)}`, 'bad', () => v);
  optEdit('paramGroups not an array', 'bad', (o) => void (o.paramGroups = {}));
  optEdit('params not indices', 'bad', (o) => void (o.paramGroups[0].params = ['a']));
  optEdit('state key not an index', 'bad', (o) => void (o.state.x = o.state[0]));
  optEdit('state numbers not numbers', 'bad', (o) => void (o.state[0].numbers.step = '1'));
  optEdit('a tensor the file lacks', 'bad', (o) => void o.state[0].tensors.push('momentumBuffer'));
  optEdit('a tensor of no parameter', 'bad', (o) => void (o.state[0].tensors = o.state[0].tensors.slice(1)));
  // Valid files whose optimizer state is not: loadStateDict must refuse them.
  const group = (k: string, v: unknown) => optEdit(`${k} ${JSON.stringify(v)}`, 'bad-state', (o) => void (o.paramGroups[0][k] = v));
  for (const v of [-1, 'x', null, true]) group('lr', v);
  optEdit('lr 1e400', 'bad-state', (o, raw) => void (o.paramGroups[0].lr = RAW(raw, '1e400')));
  for (const v of [-1e-8, '1e-8']) group('eps', v);
  for (const v of [[0.9, 1], [0.9], 0.9, [-0.1, 0.99]]) group('betas', v);
  for (const v of [-0.01]) group('weightDecay', v);
  for (const v of ['true', 1, null]) group('amsgrad', v);
  for (const v of ['false', 0]) group('maximize', v);
  optEdit('amsgrad off, running maximum kept', 'bad-state', (o) => void (o.paramGroups[0].amsgrad = false));
  optEdit('no step', 'bad-state', (o) => void delete o.state[0].numbers.step);
  for (const v of [-3, 1.5]) optEdit(`step ${v}`, 'bad-state', (o) => void (o.state[0].numbers.step = v));
  optEdit('step 1e400', 'bad-state', (o, raw) => void (o.state[0].numbers.step = RAW(raw, '1e400')));
  optEdit('an entry Adam does not keep', 'bad-state', (o) => void (o.state[0].numbers.foo = 1));
  optEdit('parameter listed twice', 'bad-state', (o) => void (o.paramGroups[0].params = [0, 0]));
  optEdit('state for a parameter no group lists', 'bad-state', (o) => void (o.state[7] = { numbers: {}, tensors: [] }));
  // Moments the header gives another dtype or shape (same bytes, so the file itself is fine).
  edit('a moment stored as int32', 'bad-state', (h) => void (h['optimizer.state.0.expAvg'].dtype = 'I32'));
  edit('a moment of another shape', 'bad-state', (h) => void (h['optimizer.state.0.expAvg'].shape = [4, 3]));
  edit('a moment flattened', 'bad-state', (h) => void (h['optimizer.state.0.expAvgSq'].shape = [12]));
}

// ---- loading and judging ----

const bytesOf = (t: Tensor) => Buffer.from(t._bytes('fuzz'));
const normalized = (e: RefTensor) => (e.dtype === 'BOOL' ? Buffer.from(e.bytes.map((x) => (x ? 1 : 0))) : e.bytes);

/** Tensors read back against the reference's: same names, dtypes, shapes and bytes. */
function sameTensors(got: Map<string, Tensor>, want: Map<string, RefTensor>): string | null {
  if (got.size !== want.size) return `${got.size} tensors, expected ${want.size}`;
  for (const [name, e] of want) {
    const t = got.get(name);
    if (!t) return `tensor '${name}' missing`;
    if (t.dtype !== KILN_DTYPE[e.dtype] || !isDeepStrictEqual([...t.shape], e.shape) || !bytesOf(t).equals(normalized(e))) return `tensor '${name}' differs`;
  }
  return null;
}

/** Everything a checkpoint read gives, as one comparable value. */
function checkpointDigest(c: ReturnType<typeof readCheckpoint>): unknown {
  const tensors = (m: Iterable<[string, unknown]>) => [...m].sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => [k, v instanceof kiln.Tensor ? [v.dtype, v.shape, zlib.crc32(bytesOf(v))] : v]);
  const opt = c.optimizer && { groups: c.optimizer.paramGroups, state: Object.entries(c.optimizer.state).map(([i, s]) => [i, tensors(Object.entries(s))]) };
  return { weights: tensors(c.weights), opt, state: c.state, metadata: c.metadata };
}

const params = [kiln.zeros([3, 4]).requiresGrad_(true), kiln.zeros([3]).requiresGrad_(true)];
const optimizer = new kiln.optim.Adam(params, { amsgrad: true });

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

function attempt(fn: () => unknown): Outcome {
  try {
    return { ok: true, value: fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

const errorName = (o: Outcome) => (o.ok ? 'success' : o.error instanceof KilnError ? o.error.code : `untyped ${String((o.error as Error)?.stack ?? o.error)}`);

/** What the file's meaning is, for a case the oracle decides: 'same', 'bad' or the reference reading. */
function judge(c: Case): Expect | Ref {
  const ref = reference(c.bytes);
  if (!c.base.checksummed || c.signed) return ref ?? 'bad';
  // Compared as JSON, where -0 is 0.
  const json = (v: unknown) => JSON.parse(JSON.stringify(v));
  if (ref && isDeepStrictEqual(json(ref.header), json(c.base.ref.header)) && ref.data.equals(c.base.ref.data)) return 'same';
  // Damage that renamed the checksum entry of a plain file leaves a file without checksums, which
  // nothing can tell from one that never had them; a checkpoint must have them.
  if (ref && !c.base.checkpoint && !Object.hasOwn(ref.metadata, 'kiln.crc32')) return ref;
  return 'bad';
}

const originals = new Map<Base, unknown>();

/** Loads a case that must give `want`; returns why it failed, or null. */
function run(c: Case, want: Expect | Ref): string | null {
  fs.writeFileSync(file, c.bytes);
  if (!c.base.checkpoint) {
    const got = attempt(() => loadSafetensors(file));
    const fail = (() => {
      if (!got.ok) return want === 'bad' ? (errorName(got) === 'FormatError' ? null : `expected a FormatError, got ${errorName(got)}`) : `expected success, got ${errorName(got)}: ${(got.error as Error).message}`;
      if (want === 'bad' || want === 'bad-state') return 'expected a FormatError, got success';
      const { tensors, metadata } = got.value as ReturnType<typeof loadSafetensors>;
      const ref = want === 'same' ? c.base.ref : want;
      const { 'kiln.crc32': _, ...refMeta } = ref.metadata;
      return sameTensors(tensors, ref.tensors) ?? (isDeepStrictEqual(metadata, refMeta) ? null : 'metadata differs');
    })();
    if (got.ok) kiln.dispose([...(got.value as ReturnType<typeof loadSafetensors>).tensors.values()]);
    return fail;
  }
  const got = attempt(() => readCheckpoint(file));
  if (!got.ok) {
    // The reference knows the safetensors rules only: kiln's own metadata may still be refused.
    if (errorName(got) === 'FormatError' && (want === 'bad' || typeof want === 'object')) return null;
    return `expected ${typeof want === 'object' ? 'success' : want}, got ${errorName(got)}${got.error instanceof Error ? `: ${got.error.message}` : ''}`;
  }
  const ckpt = got.value as ReturnType<typeof readCheckpoint>;
  try {
    if (want === 'bad') return 'expected a FormatError, got success';
    if (want === 'same' && !isDeepStrictEqual(checkpointDigest(ckpt), originals.get(c.base))) return 'read back different content';
    if (typeof want === 'object') {
      for (const [name, t] of ckpt.weights) {
        const e = want.tensors.get(name);
        if (e && !bytesOf(t).equals(normalized(e))) return `weight '${name}' differs from the file`;
      }
    }
    if (!ckpt.optimizer) return want === 'bad-state' ? 'expected an optimizer state' : null;
    const loaded = attempt(() => optimizer.loadStateDict(ckpt.optimizer!));
    if (want === 'bad-state') return !loaded.ok && loaded.error instanceof KilnError ? null : `expected loadStateDict to refuse the state, got ${errorName(loaded)}`;
    if (want === 'same' && !loaded.ok) return `the optimizer refused the original state: ${errorName(loaded)}`;
    return loaded.ok || loaded.error instanceof KilnError ? null : `loadStateDict: ${errorName(loaded)}`;
  } finally {
    disposeCheckpoint(ckpt);
  }
}

const all = bases();
for (const b of all) {
  if (!b.checkpoint) continue;
  fs.writeFileSync(file, b.bytes);
  const c = readCheckpoint(file);
  originals.set(b, checkpointDigest(c));
  disposeCheckpoint(c);
}
const cases = all.flatMap((b) => [...editCases(b), ...byteCases(b, randomPerBase)]);
const live = kiln.memory().tensors;
const failures: string[] = [];
const counts: Record<string, number> = {};
const started = performance.now();
cases.forEach((c, i) => {
  fs.writeSync(1, `case ${i} ${c.base.name}: ${c.kind}\n`);
  const want = c.expect === 'oracle' ? judge(c) : c.expect;
  const why = run(c, want);
  const label = typeof want === 'object' ? 'valid' : want;
  counts[label] = (counts[label] ?? 0) + 1;
  if (why) failures.push(`case ${i} (${c.base.name}: ${c.kind}): ${why}`);
});
const seconds = (performance.now() - started) / 1000;
optimizer.dispose();
if (kiln.memory().tensors !== live) failures.push(`${kiln.memory().tensors - live} tensors left allocated`);
fs.writeSync(1, `result ${JSON.stringify({ cases: cases.length, seconds, counts, failures: failures.slice(0, 50), failed: failures.length })}\n`);
