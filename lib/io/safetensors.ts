// The safetensors format (https://github.com/huggingface/safetensors), read and written so that
// PyTorch and Hugging Face tools open kiln's files and the other way round: an 8-byte little-endian
// header length N, N bytes of JSON ({name: {dtype, shape, data_offsets}, __metadata__: {string:
// string}}, padded with spaces to a multiple of 8), then the tensors' raw little-endian bytes.
// Files are untrusted: every length, offset, shape and dtype is checked before a byte of tensor data
// is read, and a malformed file is a FormatError. kiln's files carry CRC-32 checksums of the header and
// of each tensor in __metadata__ (see checksum.ts), checked on every read, so that damaged bytes are a
// FormatError naming the tensor instead of wrong weights; files without them (other tools', older
// kiln's) are read unchecked. Writes are atomic (see atomic.ts).
import * as fs from 'fs';
import { DType, ITEMSIZE } from '../dtype';
import { deviceCode } from '../device';
import { FormatError, ValueError } from '../errors';
import { Tensor, tensorFromBytes } from '../tensor';
import { writeAll, writeAtomic } from './atomic';
import { CHECKSUM_KEY, Checksums, LayoutEntry, crcHex, encodeChecksums, headerCrc, parseChecksums } from './checksum';

/** safetensors dtype names of kiln's dtypes. */
const TO_ST: Record<DType, string> = {
  float32: 'F32', float64: 'F64', bfloat16: 'BF16', float16: 'F16', int32: 'I32', int64: 'I64', bool: 'BOOL',
};
const FROM_ST: Record<string, DType> = Object.fromEntries(Object.entries(TO_ST).map(([k, v]) => [v, k as DType]));

/** The safetensors reference implementation refuses larger headers too. */
export const MAX_HEADER_BYTES = 100_000_000;

/** One tensor's entry in the header. */
export interface SafetensorsEntry {
  /** The tensor's dtype (the file's F32, BF16, I64, ... names mapped to kiln's). */
  dtype: DType;
  /** The tensor's shape. */
  shape: number[];
  /** Byte offsets [begin, end) into the data section (after the header). */
  dataOffsets: [number, number];
}

/** A parsed, validated header. */
export interface SafetensorsHeader {
  /** The entries by tensor name, in file order. */
  tensors: Map<string, SafetensorsEntry>;
  /** The __metadata__ strings, less kiln's checksum entry. */
  metadata: Record<string, string>;
  /** The checksums the file carries (the header's already verified), or null for a file without them. */
  checksums: Checksums | null;
  /** Offset of the data section in the file (8 + header length). */
  dataStart: number;
}

function littleEndian(): boolean {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
}

function checkLittleEndian(op: string): void {
  if (!littleEndian()) throw new FormatError(op, 'safetensors files are little-endian; this machine is not');
}

/** An entry as the file states it, the input of the header checksum. */
function layoutEntry(e: SafetensorsEntry): LayoutEntry {
  return { dtype: TO_ST[e.dtype], shape: e.shape, dataOffsets: e.dataOffsets };
}

/**
 * Parses and validates a header against the size of the file it came from: known dtypes, shapes of
 * non-negative integers, offsets whose length matches shape x dtype, and tensors that tile the data
 * section exactly (no gaps, overlaps or trailing bytes), as the reference implementation demands.
 * When the header carries kiln's checksums, their form and the header's own checksum are checked too.
 */
