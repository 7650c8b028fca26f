// Token files: write/read round trips (uint16 and uint32), the header layout, positioned window reads,
// streaming tokenization equal to whole-text tokenization, TokenFileDataset windows, batches and
// seeded sampling, and every corrupt or truncated header rejected with a FormatError.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import {
  CharTokenizer, DataLoader, GPT2Tokenizer, TOKEN_FILE_HEADER_BYTES, TokenFile, TokenFileDataset, TokenFileWriter,
  tokenizeFile, writeTokenFile,
} from '../../lib/data/index';
import { safeCut } from '../../lib/data/token_file';
import { rng } from '../helpers/gradcheck';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-tokfile-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = (name: string) => path.join(dir, name);
const tokens = (n: number, vocab: number, seed: number) => {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.floor(r() * vocab));
};

t.test('write and read back, uint16 and uint32; the header is the documented layout', async (t) => {
  for (const [vocab, dtype] of [[50257, 'uint16'], [100_000, 'uint32']] as const) {
    const data = tokens(1000, vocab, vocab);
    const p = file(`rt-${dtype}.tok`);
    writeTokenFile(p, data, { vocabSize: vocab });
    const bytes = fs.readFileSync(p);
    const width = dtype === 'uint16' ? 2 : 4;
    t.equal(bytes.length, TOKEN_FILE_HEADER_BYTES + 1000 * width);
    t.equal(bytes.subarray(0, 8).toString('latin1'), 'KILNTOK\0', 'magic');
    t.equal(bytes.readUInt32LE(8), 1, 'version');
    t.equal(bytes.readUInt32LE(12), width, 'token width');
    t.equal(bytes.readBigUInt64LE(16), 1000n, 'token count');
    t.equal(bytes.readUInt32LE(24), vocab, 'vocabulary size');
    t.equal(bytes.readUInt32LE(28), 0, 'reserved');
    t.equal(width === 2 ? bytes.readUInt16LE(32) : bytes.readUInt32LE(32), data[0], 'tokens follow, little-endian');
    const f = TokenFile.open(p);
    t.match(f, { dtype, count: 1000, vocabSize: vocab, version: 1 });
    t.same([...f.read(0, 1000)], data);
    t.same([...f.read(997, 3)], data.slice(997));
    t.same([...f.read(500, 0)], []);
    const out = new Int32Array(10).fill(-1);
    f.read(10, 4, out, 3);
    t.same([...out], [-1, -1, -1, ...data.slice(10, 14), -1, -1, -1]);
    t.throws(() => f.read(998, 3), kiln.IndexError);
    t.throws(() => f.read(-1, 1), kiln.IndexError);
    t.throws(() => f.read(0, 4, out, 8), kiln.IndexError);
    f.close();
    t.throws(() => f.read(0, 1), kiln.ValueError, 'closed');
  }
});

t.test('the writer streams, counts, and publishes the file only when closed', async (t) => {
  const p = file('stream.tok');
  const w = new TokenFileWriter(p, { vocabSize: 10 });
  w.write([1, 2, 3]);
  w.write(new Uint8Array([4, 5]));
  t.equal(w.count, 5);
  t.notOk(fs.existsSync(p), 'not visible before close');
  t.throws(() => w.write([10]), kiln.ValueError, 'token outside the vocabulary');
  t.throws(() => w.write([1.5]), kiln.ValueError);
  w.close();
  t.notOk(fs.existsSync(`${p}.partial`));
  t.same([...TokenFile.open(p).read(0, 5)], [1, 2, 3, 4, 5]);
  t.throws(() => w.write([1]), kiln.ValueError, 'closed');
  t.throws(() => new TokenFileWriter(file('x.tok'), { vocabSize: 70_000, dtype: 'uint16' }), kiln.ValueError);
  t.throws(() => new TokenFileWriter(file('x.tok'), { vocabSize: 0 }), kiln.ValueError);
  const a = new TokenFileWriter(file('aborted.tok'), { vocabSize: 4 });
  a.write([1]);
  a.abort();
  t.notOk(fs.existsSync(file('aborted.tok')) || fs.existsSync(file('aborted.tok.partial')), 'abort leaves nothing');
});

