// Token files (docs/token-file.md): a 32-byte header (magic, version, token width, token count,
// vocabulary size) followed by the tokens, little-endian. TokenFileWriter streams tokens to disk,
// tokenizeFile streams a text file through a tokenizer into one, TokenFile reads windows with
// positioned reads (the file is never loaded whole), and TokenFileDataset serves (input, target)
// windows for language-model training, in order or sampled at random from a seeded generator.
import * as fs from 'fs';
import { FormatError, IndexError, ValueError } from '../errors';
import { tensor } from '../ops/creation';
import type { Tensor } from '../tensor';
import { Dataset, checkIndex } from './dataset';
import { Rng } from './rng';
import type { Tokenizer } from './tokenizer';

/** Bytes before the first token. */
export const TOKEN_FILE_HEADER_BYTES = 32;
const MAGIC = Buffer.from('KILNTOK\0', 'latin1');
const VERSION = 1;
/** Token ids are read into int32 tensors, so no vocabulary may exceed 2^31 entries. */
const MAX_VOCAB = 2 ** 31;

/**
 * How a token file stores each token: a little-endian uint16 (vocabularies up to 65,536, GPT-2's
 * included) or uint32.
 */
export type TokenDType = 'uint16' | 'uint32';
const WIDTH: Record<TokenDType, number> = { uint16: 2, uint32: 4 };

/**
 * The 32-byte header of a kiln token file: the magic "KILNTOK\0", then the version, token width, count
 * and vocabulary size.
 */
export interface TokenFileHeader {
  /** Format version (1). */
  version: number;
  /** How each token is stored. */
  dtype: TokenDType;
  /** Number of tokens. */
  count: number;
  /** Every token is an integer in [0, vocabSize). */
  vocabSize: number;
}

function littleEndian(): boolean {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
}

function checkVocab(op: string, vocabSize: number, dtype: TokenDType, Err: typeof ValueError | typeof FormatError): void {
  const max = dtype === 'uint16' ? 2 ** 16 : MAX_VOCAB;
  if (!Number.isInteger(vocabSize) || vocabSize < 1 || vocabSize > max) {
    throw new Err(op, `vocabulary size ${vocabSize} does not fit ${dtype} tokens (1 to ${max})`);
  }
}

function encodeHeader(h: TokenFileHeader): Buffer {
  const b = Buffer.alloc(TOKEN_FILE_HEADER_BYTES);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(h.version, 8);
  b.writeUInt32LE(WIDTH[h.dtype], 12);
  b.writeBigUInt64LE(BigInt(h.count), 16);
  b.writeUInt32LE(h.vocabSize, 24);
  return b;
}

