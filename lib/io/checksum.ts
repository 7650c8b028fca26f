// CRC-32 checksums that tell a damaged safetensors file from a good one. kiln writes them into the
// file's __metadata__ under "kiln.crc32", as JSON {"header": crc, "tensors": {name: crc}} with eight
// lowercase hex digits per crc, so the file stays plain safetensors that other tools read. The header
// crc covers what the header says (each tensor's name, dtype, shape and offsets, and the other
// metadata) in a canonical form, so that it survives key order and padding; each tensor's crc covers
// its bytes. CRC-32 because it is the fastest check Node has built in (about 2 GB/s) and it catches
// every burst error up to 32 bits; it guards against damage, not against forgery.
import * as zlib from 'zlib';
import { FormatError } from '../errors';

/** The __metadata__ key that holds the checksums. */
export const CHECKSUM_KEY = 'kiln.crc32';

/** A tensor's entry as the header states it (safetensors dtype name). */
export interface LayoutEntry {
  dtype: string;
  shape: readonly number[];
  dataOffsets: readonly [number, number];
}

/** Checksums read from a header: the header's own and each tensor's, as 8-digit hex strings. */
export interface Checksums {
  /** The crc of the header's canonical form. */
  header: string;
  /** The crc of each tensor's bytes, by tensor name. */
  tensors: Map<string, string>;
}

let table: Int32Array | null = null;

/** The 8 x 256 lookup tables of slicing-by-8 CRC-32 (reflected polynomial 0xEDB88320, as zlib). */
function crcTable(): Int32Array {
  if (table) return table;
  const t = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) for (let k = 1; k < 8; k++) t[k * 256 + n] = (t[(k - 1) * 256 + n] >>> 8) ^ t[t[(k - 1) * 256 + n] & 0xff];
  return (table = t);
}

/** @internal CRC-32 in TypeScript (slicing-by-8, about 0.9 GB/s), for Node releases without zlib.crc32. */
export function crc32Slow(data: Uint8Array): number {
  const t = crcTable();
  const n = data.length, end8 = n - (n % 8);
  let c = -1, i = 0;
  for (; i < end8; i += 8) {
    const a = (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)) ^ c;
    c = t[1792 + (a & 0xff)] ^ t[1536 + ((a >>> 8) & 0xff)] ^ t[1280 + ((a >>> 16) & 0xff)] ^ t[1024 + (a >>> 24)] ^
      t[768 + data[i + 4]] ^ t[512 + data[i + 5]] ^ t[256 + data[i + 6]] ^ t[data[i + 7]];
  }
  for (; i < n; i++) c = t[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

// zlib.crc32 arrived in Node 20.15; kiln supports every Node 20.
const zlibCrc32 = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
// zlib takes a 32-bit length: a larger tensor goes in pieces.
const PIECE = 1 << 30;

/** CRC-32 of data (the same value as zlib's crc32 and Python's zlib.crc32). */
export function crc32(data: Uint8Array): number {
  if (!zlibCrc32) return crc32Slow(data);
  let c = 0;
  for (let i = 0; i < data.length; i += PIECE) c = zlibCrc32(data.subarray(i, i + PIECE), c);
  return c;
}

/** A crc as the file stores it: eight lowercase hex digits. */
export function crcHex(data: Uint8Array): string {
  return crc32(data).toString(16).padStart(8, '0');
}

/**
 * The crc of a header's canonical form: tensors sorted by name as [name, dtype, shape, offsets], then
 * the metadata sorted by key, the checksum entry left out (it cannot cover itself).
 */
export function headerCrc(tensors: Iterable<[string, LayoutEntry]>, metadata: Record<string, string>): string {
  const t = [...tensors].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, e]) => [name, e.dtype, e.shape, e.dataOffsets]);
  const m = Object.keys(metadata).filter((k) => k !== CHECKSUM_KEY).sort().map((k) => [k, metadata[k]]);
  return crcHex(Buffer.from(JSON.stringify([t, m]), 'utf8'));
}

/** The metadata value that stores the checksums. */
export function encodeChecksums(header: string, tensors: Iterable<[string, string]>): string {
  return JSON.stringify({ header, tensors: Object.fromEntries(tensors) });
}

const CRC = /^[0-9a-f]{8}$/;

/**
 * Parses the checksum entry of a header whose tensors are `names`: one well-formed crc for the header
 * and for each tensor, and none for a tensor the header does not have. A FormatError otherwise.
 */
export function parseChecksums(text: string, names: Iterable<string>, where: string): Checksums {
  const bad = (what: string) => new FormatError('safetensors', `${where}: metadata '${CHECKSUM_KEY}': ${what}`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw bad(`not valid JSON (${(e as Error).message})`);
  }
  const obj = (x: unknown): x is Record<string, unknown> => x !== null && typeof x === 'object' && !Array.isArray(x);
  if (!obj(v) || typeof v.header !== 'string' || !CRC.test(v.header) || !obj(v.tensors)) {
    throw bad('expected {"header": crc, "tensors": {name: crc}} with crcs of 8 lowercase hex digits');
  }
  const tensors = new Map<string, string>();
  for (const [name, crc] of Object.entries(v.tensors)) {
    if (typeof crc !== 'string' || !CRC.test(crc)) throw bad(`the crc of tensor '${name}' is ${JSON.stringify(crc)}, not 8 lowercase hex digits`);
    tensors.set(name, crc);
  }
  const known = new Set(names);
  for (const name of known) if (!tensors.has(name)) throw bad(`no crc for tensor '${name}'`);
  for (const name of tensors.keys()) if (!known.has(name)) throw bad(`a crc for tensor '${name}', which the file does not have`);
  return { header: v.header, tensors };
}
