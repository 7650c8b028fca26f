// What kiln's commands share: the --device option, the model and tokenizer description kept in a
// checkpoint's state, rebuilding both from a checkpoint of kiln train or kiln finetune, and sampling text.
import * as fs from 'fs';
import * as path from 'path';
import { CharTokenizer, GPT2Tokenizer, Tokenizer } from '../data/tokenizer';
import type { Device } from '../device';
import { FormatError } from '../errors';
import { disposeCheckpoint, readCheckpoint } from '../io/checkpoint';
import { noGrad } from '../autograd/grad_mode';
import { GPT, GPTConfig } from '../nn/gpt';
import type { GenerateOptions } from '../nn/gpt';
import type { GPTForSequenceClassification } from '../nn/gpt_classify';
import type { Module } from '../nn/module';
import type { Tensor } from '../tensor';
import { tensor } from '../ops/creation';
import { CHECKPOINT_FILE } from '../train/trainer';
import { buildInfo, cuda } from '../index';
import { OptionSpec, UsageError } from './args';
import { FinetuneState, Tuned, readFinetuneState, wrapForFinetune } from './tuned';

export const DEVICE_OPTION: OptionSpec = { name: 'device', kind: 'string', value: '<device>', help: 'cpu, cuda (the first GPU) or cuda:N', defaultText: 'cpu' };

/** The device a --device value names ('cuda' is cuda:0), after checking that this kiln can use it. */
export function resolveDevice(spec: string): Device {
  const m = /^(?:cpu|cuda(?::(\d+))?)$/.exec(spec);
  if (!m) throw new UsageError(`--device must be cpu, cuda or cuda:N, got ${JSON.stringify(spec)}`);
  if (spec === 'cpu') return 'cpu';
  if (!buildInfo().cuda) {
    throw new UsageError(`--device ${spec}: this kiln was built without its CUDA backend (no CUDA toolkit with cuBLAS was found at install); install one and reinstall kiln, or use --device cpu`);
  }
  const n = cuda.deviceCount();
  if (n === 0) throw new UsageError(`--device ${spec}: no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES), or use --device cpu`);
  const index = Number(m[1] ?? 0);
  if (index >= n) throw new UsageError(`--device ${spec}: there ${n === 1 ? 'is 1 CUDA GPU (cuda:0)' : `are ${n} CUDA GPUs (cuda:0 to cuda:${n - 1})`}`);
  return `cuda:${index}`;
}

/** How a run tokenized its text (saved in the checkpoint, so that generation needs nothing else). */
export type TokenizerState = { type: 'char'; chars: string[] } | { type: 'gpt2' };

export function tokenizerFromState(s: TokenizerState): Tokenizer {
  return s.type === 'gpt2' ? new GPT2Tokenizer({ allowSpecial: true }) : new CharTokenizer(s.chars);
}

/**
 * A run's tokenizer for new text. A character tokenizer knows only its training text's
 * characters: others are dropped (and counted) rather than failing on the first one.
 */
export function lenientTokenizer(state: TokenizerState): { tokenizer: Tokenizer; dropped: Map<string, number> } {
  const tok = tokenizerFromState(state);
  const dropped = new Map<string, number>();
  if (!(tok instanceof CharTokenizer)) return { tokenizer: tok, dropped };
  const known = new Set(tok.chars);
  const tokenizer: Tokenizer = {
    vocabSize: tok.vocabSize,
    decode: (ids) => tok.decode(ids),
    encode: (text) => {
      let kept = '';
      for (const c of text) {
        if (known.has(c)) kept += c;
        else dropped.set(c, (dropped.get(c) ?? 0) + 1);
      }
      return tok.encode(kept);
    },
  };
  return { tokenizer, dropped };
}

/** Warns on stderr about the characters lenientTokenizer left out, if any. */
export function warnDropped(command: string, dropped: Map<string, number>): void {
  if (!dropped.size) return;
  const n = [...dropped.values()].reduce((a, b) => a + b, 0);
  const shown = [...dropped.keys()].slice(0, 10).map((c) => JSON.stringify(c)).join(' ');
  process.stderr.write(`kiln ${command}: warning: ${n} characters the model never saw were left out (${dropped.size} distinct: ${shown}${dropped.size > 10 ? ' ...' : ''})\n`);
}