export function parseHeader(json: Uint8Array, fileBytes: number, where: string): SafetensorsHeader {
  const op = 'safetensors';
  const dataStart = 8 + json.length;
  if (dataStart > fileBytes) throw new FormatError(op, `${where}: the header says ${json.length} bytes, the file has ${fileBytes - 8} after the length`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
  } catch (e) {
    throw new FormatError(op, `${where}: the header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new FormatError(op, `${where}: the header must be a JSON object`);
  const meta: Array<[string, string]> = [];
  const tensors = new Map<string, SafetensorsEntry>();
  for (const [name, raw] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new FormatError(op, `${where}: __metadata__ must be an object of strings`);
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') throw new FormatError(op, `${where}: __metadata__.${k} must be a string, got ${typeof v}`);
        meta.push([k, v]);
      }
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
    const bad = (what: string) => new FormatError(op, `${where}: tensor '${name}': ${what}`);
    if (e === null || typeof e !== 'object' || Array.isArray(e)) throw bad('entry must be an object {dtype, shape, data_offsets}');
    if (typeof e.dtype !== 'string' || !(e.dtype in FROM_ST)) throw bad(`unsupported dtype ${JSON.stringify(e.dtype)} (kiln reads ${Object.keys(FROM_ST).join(', ')})`);
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad(`shape must be an array of non-negative integers, got ${JSON.stringify(e.shape)}`);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isSafeInteger(o) && o >= 0) || off[0] > off[1]) {
      throw bad(`data_offsets must be two integers 0 <= begin <= end, got ${JSON.stringify(off)}`);
    }
    const dtype = FROM_ST[e.dtype];
    const shape = e.shape as number[];
    let count = 1;
    for (const d of shape) {
      count *= d;
      if (!Number.isSafeInteger(count)) throw bad(`shape ${JSON.stringify(shape)} has too many elements`);
    }
    const bytes = count * ITEMSIZE[dtype];
    if (off[1] - off[0] !== bytes) throw bad(`data_offsets ${JSON.stringify(off)} span ${off[1] - off[0]} bytes, shape ${JSON.stringify(shape)} of ${e.dtype} needs ${bytes}`);
    tensors.set(name, { dtype, shape: [...shape], dataOffsets: [off[0], off[1]] });
  }
  const dataBytes = fileBytes - dataStart;
  const spans = [...tensors.entries()].sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0] || a[1].dataOffsets[1] - b[1].dataOffsets[1]);
  let end = 0;
  for (const [name, e] of spans) {
    const [b, en] = e.dataOffsets;
    if (b !== end) {
      throw new FormatError(op, `${where}: tensor '${name}' starts at byte ${b} of the data, expected ${end} (${b < end ? 'overlapping' : 'a gap between'} tensors)`);
    }
    end = en;
  }
  if (end !== dataBytes) {
    throw new FormatError(op, end > dataBytes
      ? `${where}: truncated: the tensors need ${end} bytes of data, the file has ${dataBytes}`
      : `${where}: ${dataBytes - end} bytes after the last tensor`);
  }
  // fromEntries, not assignment, so that a key such as __proto__ stays an ordinary entry.
  const metadata: Record<string, string> = Object.fromEntries(meta);
  let checksums: Checksums | null = null;
  if (Object.hasOwn(metadata, CHECKSUM_KEY)) {
    checksums = parseChecksums(metadata[CHECKSUM_KEY], tensors.keys(), where);
    if (headerCrc([...tensors].map(([n, e]) => [n, layoutEntry(e)]), metadata) !== checksums.header) {
      throw new FormatError(op, `${where}: the header does not match its checksum: the file is damaged (or was edited by a tool that kept kiln's '${CHECKSUM_KEY}' entry)`);
    }
    delete metadata[CHECKSUM_KEY];
  }
  return { tensors, metadata, checksums, dataStart };
}

function readFully(fd: number, buf: Uint8Array, position: number, where: string): void {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, buf.length - done, position + done);
    if (n === 0) throw new FormatError('safetensors', `${where}: the file ended at byte ${position + done} (was it truncated while open?)`);
    done += n;
  }
}

/** Reads and validates the header of an open file. */
function readHeader(fd: number, where: string): SafetensorsHeader {
  const op = 'safetensors';
  const size = fs.fstatSync(fd).size;
  if (size < 8) throw new FormatError(op, `${where}: ${size} bytes is too short for a safetensors file (8-byte header length first)`);
  const lenBuf = Buffer.alloc(8);
  readFully(fd, lenBuf, 0, where);
  const n = lenBuf.readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER_BYTES)) throw new FormatError(op, `${where}: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file?)`);
  if (n > BigInt(size - 8)) throw new FormatError(op, `${where}: truncated: the header length is ${n} bytes, the file has ${size - 8} after it`);
  const json = Buffer.alloc(Number(n));
  readFully(fd, json, 8, where);
  return parseHeader(json, size, where);
}

/** The header of a safetensors file (names, dtypes, shapes, metadata) without reading tensor data. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  checkLittleEndian('safetensors');
  const fd = fs.openSync(path, 'r');
  try {
    return readHeader(fd, path);
  } finally {
    fs.closeSync(fd);
  }
}

/** What loadSafetensors returns. */
export interface LoadedSafetensors {
  /** The tensors read, by name, in the header's order. */
  tensors: Map<string, Tensor>;
  /** The __metadata__ strings, less kiln's checksum entry. */
  metadata: Record<string, string>;
  /** True when the file carried checksums (then the header and every tensor read matched them). */
  checksummed: boolean;
}

/** Options of loadSafetensors. */
export interface LoadSafetensorsOptions {
  /** Where to create the tensors (default 'cpu'). */
  device?: string;
  /** Read only the tensors this returns true for. */
  filter?: (name: string) => boolean;
}