t.test('corrupt and truncated files are FormatErrors naming the problem', async (t) => {
  const good = file('good.tok');
  writeTokenFile(good, [1, 2, 3, 4], { vocabSize: 5 });
  const base = fs.readFileSync(good);
  const variant = (name: string, edit: (b: Buffer) => Buffer) => {
    const p = file(`bad-${name}.tok`);
    fs.writeFileSync(p, edit(Buffer.from(base)));
    return () => TokenFile.open(p);
  };
  const cases: Array<[string, (b: Buffer) => Buffer, RegExp]> = [
    ['empty', () => Buffer.alloc(0), /shorter than the 32-byte header/],
    ['short header', (b) => b.subarray(0, 20), /shorter than the 32-byte header/],
    ['magic', (b) => (b.write('NOTATOK!', 0, 'latin1'), b), /bad magic/],
    ['version', (b) => (b.writeUInt32LE(2, 8), b), /unsupported version 2/],
    ['width', (b) => (b.writeUInt32LE(3, 12), b), /token width must be 2 \(uint16\) or 4/],
    ['count too large', (b) => (b.writeBigUInt64LE(2n ** 60n, 16), b), /too large/],
    ['truncated', (b) => b.subarray(0, b.length - 1), /truncated: the header promises 4 tokens/],
    ['count beyond the file', (b) => (b.writeBigUInt64LE(5n, 16), b), /truncated/],
    ['trailing bytes', (b) => Buffer.concat([b, Buffer.alloc(2)]), /2 bytes after the 4 tokens/],
    ['vocabulary 0', (b) => (b.writeUInt32LE(0, 24), b), /vocabulary size 0/],
    ['vocabulary too large for uint16', (b) => (b.writeUInt32LE(70_000, 24), b), /vocabulary size 70000/],
    ['reserved', (b) => (b.writeUInt32LE(1, 28), b), /reserved/],
  ];
  for (const [name, edit, msg] of cases) t.throws(variant(name, edit), { name: 'FormatError', message: msg }, name);
  const outOfVocab = variant('token out of vocabulary', (b) => (b.writeUInt16LE(9, 34), b));
  const f = outOfVocab();
  t.same([...f.read(0, 1)], [1], 'other tokens still read');
  t.throws(() => f.read(0, 4), { name: 'FormatError', message: /token 1 is 9, outside the vocabulary of 5/ });
  f.close();
  t.throws(() => TokenFile.open(file('missing.tok')), /ENOENT/);
});

t.test('safeCut finds places where tokenizing in pieces changes nothing', async (t) => {
  t.equal(safeCut('hello world'), 5, 'before a single space between words');
  t.equal(safeCut('line one\nline'), 9, 'after a lone newline');
  t.equal(safeCut('a  b'), -1, 'not inside a run of spaces');
  t.equal(safeCut('a\n\nb'), -1, 'not inside a run of newlines');
  t.equal(safeCut('nospaces'), -1);
});

t.test('tokenizeFile streams text into the same tokens as encoding it whole', async (t) => {
  const r = rng(3);
  const words = ['the', 'cat', 'sat', "it's", '42', 'ünï', '😀', ',', '.', '(x)'];
  const seps = [' ', ' ', ' ', '  ', '\n', '\n\n', ' \n', '\t', ''];
  let text = '';
  for (let i = 0; i < 3000; i++) text += words[Math.floor(r() * words.length)] + seps[Math.floor(r() * seps.length)];
  const src = file('corpus.txt');
  fs.writeFileSync(src, text);
  const gpt2 = new GPT2Tokenizer();
  const out = file('corpus-gpt2.tok');
  const n = await tokenizeFile(src, out, gpt2, { chunkChars: 97, appendToken: gpt2.eotToken });
  const whole = [...gpt2.encode(text), gpt2.eotToken];
  t.equal(n, whole.length);
  const f = TokenFile.open(out);
  t.equal(f.vocabSize, 50257);
  t.equal(f.dtype, 'uint16');
  t.same([...f.read(0, f.count)], whole, 'GPT-2 tokens equal whole-text encoding despite 97-character pieces');
  f.close();
  const chars = CharTokenizer.fromText(text);
  const charOut = file('corpus-char.tok');
  await tokenizeFile(src, charOut, chars, { chunkChars: 64 });
  const cf = TokenFile.open(charOut);
  t.equal(chars.decode(cf.read(0, cf.count)), text, 'character tokens decode back to the text');
  cf.close();
  const noSpace = file('nospace.txt');
  fs.writeFileSync(noSpace, 'x'.repeat(5000));
  t.equal(await tokenizeFile(noSpace, file('nospace.tok'), chars, { chunkChars: 16 }), 5000, 'text without cut points is cut anyway');
  await t.rejects(tokenizeFile(src, file('fail.tok'), CharTokenizer.fromText('abc')), kiln.ValueError);
  t.notOk(fs.existsSync(file('fail.tok')) || fs.existsSync(file('fail.tok.partial')), 'a failed run leaves no file');
});

