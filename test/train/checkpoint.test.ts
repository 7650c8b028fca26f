// safetensors and checkpoints (lib/io): round trips of every dtype, the byte layout other tools read,
// a hand-made file as another writer would lay it out, weights + optimizer + state, tied weights
// stored once, atomic replacement, and rejection of truncated or corrupt files with FormatError
// (leaving no tensor allocated).
import t from 'tap';
import * as fs from 'fs';
import * as zlib from 'zlib';
import * as os from 'os';
import * as path from 'path';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { nn, optim } from '../../lib/index';
import {
  disposeCheckpoint, loadCheckpoint, loadSafetensors, readCheckpoint, readSafetensorsHeader, saveCheckpoint, saveSafetensors, writeAtomic,
} from '../../lib/io/index';
import { headerCrc } from '../../lib/io/checksum';
import { values } from '../helpers/gradcheck';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-ckpt-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = (name: string) => path.join(dir, name);

t.test('every dtype, views, scalars and empty tensors round-trip with their metadata', async (t) => {
  const base = kiln.tensor([[1.5, -2, 3], [4, 5.25, -6]]);
  const tensors: Record<string, Tensor> = {
    transposed: base.t(),
    f64: kiln.tensor([1e-300, -2.5], { dtype: 'float64' }),
    bf16: kiln.tensor([1, -0.5, 3.25], { dtype: 'bfloat16' }),
    f16: kiln.tensor([0.1, 65504], { dtype: 'float16' }),
    i32: kiln.tensor([-7, 2 ** 31 - 1], { dtype: 'int32' }),
    i64: kiln.tensor([-(2 ** 40), 3], { dtype: 'int64' }),
    bool: kiln.tensor([true, false, true]),
    scalar: kiln.scalar(2.5),
    empty: kiln.zeros([0, 3]),
  };
  saveSafetensors(file('all.safetensors'), tensors, { note: 'hello', n: '1' });
  const { tensors: back, metadata } = loadSafetensors(file('all.safetensors'));
  t.same(metadata, { note: 'hello', n: '1' });
  t.same([...back.keys()], Object.keys(tensors), 'names in order');
  for (const [name, x] of Object.entries(tensors)) {
    const y = back.get(name)!;
    t.equal(y.dtype, x.dtype, `${name}: dtype`);
    t.same(y.shape, x.shape, `${name}: shape`);
    t.same(y.toArray(), x.toArray(), `${name}: values`);
  }
  kiln.dispose([...back.values()]);
  const only = loadSafetensors(file('all.safetensors'), { filter: (n) => n.startsWith('f') });
  t.same([...only.tensors.keys()], ['f64', 'f16']);
  kiln.dispose([...only.tensors.values()]);
});

