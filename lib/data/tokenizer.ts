// Tokenizers: the Tokenizer interface, CharTokenizer (one id per character of a text, saved as
// JSON) and GPT2Tokenizer (GPT-2's byte-level BPE, from the gpt-tokenizer package, whose bundled
// vocabulary is loaded on first use; nothing is downloaded).
import * as fs from 'fs';
import { FormatError, IndexError, ValueError } from '../errors';

/** Text to token ids and back. */
export interface Tokenizer {
  /** Ids are integers in [0, vocabSize). */
  readonly vocabSize: number;
  /** The token ids of text. */
  encode(text: string): number[];
  /** The text of ids (an IndexError for an id outside [0, vocabSize)). */
  decode(ids: ArrayLike<number>): string;
}

function checkIds(op: string, ids: ArrayLike<number>, vocabSize: number): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new IndexError(op, `token ${i} is ${id}, outside the vocabulary [0, ${vocabSize})`);
  }
}

const CHAR_FORMAT = 'kiln.CharTokenizer';

/** The saved form of a CharTokenizer. */
export interface CharTokenizerJSON {
  /** Always 'kiln.CharTokenizer': what fromJSON checks first. */
  type: typeof CHAR_FORMAT;
  /** Format version (1). */
  version: 1;
  /** The vocabulary: chars[id] is the character of id. */
  chars: string[];
}

/** One token per Unicode character (code point); the vocabulary is the characters of a text. */
export class CharTokenizer implements Tokenizer {
  /** The vocabulary: chars[id] is the character of id. */
  readonly chars: readonly string[];
  private readonly ids: Map<string, number>;

  /** A tokenizer over exactly these characters (each one code point, no repeats), ids in this order. */
  constructor(chars: readonly string[]) {
    const ids = new Map<string, number>();
    chars.forEach((c, i) => {
      if (typeof c !== 'string' || [...c].length !== 1) throw new ValueError('CharTokenizer', `chars[${i}] is not one character: ${JSON.stringify(c)}`);
      if (ids.has(c)) throw new ValueError('CharTokenizer', `character ${JSON.stringify(c)} appears twice`);
      ids.set(c, i);
    });
    this.chars = [...chars];
    this.ids = ids;
  }

  /** The tokenizer over the distinct characters of text, sorted by code point. */
  static fromText(text: string): CharTokenizer {
    const chars = [...new Set(text)].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
    return new CharTokenizer(chars);
  }

  /** Number of characters in the vocabulary. */
  get vocabSize(): number {
    return this.chars.length;
  }

  /**
   * One id per character of text; a character outside the vocabulary is a ValueError naming it and its
   * offset.
   */
  encode(text: string): number[] {
    const out: number[] = [];
    let pos = 0;
    for (const c of text) {
      const id = this.ids.get(c);
      if (id === undefined) throw new ValueError('CharTokenizer.encode', `character ${JSON.stringify(c)} at offset ${pos} is not in the vocabulary`);
      out.push(id);
      pos += c.length;
    }
    return out;
  }

  /** The characters of ids, joined (an IndexError for an id outside the vocabulary). */
  decode(ids: ArrayLike<number>): string {
    checkIds('CharTokenizer.decode', ids, this.chars.length);
    let s = '';
    for (let i = 0; i < ids.length; i++) s += this.chars[ids[i]];
    return s;
  }

  /** The saved form, which fromJSON() reads back (JSON.stringify calls it). */
  toJSON(): CharTokenizerJSON {
    return { type: CHAR_FORMAT, version: 1, chars: [...this.chars] };
  }

  /** Rebuilds a tokenizer from toJSON()'s output; anything else is a FormatError. */
  static fromJSON(json: unknown): CharTokenizer {
    const op = 'CharTokenizer.fromJSON';
    const j = json as Partial<CharTokenizerJSON> | null;
    if (!j || typeof j !== 'object' || j.type !== CHAR_FORMAT) throw new FormatError(op, `not a saved CharTokenizer (type should be '${CHAR_FORMAT}')`);
    if (j.version !== 1) throw new FormatError(op, `unsupported version ${String(j.version)} (this kiln reads version 1)`);
    if (!Array.isArray(j.chars)) throw new FormatError(op, '`chars` must be an array of characters');
    try {
      return new CharTokenizer(j.chars);
    } catch (e) {
      throw new FormatError(op, (e as Error).message);
    }
  }

  /** Writes the tokenizer as JSON to path. */
  save(path: string): void {
    fs.writeFileSync(path, JSON.stringify(this.toJSON()));
  }

  /** Reads a tokenizer written by save(); a file that is not a saved CharTokenizer is a FormatError. */
  static load(path: string): CharTokenizer {
    let json: unknown;
    try {
      json = JSON.parse(fs.readFileSync(path, 'utf8'));
    } catch (e) {
      if (e instanceof SyntaxError) throw new FormatError('CharTokenizer.load', `${path} is not valid JSON: ${e.message}`);
      throw e;
    }
    return CharTokenizer.fromJSON(json);
  }
}

interface Gpt2Encoding {
  encode(text: string, opts?: { disallowedSpecial?: Set<string> }): number[];
  decode(ids: Iterable<number>): string;
}

let gpt2: Gpt2Encoding | undefined;
function loadGpt2(): Gpt2Encoding {
  if (!gpt2) {
    try {
      gpt2 = require('gpt-tokenizer/encoding/gpt2') as Gpt2Encoding;
    } catch (e) {
      throw new ValueError('GPT2Tokenizer', `the GPT-2 vocabulary comes from the npm package gpt-tokenizer, which did not load (${(e as Error).message.split('\n')[0]}); install it with \`npm install gpt-tokenizer\``);
    }
  }
  return gpt2;
}

const END_OF_TEXT = '<|endoftext|>';

/**
 * GPT-2's byte-level BPE (50257 tokens; id 50256 is <|endoftext|>). Text that spells
 * "<|endoftext|>" is encoded as ordinary text unless allowSpecial is true.
 */
export class GPT2Tokenizer implements Tokenizer {
  /** GPT-2's vocabulary size (ids 0..50256). */
  readonly vocabSize = 50257;
  /** The id of <|endoftext|>, which separates documents. */
  readonly eotToken = 50256;
  private readonly allowSpecial: boolean;

  /**
   * allowSpecial: encode the text "<|endoftext|>" as the eotToken id instead of as ordinary text
   * (default false). Loads the bundled vocabulary (a ValueError when the gpt-tokenizer package is
   * missing).
   */
  constructor(opts: { allowSpecial?: boolean } = {}) {
    this.allowSpecial = opts.allowSpecial ?? false;
    loadGpt2();
  }

  /** GPT-2's byte-level BPE ids of text (computed by the gpt-tokenizer package). */
  encode(text: string): number[] {
    const bpe = loadGpt2();
    const plain = { disallowedSpecial: new Set<string>() };
    if (!this.allowSpecial) return bpe.encode(text, plain);
    // Split on the special token here: the package finds it only at the start of the text.
    const out: number[] = [];
    text.split(END_OF_TEXT).forEach((piece, i) => {
      if (i > 0) out.push(this.eotToken);
      if (piece) for (const id of bpe.encode(piece, plain)) out.push(id);
    });
    return out;
  }

  /** The text of ids (an IndexError for an id outside [0, 50257)). */
  decode(ids: ArrayLike<number>): string {
    checkIds('GPT2Tokenizer.decode', ids, this.vocabSize);
    return loadGpt2().decode(Array.from(ids));
  }
}