t.test('TokenFileDataset: shifted windows, batches, strides, seeded sampling', async (t) => {
  const p = file('ds.tok');
  const data = Array.from({ length: 101 }, (_, i) => i % 97);
  writeTokenFile(p, data, { vocabSize: 97 });
  const ds = new TokenFileDataset(p, { blockSize: 10 });
  t.equal(ds.length, 10);
  const [x, y] = ds.get(3);
  t.same(x.shape, [10]);
  t.equal(x.dtype, 'int64');
  t.same(x.toArray(), data.slice(30, 40));
  t.same(y.toArray(), data.slice(31, 41), 'target is input shifted by one');
  t.same(ds.get(9)[1].toArray(), data.slice(91, 101), 'the last window ends at the last token');
  t.throws(() => ds.get(10), kiln.IndexError);
  const [bx, by] = ds.getBatch([0, 5]);
  t.same(bx.toArray(), [data.slice(0, 10), data.slice(50, 60)]);
  t.same(by.toArray(), [data.slice(1, 11), data.slice(51, 61)]);
  const overlapping = new TokenFileDataset(p, { blockSize: 10, stride: 3, dtype: 'int32' });
  t.equal(overlapping.length, Math.floor((101 - 11) / 3) + 1);
  t.equal(overlapping.get(2)[0].dtype, 'int32');
  t.same(overlapping.get(2)[0].toArray(), data.slice(6, 16));

  const loader = new DataLoader(ds, { batchSize: 4, shuffle: true, seed: 5 });
  const batches = [...loader] as Tensor[][];
  t.same(batches.map((b) => b[0].shape), [[4, 10], [4, 10], [2, 10]], 'the loader batches through getBatch');
  const firstRows = batches.flatMap((b) => (b[0].toArray() as number[][]).map((row) => row[0] / 10));
  t.same(firstRows, [...loader.order(0)], 'in the shuffled order');

  const a = new TokenFileDataset(p, { blockSize: 8, seed: 1 }), b = new TokenFileDataset(p, { blockSize: 8, seed: 1 });
  const [sa, ta] = a.sampleBatch(16);
  t.same(sa.shape, [16, 8]);
  t.same(b.sampleBatch(16)[0].toArray(), sa.toArray(), 'the same seed samples the same windows');
  const rowsA = sa.toArray() as number[][], rowsT = ta.toArray() as number[][];
  t.ok(rowsA.every((row, i) => row.every((v, j) => v === data[row[0] + j] && rowsT[i][j] === data[row[0] + j + 1])), 'each sample is a shifted window');
  t.ok(new Set(rowsA.map((r) => r[0])).size > 8, 'offsets vary');
  const saved = a.stateDict();
  const next = a.sampleBatch(4)[0].toArray();
  const c = new TokenFileDataset(p, { blockSize: 8, seed: 99 });
  c.loadStateDict(saved);
  t.same(c.sampleBatch(4)[0].toArray(), next, 'stateDict resumes the sampling');
  t.throws(() => new TokenFileDataset(p, { blockSize: 101 }), kiln.ValueError, 'the file is shorter than one window');
  t.throws(() => new TokenFileDataset(p, { blockSize: 0 }), kiln.ValueError);
  t.throws(() => a.sampleBatch(0), kiln.ValueError);
  for (const d of [ds, overlapping, a, b, c]) d.close();
});