t.test('the byte layout: 8-byte little-endian length, padded JSON header, raw data', async (t) => {
  saveSafetensors(file('layout.safetensors'), { w: kiln.tensor([[1.5, -2]]), b: kiln.tensor([7], { dtype: 'int64' }) }, { format: 'pt' });
  const buf = fs.readFileSync(file('layout.safetensors'));
  const n = Number(buf.readBigUInt64LE(0));
  t.equal(n % 8, 0, 'the header is padded to a multiple of 8 bytes');
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const w = Buffer.from(new Float32Array([1.5, -2]).buffer), b = Buffer.from(new BigInt64Array([7n]).buffer);
  const { 'kiln.crc32': sums, ...userMeta } = header.__metadata__;
  t.same({ ...header, __metadata__: userMeta }, {
    __metadata__: { format: 'pt' },
    w: { dtype: 'F32', shape: [1, 2], data_offsets: [0, 8] },
    b: { dtype: 'I64', shape: [1], data_offsets: [8, 16] },
  });
  t.same(buf.subarray(8 + n), Buffer.concat([w, b]));
  // The checksums are a metadata string like any other; each tensor's is zlib's CRC-32 of its bytes.
  const crc = (x: Buffer) => zlib.crc32(x).toString(16).padStart(8, '0');
  t.same(JSON.parse(sums).tensors, { w: crc(w), b: crc(b) }, 'CRC-32 of each tensor\'s bytes');

  // As another writer may lay it out: unpadded header, keys in another order, no metadata.
  const json = Buffer.from(JSON.stringify({ b: { dtype: 'BF16', shape: [2], data_offsets: [4, 8] }, a: { dtype: 'I32', shape: [1], data_offsets: [0, 4] } }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const data = Buffer.from([5, 0, 0, 0, 0x80, 0x3f, 0x00, 0xc0]); // int32 5; bf16 1.0, -2.0
  fs.writeFileSync(file('foreign.safetensors'), Buffer.concat([len, json, data]));
  const { tensors, metadata } = loadSafetensors(file('foreign.safetensors'));
  t.same(metadata, {});
  t.same(tensors.get('a')!.toArray(), [5]);
  t.same(tensors.get('b')!.toArray(), [1, -2]);
  kiln.dispose([...tensors.values()]);
});

function tinyGPT(seed: number): nn.GPT {
  kiln.manualSeed(seed);
  return new nn.GPT({ vocabSize: 13, blockSize: 6, nLayer: 1, nHead: 2, nEmbd: 8 });
}
const batch = () => [kiln.tensor([[1, 2, 3, 4, 5, 6]]), kiln.tensor([[2, 3, 4, 5, 6, 7]])];

function trainStep(m: nn.GPT, opt: optim.Optimizer<any>): number {
  const [x, y] = batch();
  const loss = kiln.tidy(() => {
    const l = m.forward(x, y).loss!;
    l.backward();
    return l.item();
  });
  opt.step();
  opt.zeroGrad();
  kiln.dispose([x, y]);
  return loss;
}

t.test('checkpoints: weights (tied ones stored once), optimizer state and JSON state', async (t) => {
  const m = tinyGPT(0);
  const opt = new optim.AdamW(m.parameters(), { lr: 0.01 });
  trainStep(m, opt);
  trainStep(m, opt);
  const ckpt = file('model.safetensors');
  saveCheckpoint(ckpt, { model: m, optimizer: opt, state: { step: 2, config: m.config } });
  const header = readSafetensorsHeader(ckpt);
  t.ok(header.tensors.has('wte.weight'));
  t.notOk(header.tensors.has('lmHead.weight'), 'the tied head is not stored twice');
  t.same(JSON.parse(header.metadata['kiln.aliases']), { 'lmHead.weight': 'wte.weight' });
  t.equal(header.metadata.format, 'pt', 'the metadata transformers checks');
  t.ok(header.tensors.has('optimizer.state.0.expAvg') && header.tensors.has('optimizer.state.0.expAvgSq'));

  const c = readCheckpoint(ckpt);
  t.same([...c.weights.keys()].sort(), [...m.stateDict().keys()].sort(), 'every state-dict name, alias included');
  t.equal(c.weights.get('lmHead.weight'), c.weights.get('wte.weight'));
  t.same(c.state, { step: 2, config: m.config });
  t.equal(c.optimizer!.state[0].step, 2);
  disposeCheckpoint(c);

  // A fresh model and optimizer loaded from the file take the same next step as the originals.
  const m2 = tinyGPT(7);
  const opt2 = new optim.AdamW(m2.parameters(), { lr: 0.5 });
  const state = loadCheckpoint(ckpt, { model: m2, optimizer: opt2 });
  t.same(state, { step: 2, config: m.config });
  t.equal(opt2.paramGroups[0].lr, 0.01, 'group options restored');
  t.equal(trainStep(m2, opt2), trainStep(m, opt), 'same loss on the next step');
  t.same(values(m2.wte.weight), values(m.wte.weight), 'same weights after it');
  t.equal(m2.lmHead.weight, m2.wte.weight, 'still tied');

  // A plain weights file (no optimizer, no state) reads as weights only; asking for an optimizer fails.
  saveSafetensors(file('weights.safetensors'), new Map([...m.stateDict()].filter(([k]) => k !== 'lmHead.weight')));
  const plain = readCheckpoint(file('weights.safetensors'));
  t.equal(plain.optimizer, null);
  t.same(plain.state, {});
  disposeCheckpoint(plain);
  t.throws(() => loadCheckpoint(file('weights.safetensors'), { model: m2, optimizer: opt2 }), kiln.FormatError);
  const deeper = new nn.GPT({ vocabSize: 13, blockSize: 6, nLayer: 2, nHead: 2, nEmbd: 8 });
  t.throws(() => loadCheckpoint(ckpt, { model: deeper }), kiln.ValueError, 'another architecture: missing keys');
  const wider = new nn.GPT({ vocabSize: 13, blockSize: 6, nLayer: 1, nHead: 2, nEmbd: 16 });
  t.throws(() => loadCheckpoint(ckpt, { model: wider }), kiln.ShapeError, 'another architecture: other shapes');
});

/**
 * The file with its header JSON replaced by edit(header) (data unchanged), and its header checksum
 * recomputed so that the checks behind it are what rejects the edit.
 */
function withHeader(src: Buffer, edit: (h: any) => unknown): Buffer {
  const n = Number(src.readBigUInt64LE(0));
  const h = JSON.parse(src.subarray(8, 8 + n).toString('utf8'));
  const out = edit(h) ?? h;
  const meta = (out as any).__metadata__;
  if (meta?.['kiln.crc32']) {
    const tensors = Object.entries(out as Record<string, any>).filter(([k]) => k !== '__metadata__')
      .map(([k, e]): [string, any] => [k, { dtype: e.dtype, shape: e.shape, dataOffsets: e.data_offsets }]);
    const sums = JSON.parse(meta['kiln.crc32']);
    meta['kiln.crc32'] = JSON.stringify({ ...sums, header: headerCrc(tensors, meta) });
  }
  const json = Buffer.from(JSON.stringify(out));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, src.subarray(8 + n)]);
}

