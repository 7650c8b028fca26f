// Labelled text for `kiln finetune --task classify` and `kiln classify`: JSON Lines files of
// {"text": ..., "label": ...} objects (field names configurable), class names collected from the
// training data, texts tokenized and cut to a maximum length, and batches padded to their longest row
// with each row's real length (the classifier reads the last real token).
import * as fs from 'fs';
import { DataLoader } from '../data/dataloader';
import type { Tokenizer } from '../data/tokenizer';
import { tensor } from '../ops/creation';
import type { Tensor } from '../tensor';
import { UsageError } from './args';

/** The text and label fields of a JSON Lines record. */
export interface LabelFields {
  text: string;
  label: string;
}

/** Records of a JSON Lines file; label is null where a record has none (allowed when !needLabels). */
export function readLabelled(file: string, fields: LabelFields, needLabels: boolean): { texts: string[]; labels: Array<string | null> } {
  if (!fs.existsSync(file)) throw new UsageError(`no such file: ${file}`);
  if (!fs.statSync(file).isFile()) throw new UsageError(`not a file: ${file}`);
  const texts: string[] = [];
  const labels: Array<string | null> = [];
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    const where = `${file}:${i + 1}`;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      throw new UsageError(`${where} is not a JSON object (expected one {"${fields.text}": ..., "${fields.label}": ...} per line)`);
    }
    if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) throw new UsageError(`${where} is not a JSON object`);
    const r = rec as Record<string, unknown>;
    if (typeof r[fields.text] !== 'string') throw new UsageError(`${where} has no string field "${fields.text}"`);
    const label = r[fields.label];
    if (label === undefined || label === null) {
      if (needLabels) throw new UsageError(`${where} has no field "${fields.label}"`);
    } else if (typeof label !== 'string' && !Number.isInteger(label)) {
      throw new UsageError(`${where}: "${fields.label}" must be a string or an integer, got ${JSON.stringify(label)}`);
    }
    texts.push(r[fields.text] as string);
    labels.push(label === undefined || label === null ? null : String(label));
  });
  if (!texts.length) throw new UsageError(`${file} holds no records`);
  return { texts, labels };
}

/** The distinct labels in a stable order: numerically when all are integers, else as strings. */
export function classNames(labels: Array<string | null>): string[] {
  const set = [...new Set(labels.filter((l): l is string => l !== null))];
  return set.every((l) => /^-?\d+$/.test(l)) ? set.sort((a, b) => Number(a) - Number(b)) : set.sort();
}

/** One classification example: token ids (1 to maxLength of them), the class index (-1: unknown), its record's index. */
export interface Example {
  ids: number[];
  label: number;
  record: number;
}

/**
 * The examples of texts: each tokenized and cut to its first maxLength tokens, its label mapped to
 * its index in classes (a label outside classes is a UsageError naming file). Texts without tokens
 * are left out and counted.
 */
export function encodeExamples(
  tokenizer: Tokenizer, data: { texts: string[]; labels: Array<string | null> }, classes: string[], maxLength: number, file: string,
): { examples: Example[]; empty: number } {
  const index = new Map(classes.map((c, i) => [c, i]));
  const examples: Example[] = [];
  let empty = 0;
  data.texts.forEach((text, i) => {
    const l = data.labels[i];
    const label = l === null ? -1 : index.get(l);
    if (label === undefined) throw new UsageError(`${file}: label ${JSON.stringify(l)} is not one of the classes trained on (${classes.join(', ')})`);
    const ids = tokenizer.encode(text).slice(0, maxLength);
    if (ids.length) examples.push({ ids, label, record: i });
    else empty++;
  });
  return { examples, empty };
}

/** A batch: ids [B, longest] (padded with 0 after each row's end), labels [B], and the rows' lengths. */
export type ClassifyBatch = [Tensor, Tensor, { lengths: number[] }];

/** Pads a batch of examples to its longest row. */
export function collateExamples(items: Example[]): ClassifyBatch {
  const T = Math.max(...items.map((e) => e.ids.length));
  const ids = new Int32Array(items.length * T);
  items.forEach((e, b) => ids.set(e.ids, b * T));
  return [
    tensor(ids, { shape: [items.length, T], dtype: 'int64' }),
    tensor(items.map((e) => e.label), { dtype: 'int64' }),
    { lengths: items.map((e) => e.ids.length) },
  ];
}

/** A DataLoader of padded batches over examples (shuffled with seed when shuffle). */
export function exampleLoader(examples: Example[], batchSize: number, shuffle: boolean, seed = 0): DataLoader<Example, ClassifyBatch> {
  return new DataLoader({ length: examples.length, get: (i: number) => examples[i] }, { batchSize, shuffle, seed, collate: collateExamples });
}