/** A checkpoint file from a path naming the file or the run folder holding it (UsageError when absent). */
export function checkpointFile(where: string): string {
  if (!fs.existsSync(where)) throw new UsageError(`no such file or folder: ${where}`);
  const file = fs.statSync(where).isDirectory() ? path.join(where, CHECKPOINT_FILE) : where;
  if (!fs.existsSync(file)) throw new UsageError(`${where} holds no ${CHECKPOINT_FILE} (train with --out ${where} first)`);
  return file;
}

/** A model read back from a checkpoint of `kiln train` or `kiln finetune`. */
export interface LoadedRun {
  /** What was trained: the GPT, or the classifier or PromptTuning of a fine-tuning (tuned.ts). */
  module: Module;
  /** The GPT inside. */
  gpt: GPT;
  /** The classifier of a classification fine-tuning, else null. */
  classifier: GPTForSequenceClassification | null;
  /** How the run fine-tuned, or null for a `kiln train` run. */
  finetune: FinetuneState | null;
  tokenizer: Tokenizer;
  tokenizerState: TokenizerState;
  config: GPTConfig;
  /** Optimizer steps the run had done. */
  step: number;
}

/**
 * The model (on device) and tokenizer of a checkpoint written by `kiln train` or `kiln finetune`;
 * a file without them is a FormatError of op (the command reading it).
 */
export function loadRun(file: string, device: Device, op: string): LoadedRun {
  const c = readCheckpoint(file, { device });
  try {
    const extra = (c.state.extra ?? {}) as { model?: GPTConfig; tokenizer?: TokenizerState; finetune?: unknown };
    const cfg = extra.model;
    const tok = extra.tokenizer;
    if (!cfg || typeof cfg !== 'object' || !tok || (tok.type !== 'gpt2' && !(tok.type === 'char' && Array.isArray(tok.chars)))) {
      throw new FormatError(op, `${file} is not a checkpoint of kiln train or kiln finetune (its state has no model config and tokenizer)`);
    }
    const finetune = readFinetuneState(extra.finetune, file, op);
    let tuned: Tuned;
    try {
      const gpt = new GPT(cfg);
      tuned = finetune ? wrapForFinetune(gpt, finetune) : { module: gpt, gpt, classifier: null };
    } catch (e) {
      throw new FormatError(op, `${file}: invalid model config: ${(e as Error).message}`);
    }
    tuned.module.to(device).loadStateDict(c.weights);
    const trainer = c.state.trainer as { step?: number } | undefined;
    return { ...tuned, finetune, tokenizer: tokenizerFromState(tok), tokenizerState: tok, config: cfg, step: trainer?.step ?? 0 };
  } finally {
    disposeCheckpoint(c);
  }
}

/** A model that samples continuations: a GPT, or a PromptTuning around one. */
export type TextGenerator = Module & { generate(idx: Tensor, maxNewTokens: number, opts?: GenerateOptions): Tensor };

export interface SampleOptions {
  maxTokens: number;
  temperature: number;
  topK?: number | null;
  topP?: number | null;
}

/** prompt's token ids followed by maxTokens sampled ones, decoded (one string per sample); runs where the model is. */
export function sampleText(model: TextGenerator, tokenizer: Tokenizer, prompt: number[], samples: number, o: SampleOptions): string[] {
  return noGrad(() => {
    const prompts = Int32Array.from({ length: samples * prompt.length }, (_, i) => prompt[i % prompt.length]);
    const idx = tensor(prompts, { shape: [samples, prompt.length], dtype: 'int64', device: model.parameters()[0].device });
    const out = model.generate(idx, o.maxTokens, { temperature: o.temperature, topK: o.topK, topP: o.topP });
    const ids = out.dataSync() as BigInt64Array;
    idx.dispose();
    out.dispose();
    const n = prompt.length + o.maxTokens;
    return Array.from({ length: samples }, (_, b) => tokenizer.decode(Array.from(ids.subarray(b * n, (b + 1) * n), Number)));
  });
}