t.test('truncated and corrupt files are rejected with FormatError', async (t) => {
  const m = tinyGPT(3);
  const opt = new optim.AdamW(m.parameters());
  trainStep(m, opt);
  const good = file('good.safetensors');
  saveCheckpoint(good, { model: m, optimizer: opt, state: { step: 1 } });
  const bytes = fs.readFileSync(good);
  const n = Number(bytes.readBigUInt64LE(0));
  const live = kiln.memory().tensors;
  const reject = (name: string, data: Buffer, pattern: RegExp) => {
    const p = file(`bad-${name.replace(/\W+/g, '-')}.safetensors`);
    fs.writeFileSync(p, data);
    t.throws(() => readCheckpoint(p), { name: 'FormatError', message: pattern }, name);
    t.equal(kiln.memory().tensors, live, `${name}: no tensor left behind`);
  };
  for (const cut of [0, 1, 7, 8, 9, 8 + n - 1, 8 + n, 8 + n + 1, bytes.length - 1]) {
    reject(`truncated at ${cut} of ${bytes.length}`, bytes.subarray(0, cut), /too short|truncated|header|ended/);
  }
  const huge = Buffer.from(bytes);
  huge.writeBigUInt64LE(2n ** 60n, 0);
  reject('header length 2^60', huge, /exceeds/);
  const notJson = Buffer.from(bytes);
  notJson.write('{"x": [1, 2', 8);
  reject('not JSON', notJson, /not valid UTF-8 JSON/);
  const badUtf8 = Buffer.from(bytes);
  badUtf8[10] = 0xff;
  reject('invalid UTF-8', badUtf8, /not valid UTF-8 JSON/);
  reject('array header', withHeader(bytes, () => []), /must be a JSON object/);
  const first = (h: any) => Object.keys(h).find((k) => k !== '__metadata__')!;
  reject('unknown dtype', withHeader(bytes, (h) => void (h[first(h)].dtype = 'F8_E4M3')), /unsupported dtype/);
  reject('negative dim', withHeader(bytes, (h) => void (h[first(h)].shape = [-1, 8])), /non-negative integers/);
  reject('fractional dim', withHeader(bytes, (h) => void (h[first(h)].shape = [1.5])), /non-negative integers/);
  reject('shape/length mismatch', withHeader(bytes, (h) => void (h[first(h)].shape = [3])), /needs/);
  reject('three offsets', withHeader(bytes, (h) => void (h[first(h)].data_offsets = [0, 4, 8])), /two integers/);
  reject('offsets reversed', withHeader(bytes, (h) => void (h[first(h)].data_offsets = [8, 0])), /begin <= end/);
  reject('overlap', withHeader(bytes, (h) => {
    const [a, b] = Object.keys(h).filter((k) => k !== '__metadata__');
    h[b] = { ...h[a] };
  }), /overlapping|after the last|truncated/);
  reject('offsets past the end', withHeader(bytes, (h) => {
    const k = first(h);
    const [b, e] = h[k].data_offsets;
    h[k].data_offsets = [b + 1e9, e + 1e9];
  }), /gap|truncated/);
  reject('trailing bytes', Buffer.concat([bytes, Buffer.from([0, 0, 0, 0])]), /bytes after the last tensor/);
  reject('metadata not strings', withHeader(bytes, (h) => void (h.__metadata__.step = 3)), /must be a string/);
  reject('unknown format version', withHeader(bytes, (h) => void (h.__metadata__['kiln.format'] = 'kiln.checkpoint/9')), /unsupported checkpoint format/);
  reject('state not JSON', withHeader(bytes, (h) => void (h.__metadata__['kiln.state'] = '{step:')), /kiln.state' is not valid JSON/);
  reject('optimizer without groups', withHeader(bytes, (h) => void (h.__metadata__['kiln.optimizer'] = '{}')), /expected \{paramGroups, state\}/);
  reject('optimizer tensor missing', withHeader(bytes, (h) => {
    const o = JSON.parse(h.__metadata__['kiln.optimizer']);
    o.state['0'].tensors.push('momentum');
    h.__metadata__['kiln.optimizer'] = JSON.stringify(o);
  }), /optimizer.state.0.momentum' is missing/);
  reject('optimizer tensor of no parameter', withHeader(bytes, (h) => {
    const o = JSON.parse(h.__metadata__['kiln.optimizer']);
    o.state['0'].tensors = ['expAvg'];
    h.__metadata__['kiln.optimizer'] = JSON.stringify(o);
  }), /belongs to no parameter/);
  reject('alias to nothing', withHeader(bytes, (h) => void (h.__metadata__['kiln.aliases'] = '{"lmHead.weight": "nope"}')), /names no stored weight/);
  t.throws(() => loadSafetensors(file('missing.safetensors')), /ENOENT/, 'a missing file is the OS error');
  t.equal(kiln.memory().tensors, live);
});

t.test('optimizer state from a checkpoint is checked as the optimizer loads it', async (t) => {
  const m = tinyGPT(4);
  const opt = new optim.AdamW(m.parameters(), { lr: 0.01 });
  trainStep(m, opt);
  const good = file('opt.safetensors');
  saveCheckpoint(good, { model: m, optimizer: opt, state: { step: 1 } });
  const bytes = fs.readFileSync(good);
  const m2 = tinyGPT(5);
  const opt2 = new optim.AdamW(m2.parameters(), { lr: 0.5 });
  trainStep(m2, opt2);
  const before = opt2.state.get(m2.wte.weight);
  // Valid files (their checksums recomputed) whose optimizer state is not.
  const refuse = (what: string, edit: (o: any) => void, message: RegExp) => {
    const p = file(`opt-${what.replace(/\W+/g, '-')}.safetensors`);
    fs.writeFileSync(p, withHeader(bytes, (h) => {
      const o = JSON.parse(h.__metadata__['kiln.optimizer']);
      edit(o);
      h.__metadata__['kiln.optimizer'] = JSON.stringify(o);
    }));
    t.throws(() => loadCheckpoint(p, { model: m2, optimizer: opt2 }), { message }, what);
    t.equal(opt2.state.get(m2.wte.weight), before, `${what}: the optimizer keeps its state`);
    t.equal(opt2.paramGroups[0].lr, 0.5, `${what}: and its options`);
  };
  refuse('negative lr', (o) => (o.paramGroups[0].lr = -0.01), /AdamW.loadStateDict: group 0 of the state: .*lr must be a finite number >= 0, got -0.01/);
  refuse('eps as a string', (o) => (o.paramGroups[0].eps = '1e-8'), /eps must be a finite number/);
  refuse('amsgrad as a number', (o) => (o.paramGroups[0].amsgrad = 0), /amsgrad must be a boolean/);
  refuse('a state without step', (o) => delete o.state[0].numbers.step, /state of parameter 0 has no 'step'/);
  refuse('a negative step', (o) => (o.state[2].numbers.step = -1), /state 'step' of parameter 2 must be a step count/);
  refuse('a missing moment', (o) => (o.state[1].tensors = ['expAvg']), /belongs to no parameter/);
  opt.dispose();
  opt2.dispose();
});

t.test('writes are atomic: a failed write leaves the old file and no temporary file', async (t) => {
  const p = file('atomic.safetensors');
  saveSafetensors(p, { a: kiln.tensor([1, 2]) });
  const before = fs.readFileSync(p);
  t.throws(() => writeAtomic(p, (fd) => {
    fs.writeSync(fd, 'partial');
    throw new Error('disk full');
  }), /disk full/);
  t.same(fs.readFileSync(p), before, 'the old file is intact');
  const dead = kiln.tensor([3]);
  dead.dispose();
  t.throws(() => saveSafetensors(p, { a: dead }), kiln.DisposedError);
  t.same(fs.readFileSync(p), before);
  t.same(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temporary files left');
  t.throws(() => saveSafetensors(p, { __metadata__: kiln.tensor([1]) }), kiln.ValueError);
  t.throws(() => saveSafetensors(p, { a: kiln.tensor([1]) }, { n: 3 as unknown as string }), kiln.ValueError);
});
