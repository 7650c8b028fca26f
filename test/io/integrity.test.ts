// Checkpoint integrity (lib/io/checksum.ts, safetensors.ts, checkpoint.ts): the CRC-32 both ways
// agree with zlib; a damaged byte in any tensor's data, in the header or in a checksum is a
// FormatError naming what is damaged; key order and padding do not matter; files without checksums
// (other tools', format 1 checkpoints) still load, while a format 2 checkpoint that lost its checksums
// does not; and bool bytes other than 0 and 1 read as true.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import * as kiln from '../../lib/index';
import { optim } from '../../lib/index';
import { crc32, crc32Slow, headerCrc } from '../../lib/io/checksum';
import {
  disposeCheckpoint, loadSafetensors, readCheckpoint, readSafetensorsHeader, saveCheckpoint, saveSafetensors,
} from '../../lib/io/index';
import { rng } from '../helpers/gradcheck';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-integrity-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = (name: string) => path.join(dir, name);

/** The header of a file's bytes, parsed, and where its data starts. */
function headerOf(buf: Buffer): { h: any; dataStart: number } {
  const n = Number(buf.readBigUInt64LE(0));
  return { h: JSON.parse(buf.subarray(8, 8 + n).toString('utf8')), dataStart: 8 + n };
}

/** A file made of a header object (serialized as given, plus `pad` spaces) and data bytes. */
function build(h: unknown, data: Buffer, pad = 0): Buffer {
  const json = Buffer.from(JSON.stringify(h) + ' '.repeat(pad));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

/** A small checkpoint: two weights, Adam state for both, and JSON state. */
function checkpointBytes(): Buffer {
  kiln.manualSeed(1);
  const w = kiln.randn([4, 3]).requiresGrad_(true), b = kiln.randn([3]).requiresGrad_(true);
  const opt = new optim.Adam([w, b], { lr: 0.01 });
  w.grad = kiln.onesLike(w);
  b.grad = kiln.onesLike(b);
  opt.step();
  saveCheckpoint(file('src.safetensors'), { model: new Map([['w', w], ['b', b]]), optimizer: opt, state: { step: 1 } });
  opt.dispose();
  return fs.readFileSync(file('src.safetensors'));
}

t.test('CRC-32: zlib\'s value, in TypeScript too (for Node releases without zlib.crc32)', async (t) => {
  t.equal(crc32Slow(Buffer.from('123456789')), 0xcbf43926, 'the standard check value');
  const r = rng(5);
  for (const n of [0, 1, 7, 8, 9, 63, 1000, 1 << 20]) {
    const data = Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
    t.equal(crc32Slow(data), zlib.crc32(data), `${n} bytes`);
    t.equal(crc32(data), zlib.crc32(data));
  }
});

t.test('a damaged byte in any tensor\'s data is a FormatError naming that tensor', async (t) => {
  const bytes = checkpointBytes();
  const { h, dataStart } = headerOf(bytes);
  const names = Object.keys(h).filter((k) => k !== '__metadata__');
  t.same(names.sort(), ['b', 'optimizer.state.0.expAvg', 'optimizer.state.0.expAvgSq', 'optimizer.state.1.expAvg', 'optimizer.state.1.expAvgSq', 'w']);
  const live = kiln.memory().tensors;
  for (const name of names) {
    const [begin, end] = h[name].data_offsets;
    for (const at of [begin, end - 1]) {
      const bad = Buffer.from(bytes);
      bad[dataStart + at] ^= 0x10;
      fs.writeFileSync(file('bad.safetensors'), bad);
      t.throws(() => readCheckpoint(file('bad.safetensors')), { name: 'FormatError', message: new RegExp(`tensor '${name.replace(/\./g, '\\.')}': its bytes do not match their checksum`) }, `${name}, byte ${at}`);
      t.equal(kiln.memory().tensors, live, 'nothing left allocated');
    }
  }
  // Only what is read is checked: a filter that skips the damaged tensor reads the rest.
  const bad = Buffer.from(bytes);
  bad[dataStart + h.w.data_offsets[0]] ^= 1;
  fs.writeFileSync(file('bad.safetensors'), bad);
  const some = loadSafetensors(file('bad.safetensors'), { filter: (n) => n === 'b' });
  t.same([...some.tensors.keys()], ['b']);
  kiln.dispose([...some.tensors.values()]);
});

t.test('a damaged header is a FormatError even where the JSON stays valid', async (t) => {
  const bytes = checkpointBytes();
  const text = bytes.toString('latin1');
  const damaged = (what: string, from: string, to: string, message: RegExp) => {
    t.equal(from.length, to.length, `${what}: same length, so only the checksum can tell`);
    const at = text.indexOf(from);
    t.ok(at > 0, `${what}: found`);
    const bad = Buffer.from(bytes);
    bad.write(to, at, 'latin1');
    fs.writeFileSync(file('bad.safetensors'), bad);
    t.throws(() => readCheckpoint(file('bad.safetensors')), { name: 'FormatError', message }, what);
  };
  damaged('the saved step', '{\\"step\\":1}', '{\\"step\\":7}', /the header does not match its checksum/);
  damaged('the learning rate', '\\"lr\\":0.01', '\\"lr\\":0.07', /the header does not match its checksum/);
  damaged('a tensor\'s shape', '"shape":[4,3]', '"shape":[3,4]', /the header does not match its checksum/);
  damaged('a tensor\'s name', '"w":{', '"v":{', /no crc for tensor 'v'/);
  const { h } = headerOf(bytes);
  const wCrc = JSON.parse(h.__metadata__['kiln.crc32']).tensors.w;
  damaged('a tensor\'s checksum', `\\"w\\":\\"${wCrc}\\"`, `\\"w\\":\\"${wCrc.slice(0, 7)}${wCrc[7] === '0' ? '1' : '0'}\\"`, /tensor 'w': its bytes do not match/);
  damaged('the checksums\' form', `\\"w\\":\\"${wCrc}\\"`, `\\"w\\":\\"${wCrc.slice(0, 7)}G\\"`, /the crc of tensor 'w' is "[0-9a-f]{7}G", not 8 lowercase hex digits/);
  damaged('the checksum entry\'s name', '"kiln.crc32"', '"kiln.crc33"', /'kiln.checkpoint\/2' checkpoint without its 'kiln.crc32' checksums/);
  damaged('the format entry\'s name', '"kiln.format"', '"kiln.furmat"', /the header does not match its checksum/);
});

t.test('key order, padding and other writers\' layouts do not matter; files without checksums load', async (t) => {
  const bytes = checkpointBytes();
  const { h, dataStart } = headerOf(bytes);
  const data = bytes.subarray(dataStart);
  // Reversed key order (metadata last), other whitespace, no padding to 8 bytes: the same header.
  const reordered = Object.fromEntries(Object.entries(h).reverse());
  reordered.__metadata__ = Object.fromEntries(Object.entries(h.__metadata__).reverse());
  fs.writeFileSync(file('reordered.safetensors'), build(reordered, data, 3));
  const c = readCheckpoint(file('reordered.safetensors'));
  t.same(c.state, { step: 1 });
  t.notOk('kiln.crc32' in c.metadata, 'the checksums are not part of the metadata handed back');
  disposeCheckpoint(c);

  // A format 1 checkpoint (older kiln) has no checksums and loads unchecked, damage and all.
  const { 'kiln.crc32': _, ...meta } = h.__metadata__;
  const v1 = build({ ...h, __metadata__: { ...meta, 'kiln.format': 'kiln.checkpoint/1' } }, data);
  v1[v1.length - 1] ^= 0xff;
  fs.writeFileSync(file('v1.safetensors'), v1);
  const old = readCheckpoint(file('v1.safetensors'));
  t.equal(old.optimizer!.state[0].step, 1, 'a format 1 checkpoint loads');
  disposeCheckpoint(old);
  t.equal(loadSafetensors(file('v1.safetensors')).checksummed, false);
  const lost = build({ ...h, __metadata__: meta }, data);
  fs.writeFileSync(file('lost.safetensors'), lost);
  t.throws(() => readCheckpoint(file('lost.safetensors')), /'kiln.checkpoint\/2' checkpoint without its 'kiln.crc32' checksums/);
  const { 'kiln.format': __, ...noFormat } = meta;
  fs.writeFileSync(file('noformat.safetensors'), build({ ...h, __metadata__: noFormat }, data));
  t.throws(() => readCheckpoint(file('noformat.safetensors')), /metadata 'kiln\.optimizer' without 'kiln.format'/);

  // A plain file of kiln's own says it was checked; its metadata comes back as given.
  saveSafetensors(file('plain.safetensors'), { x: kiln.tensor([1, 2]) }, { note: 'n' });
  const plain = loadSafetensors(file('plain.safetensors'));
  t.equal(plain.checksummed, true);
  t.same(plain.metadata, { note: 'n' });
  t.same(readSafetensorsHeader(file('plain.safetensors')).metadata, { note: 'n' });
  kiln.dispose([...plain.tensors.values()]);
  t.throws(() => saveSafetensors(file('plain.safetensors'), { x: kiln.tensor([1]) }, { 'kiln.crc32': '{}' }), /'kiln.crc32' is kiln's own/);
});

t.test('a malformed checksum entry is a FormatError', async (t) => {
  const x = Buffer.from(new Float32Array([1, 2]).buffer);
  const entry = { x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  const xCrc = zlib.crc32(x).toString(16).padStart(8, '0');
  const header = headerCrc([['x', { dtype: 'F32', shape: [2], dataOffsets: [0, 8] }]], {});
  const cases: Array<[string, string, RegExp]> = [
    ['not JSON', '{', /not valid JSON/],
    ['an array', '[]', /expected \{"header": crc, "tensors"/],
    ['a short crc', JSON.stringify({ header, tensors: { x: xCrc.slice(1) } }), /the crc of tensor 'x'/],
    ['upper case', JSON.stringify({ header, tensors: { x: xCrc.toUpperCase() } }), /the crc of tensor 'x'/],
    ['a tensor without one', JSON.stringify({ header, tensors: {} }), /no crc for tensor 'x'/],
    ['one for no tensor', JSON.stringify({ header, tensors: { x: xCrc, y: xCrc } }), /a crc for tensor 'y', which the file does not have/],
    ['a wrong header crc', JSON.stringify({ header: header === '00000000' ? '00000001' : '00000000', tensors: { x: xCrc } }), /the header does not match its checksum/],
  ];
  for (const [what, value, message] of cases) {
    fs.writeFileSync(file('sums.safetensors'), build({ __metadata__: { 'kiln.crc32': value }, ...entry }, x));
    t.throws(() => loadSafetensors(file('sums.safetensors')), { name: 'FormatError', message }, what);
  }
  fs.writeFileSync(file('sums.safetensors'), build({ __metadata__: { 'kiln.crc32': JSON.stringify({ header, tensors: { x: xCrc } }) }, ...entry }, x));
  const ok = loadSafetensors(file('sums.safetensors'));
  t.same(ok.tensors.get('x')!.toArray(), [1, 2], 'the hand-made checksums are the ones kiln computes');
  kiln.dispose([...ok.tensors.values()]);
});

t.test('bool bytes other than 0 and 1 read as true (1)', async (t) => {
  const data = Buffer.from([2, 0, 1, 255]);
  fs.writeFileSync(file('bool.safetensors'), build({ m: { dtype: 'BOOL', shape: [4], data_offsets: [0, 4] } }, data));
  const { tensors } = loadSafetensors(file('bool.safetensors'));
  const m = tensors.get('m')!;
  t.same(m.toArray(), [true, false, true, true]);
  t.equal(m.sum().item(), 3, 'sum counts the true entries');
  t.same(m.eq(1).toArray(), [true, false, true, true], 'every true entry equals true');
  t.same(m.eq(kiln.tensor([true, true, true, true])).toArray(), [true, false, true, true]);
  kiln.dispose([...tensors.values()]);
  // With checksums, the crc is of the bytes as stored.
  const entries: Array<[string, { dtype: string; shape: number[]; dataOffsets: [number, number] }]> = [['m', { dtype: 'BOOL', shape: [4], dataOffsets: [0, 4] }]];
  const sums = JSON.stringify({ header: headerCrc(entries, {}), tensors: { m: zlib.crc32(data).toString(16).padStart(8, '0') } });
  fs.writeFileSync(file('bool.safetensors'), build({ __metadata__: { 'kiln.crc32': sums }, m: { dtype: 'BOOL', shape: [4], data_offsets: [0, 4] } }, data));
  const checked = loadSafetensors(file('bool.safetensors'));
  t.equal(checked.tensors.get('m')!.sum().item(), 3);
  kiln.dispose([...checked.tensors.values()]);
});