/**
 * Reads the tensors and metadata of a safetensors file. The tensors are new (they join the open tidy
 * scope like any created tensor); the caller disposes them. A malformed file, or one whose data does
 * not match its checksums, is a FormatError, and then no tensor is left allocated.
 */
export function loadSafetensors(path: string, opts: LoadSafetensorsOptions = {}): LoadedSafetensors {
  checkLittleEndian('safetensors');
  const dev = deviceCode('loadSafetensors', opts.device ?? 'cpu');
  const fd = fs.openSync(path, 'r');
  const tensors = new Map<string, Tensor>();
  try {
    const header = readHeader(fd, path);
    for (const [name, e] of header.tensors) {
      if (opts.filter && !opts.filter(name)) continue;
      const bytes = new Uint8Array(e.dataOffsets[1] - e.dataOffsets[0]);
      readFully(fd, bytes, header.dataStart + e.dataOffsets[0], path);
      const crc = header.checksums?.tensors.get(name);
      if (crc !== undefined && crcHex(bytes) !== crc) {
        throw new FormatError('safetensors', `${path}: tensor '${name}': its bytes do not match their checksum: the file is damaged`);
      }
      // kiln's bool kernels count and compare bytes, so a stored 2 would count as 2 and differ from
      // true; other writers may store any nonzero byte, which NumPy and PyTorch read as true.
      if (e.dtype === 'bool') for (let i = 0; i < bytes.length; i++) if (bytes[i] > 1) bytes[i] = 1;
      tensors.set(name, tensorFromBytes(bytes, e.shape, e.dtype, dev));
    }
    return { tensors, metadata: header.metadata, checksummed: header.checksums !== null };
  } catch (e) {
    for (const t of tensors.values()) t.dispose();
    throw e;
  } finally {
    fs.closeSync(fd);
  }
}

/** The header bytes (JSON padded with spaces to a multiple of 8). */
function encodeHeader(layout: Array<[string, LayoutEntry]>, metadata: Record<string, string>): Buffer {
  const header = Object.fromEntries([
    ['__metadata__', metadata],
    ...layout.map(([name, e]) => [name, { dtype: e.dtype, shape: e.shape, data_offsets: e.dataOffsets }]),
  ]);
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, 0x20);
  json.copy(padded);
  return padded;
}

/**
 * Writes tensors (any dtype, device and layout) and string metadata as a safetensors file,
 * atomically, with checksums of the header and of each tensor in the metadata (kiln.crc32). Names
 * must be unique non-empty strings other than __metadata__.
 */
export function saveSafetensors(path: string, tensors: Map<string, Tensor> | Record<string, Tensor>, metadata: Record<string, string> = {}): void {
  const op = 'saveSafetensors';
  checkLittleEndian(op);
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  for (const [name, t] of entries) {
    if (!name || name === '__metadata__') throw new ValueError(op, `invalid tensor name ${JSON.stringify(name)}`);
    if (!(t instanceof Tensor)) throw new ValueError(op, `'${name}' is not a tensor`);
    t._check(op);
  }
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new ValueError(op, `metadata '${k}' must be a string, got ${typeof v}`);
  }
  if (Object.hasOwn(metadata, CHECKSUM_KEY)) throw new ValueError(op, `metadata '${CHECKSUM_KEY}' is kiln's own: it holds the checksums this function writes`);
  let offset = 0;
  const layout = entries.map(([name, t]): [string, LayoutEntry] => {
    const begin = offset;
    offset += t.numel * ITEMSIZE[t.dtype];
    return [name, { dtype: TO_ST[t.dtype], shape: [...t.shape], dataOffsets: [begin, offset] }];
  });
  const headerSum = headerCrc(layout, metadata);
  const crcs = new Map(entries.map(([name]) => [name, '00000000']));
  const header = () => encodeHeader(layout, { ...metadata, [CHECKSUM_KEY]: encodeChecksums(headerSum, crcs) });
  writeAtomic(path, (fd) => {
    // The tensors' crcs are known only once their bytes were fetched, one tensor at a time to bound
    // memory: the header goes out with placeholders and is rewritten at the end, the same length as
    // every crc is 8 hex digits.
    const first = header();
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(first.length));
    writeAll(fd, len);
    writeAll(fd, first);
    for (const [name, t] of entries) {
      if (!t.numel) continue;
      const bytes = new Uint8Array(t._bytes('saveSafetensors'));
      crcs.set(name, crcHex(bytes));
      writeAll(fd, bytes);
    }
    writeAll(fd, header(), 8);
  });
}