/** Parses and checks a header against the size of the file it came from (untrusted input). */
function decodeHeader(b: Buffer, fileBytes: number, path: string): TokenFileHeader {
  const op = 'TokenFile.open';
  if (fileBytes < TOKEN_FILE_HEADER_BYTES || b.length < TOKEN_FILE_HEADER_BYTES) {
    throw new FormatError(op, `${path}: ${fileBytes} bytes is shorter than the ${TOKEN_FILE_HEADER_BYTES}-byte header`);
  }
  if (!b.subarray(0, 8).equals(MAGIC)) throw new FormatError(op, `${path}: not a kiln token file (bad magic ${JSON.stringify(b.subarray(0, 8).toString('latin1'))})`);
  const version = b.readUInt32LE(8);
  if (version !== VERSION) throw new FormatError(op, `${path}: unsupported version ${version} (this kiln reads version ${VERSION})`);
  const width = b.readUInt32LE(12);
  if (width !== 2 && width !== 4) throw new FormatError(op, `${path}: token width must be 2 (uint16) or 4 (uint32) bytes, got ${width}`);
  const dtype: TokenDType = width === 2 ? 'uint16' : 'uint32';
  const count64 = b.readBigUInt64LE(16);
  if (count64 > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(op, `${path}: token count ${count64} is too large`);
  const count = Number(count64);
  const vocabSize = b.readUInt32LE(24);
  checkVocab(op, vocabSize, dtype, FormatError);
  if (b.readUInt32LE(28) !== 0) throw new FormatError(op, `${path}: reserved header field is ${b.readUInt32LE(28)}, expected 0`);
  const expected = TOKEN_FILE_HEADER_BYTES + count * width;
  if (fileBytes < expected) throw new FormatError(op, `${path}: truncated: the header promises ${count} tokens (${expected} bytes), the file has ${fileBytes} bytes`);
  if (fileBytes > expected) throw new FormatError(op, `${path}: ${fileBytes - expected} bytes after the ${count} tokens the header promises`);
  return { version, dtype, count, vocabSize };
}

/** A token file open for reading; windows are read on demand with positioned reads. */
export class TokenFile implements TokenFileHeader {
  /** The file read. */
  readonly path: string;
  /** Format version from the header. */
  readonly version: number;
  /** Token width from the header. */
  readonly dtype: TokenDType;
  readonly count: number;
  readonly vocabSize: number;
  private fd: number | null;

  private constructor(path: string, fd: number, h: TokenFileHeader) {
    this.path = path;
    this.fd = fd;
    this.version = h.version;
    this.dtype = h.dtype;
    this.count = h.count;
    this.vocabSize = h.vocabSize;
  }

  /** Opens and validates a token file; a malformed one is a FormatError. */
  static open(path: string): TokenFile {
    if (!littleEndian()) throw new FormatError('TokenFile.open', 'token files are little-endian; this machine is not');
    const fd = fs.openSync(path, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const head = Buffer.alloc(TOKEN_FILE_HEADER_BYTES);
      readFully(fd, head, 0, Math.min(size, TOKEN_FILE_HEADER_BYTES), 0, path);
      return new TokenFile(path, fd, decodeHeader(head, size, path));
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /**
   * Tokens start..start+length-1 as int32 values, into `out` when given (at outOffset). Every value is
   * checked against the vocabulary size: a token outside it is a FormatError.
   */
  read(start: number, length: number, out?: Int32Array, outOffset = 0): Int32Array {
    const op = 'TokenFile.read';
    if (this.fd === null) throw new ValueError(op, `${this.path} was closed`);
    if (!Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 0 || start + length > this.count) {
      throw new IndexError(op, `tokens [${start}, ${start + length}) are outside the file's [0, ${this.count})`);
    }
    const dst = out ?? new Int32Array(length);
    if (!Number.isInteger(outOffset) || outOffset < 0 || outOffset + length > dst.length) {
      throw new IndexError(op, `${length} tokens at offset ${outOffset} do not fit an output of ${dst.length}`);
    }
    const width = WIDTH[this.dtype];
    const raw = new Uint8Array(length * width);
    readFully(this.fd, raw, 0, raw.length, TOKEN_FILE_HEADER_BYTES + start * width, this.path);
    const src = this.dtype === 'uint16' ? new Uint16Array(raw.buffer) : new Uint32Array(raw.buffer);
    const vocab = this.vocabSize;
    for (let i = 0; i < length; i++) {
      const v = src[i];
      if (v >= vocab) throw new FormatError(op, `${this.path}: token ${start + i} is ${v}, outside the vocabulary of ${vocab}`);
      dst[outOffset + i] = v;
    }
    return dst;
  }

  /** Closes the file; read() then throws. Closing twice is harmless. */
  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
  /** close(), for `using` declarations. */
  [Symbol.dispose](): void {
    this.close();
  }
}

function readFully(fd: number, buf: Uint8Array, offset: number, length: number, position: number, path: string): void {
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, offset + done, length - done, position + done);
    if (n === 0) throw new FormatError('TokenFile.read', `${path}: the file ended after ${position + done} bytes (was it truncated while open?)`);
    done += n;
  }
}

/** Options of TokenFileWriter and writeTokenFile. */
export interface TokenFileWriterOptions {
  /** Vocabulary size: every token written must be an integer in [0, vocabSize). */
  vocabSize: number;
  /** Token width (default uint16 when vocabSize <= 65536, else uint32). */
  dtype?: TokenDType;
}

/**
 * Writes a token file incrementally. Tokens go to `<path>.partial`, which close() completes (writing
 * the token count into the header) and renames to path, so a reader never sees a half-written file.
 */
export class TokenFileWriter {
  /** Where the finished file goes (it is written as `<path>.partial` until close()). */
  readonly path: string;
  /** Token width of the file. */
  readonly dtype: TokenDType;
  /** Vocabulary size written into the header. */
  readonly vocabSize: number;
  private fd: number | null;
  private n = 0;

  constructor(path: string, opts: TokenFileWriterOptions) {
    const op = 'TokenFileWriter';
    this.dtype = opts.dtype ?? (opts.vocabSize <= 2 ** 16 ? 'uint16' : 'uint32');
    if (this.dtype !== 'uint16' && this.dtype !== 'uint32') throw new ValueError(op, `dtype must be 'uint16' or 'uint32', got ${String(this.dtype)}`);
    checkVocab(op, opts.vocabSize, this.dtype, ValueError);
    this.vocabSize = opts.vocabSize;
    this.path = path;
    this.fd = fs.openSync(`${path}.partial`, 'w');
    fs.writeSync(this.fd, encodeHeader({ version: VERSION, dtype: this.dtype, count: 0, vocabSize: this.vocabSize }));
  }

  /** Tokens written so far. */
  get count(): number {
    return this.n;
  }

  /** Appends tokens (integers in [0, vocabSize)). */
  write(tokens: ArrayLike<number>): void {
    const op = 'TokenFileWriter.write';
    if (this.fd === null) throw new ValueError(op, `${this.path} was already closed`);
    const out = this.dtype === 'uint16' ? new Uint16Array(tokens.length) : new Uint32Array(tokens.length);
    for (let i = 0; i < tokens.length; i++) {
      const v = tokens[i];
      if (!Number.isInteger(v) || v < 0 || v >= this.vocabSize) throw new ValueError(op, `token ${i} is ${v}, outside the vocabulary [0, ${this.vocabSize})`);
      out[i] = v;
    }
    const bytes = new Uint8Array(out.buffer);
    let done = 0;
    while (done < bytes.length) done += fs.writeSync(this.fd, bytes, done, bytes.length - done);
    this.n += tokens.length;
  }

  /** Stops writing and deletes the partial file. */
  abort(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    fs.rmSync(`${this.path}.partial`, { force: true });
  }

  /** Writes the final header and moves the file into place. */
  close(): void {
    if (this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    try {
      fs.writeSync(fd, encodeHeader({ version: VERSION, dtype: this.dtype, count: this.n, vocabSize: this.vocabSize }), 0, TOKEN_FILE_HEADER_BYTES, 0);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(`${this.path}.partial`, this.path);
  }
}

/** Writes tokens to a token file at path in one go. */
export function writeTokenFile(path: string, tokens: ArrayLike<number>, opts: TokenFileWriterOptions): void {
  const w = new TokenFileWriter(path, opts);
  w.write(tokens);
  w.close();
}

const isSpace = (c: string | undefined): boolean => c !== undefined && /\s/.test(c);

/**
 * Where text can be cut so that tokenizing the two parts gives the tokens of the whole: before a
 * single space between two non-space characters, or after a single newline between two. GPT-2 style
 * pre-tokenizers split there too (" word" starts a token; a lone "\n" is its own). Returns the last
 * such index, or -1.
 */
export function safeCut(text: string): number {
  for (let i = text.length - 2; i >= 2; i--) {
    const c = text[i];
    if (isSpace(c)) continue;
    // i is a non-space character; look at the single whitespace character before it.
    const w = text[i - 1];
    if (isSpace(text[i - 2]) || !isSpace(w)) continue;
    if (w === ' ') return i - 1;
    if (w === '\n') return i;
  }
  return -1;
}

/**
 * Options of tokenizeFile: the writer options (vocabSize defaults to the tokenizer's) and how the text
 * is read.
 */
export interface TokenizeFileOptions extends Partial<TokenFileWriterOptions> {
  /** Characters read per piece (default 2^20); text is carried over to the next safe cut. */
  chunkChars?: number;
  /** A token appended after the text (e.g. GPT-2's <|endoftext|>, 50256), to separate documents. */
  appendToken?: number;
}

/**
 * Streams the UTF-8 text file textPath through tokenizer into a token file at outPath, holding about
 * chunkChars characters at a time. Pieces are cut where the tokenizer's output does not change
 * (safeCut); a run of 16 chunks without such a place is cut anyway at a character boundary.
 * Resolves to the number of tokens written.
 */
export async function tokenizeFile(textPath: string, outPath: string, tokenizer: Tokenizer, opts: TokenizeFileOptions = {}): Promise<number> {
  const chunk = opts.chunkChars ?? 2 ** 20;
  if (!Number.isInteger(chunk) || chunk < 1) throw new ValueError('tokenizeFile', `chunkChars must be a positive integer, got ${chunk}`);
  const w = new TokenFileWriter(outPath, { vocabSize: opts.vocabSize ?? tokenizer.vocabSize, dtype: opts.dtype });
  let carry = '';
  try {
    for await (const piece of fs.createReadStream(textPath, { encoding: 'utf8', highWaterMark: chunk })) {
      carry += piece as string;
      let cut = safeCut(carry);
      if (cut <= 0 && carry.length > 16 * chunk) {
        cut = carry.length - 1;
        if (/[\uDC00-\uDFFF]/.test(carry[cut])) cut--;
      }
      if (cut > 0) {
        w.write(tokenizer.encode(carry.slice(0, cut)));
        carry = carry.slice(cut);
      }
    }
    if (carry) w.write(tokenizer.encode(carry));
    if (opts.appendToken !== undefined) w.write([opts.appendToken]);
    w.close();
  } catch (e) {
    w.abort();
    throw e;
  }
  return w.count;
}

/** Options of TokenFileDataset. */
export interface TokenFileDatasetOptions {
  /** Tokens per input window; each item is blockSize + 1 consecutive tokens split into (input, target). */
  blockSize: number;
  /** Tokens between the starts of consecutive items (default blockSize: windows that do not overlap). */
  stride?: number;
  /** Seed of sampleBatch's random offsets (default 0). */
  seed?: number;
  /**
   * Stream of the seed's generator (default 0): data-parallel ranks sample with one seed and their
   * rank as the stream, so each draws its own windows.
   */
  stream?: number;
  /** dtype of the tensors (default int64). */
  dtype?: 'int32' | 'int64';
}

/**
 * (input, target) windows of a token file for next-token prediction: input = tokens[s, s + blockSize),
 * target = tokens[s + 1, s + blockSize + 1). Item i starts at i * stride; sampleBatch draws
 * start offsets uniformly from a seeded generator (whose state stateDict saves).
 */
export class TokenFileDataset implements Dataset<[Tensor, Tensor]> {
  /** The open token file (closed by close()). */
  readonly file: TokenFile;
  /** Tokens per input window. */
  readonly blockSize: number;
  /** Tokens between the starts of consecutive items. */
  readonly stride: number;
  /** Number of items: the windows of blockSize + 1 tokens that start at multiples of stride. */
  readonly length: number;
  /** dtype of the input and target tensors. */
  readonly dtype: 'int32' | 'int64';
  private readonly rng: Rng;

  constructor(file: string | TokenFile, opts: TokenFileDatasetOptions) {
    const op = 'TokenFileDataset';
    const { blockSize } = opts;
    const stride = opts.stride ?? blockSize;
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new ValueError(op, `blockSize must be a positive integer, got ${blockSize}`);
    if (!Number.isInteger(stride) || stride < 1) throw new ValueError(op, `stride must be a positive integer, got ${stride}`);
    const dtype = opts.dtype ?? 'int64';
    if (dtype !== 'int32' && dtype !== 'int64') throw new ValueError(op, `dtype must be int32 or int64, got ${String(dtype)}`);
    this.file = typeof file === 'string' ? TokenFile.open(file) : file;
    if (this.file.count < blockSize + 1) {
      if (typeof file === 'string') this.file.close();
      throw new ValueError(op, `${this.file.path} has ${this.file.count} tokens; one window needs blockSize + 1 = ${blockSize + 1}`);
    }
    this.blockSize = blockSize;
    this.stride = stride;
    this.dtype = dtype;
    this.length = Math.floor((this.file.count - blockSize - 1) / stride) + 1;
    this.rng = new Rng(opts.seed ?? 0, opts.stream ?? 0);
  }

  /**
   * Item index: input tokens[s, s + blockSize) and target tokens[s + 1, s + blockSize + 1) for s =
   * index * stride, each of shape [blockSize].
   */
  get(index: number): [Tensor, Tensor] {
    checkIndex('TokenFileDataset.get', index, this.length);
    return this.windows([index * this.stride], [this.blockSize]);
  }

  /** Items at indices as a batch: input and target of shape [indices.length, blockSize]. */
  getBatch(indices: readonly number[]): [Tensor, Tensor] {
    for (const i of indices) checkIndex('TokenFileDataset.getBatch', i, this.length);
    return this.windows(indices.map((i) => i * this.stride), [indices.length, this.blockSize]);
  }

  /** batchSize windows at uniformly random offsets (any token position), from the seeded generator. */
  sampleBatch(batchSize: number): [Tensor, Tensor] {
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new ValueError('TokenFileDataset.sampleBatch', `batchSize must be a positive integer, got ${batchSize}`);
    const span = this.file.count - this.blockSize;
    return this.windows(Array.from({ length: batchSize }, () => this.rng.below(span)), [batchSize, this.blockSize]);
  }

  private windows(starts: readonly number[], shape: number[]): [Tensor, Tensor] {
    const T = this.blockSize, B = starts.length;
    const buf = new Int32Array(T + 1);
    const input = new Int32Array(B * T), target = new Int32Array(B * T);
    starts.forEach((s, b) => {
      this.file.read(s, T + 1, buf);
      input.set(buf.subarray(0, T), b * T);
      target.set(buf.subarray(1), b * T);
    });
    const make = (v: Int32Array): Tensor => {
      const t32 = tensor(v, { shape });
      if (this.dtype === 'int32') return t32;
      const t64 = t32.to('int64');
      t32.dispose();
      return t64;
    };
    return [make(input), make(target)];
  }

  /** The sampling generator's state (for resuming a run). */
  stateDict(): {
    /** The generator's state (Rng.getState()). */
    rng: number[];
  } {
    return { rng: this.rng.getState() };
  }

  /** Restores the sampling generator from stateDict(), so sampleBatch continues the same sequence. */
  loadStateDict(sd: { rng: number[] }): void {
    this.rng.setState(sd?.rng);
  }

  /** Closes the token file. */
  close(): void {
    this.file.close();
  }
}
