// What `kiln train` and `kiln generate` share: the --device option, the model and tokenizer
// description kept in a checkpoint's state, rebuilding both from a checkpoint, and sampling text.
import * as fs from 'fs';
import * as path from 'path';
import { CharTokenizer, GPT2Tokenizer, Tokenizer } from '../data/tokenizer';
import type { Device } from '../device';
import { FormatError } from '../errors';
import { disposeCheckpoint, readCheckpoint } from '../io/checkpoint';
import { noGrad } from '../autograd/grad_mode';
import { GPT, GPTConfig } from '../nn/gpt';
import { tensor } from '../ops/creation';
import { CHECKPOINT_FILE } from '../train/trainer';
import { buildInfo, cuda } from '../index';
import { OptionSpec, UsageError } from './args';

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

/** A checkpoint file from a path naming the file or the run folder holding it (UsageError when absent). */
export function checkpointFile(where: string): string {
  if (!fs.existsSync(where)) throw new UsageError(`no such file or folder: ${where}`);
  const file = fs.statSync(where).isDirectory() ? path.join(where, CHECKPOINT_FILE) : where;
  if (!fs.existsSync(file)) throw new UsageError(`${where} holds no ${CHECKPOINT_FILE} (train with --out ${where} first)`);
  return file;
}

/** The GPT (on device) and tokenizer of a `kiln train` checkpoint; a file without them is a FormatError. */
export function loadTrained(file: string, device: Device = 'cpu'): { model: GPT; tokenizer: Tokenizer; tokenizerState: TokenizerState; config: GPTConfig; step: number } {
  const c = readCheckpoint(file, { device });
  try {
    const extra = (c.state.extra ?? {}) as { model?: GPTConfig; tokenizer?: TokenizerState };
    const cfg = extra.model;
    const tok = extra.tokenizer;
    if (!cfg || typeof cfg !== 'object' || !tok || (tok.type !== 'gpt2' && !(tok.type === 'char' && Array.isArray(tok.chars)))) {
      throw new FormatError('kiln generate', `${file} is not a checkpoint of kiln train (its state has no model config and tokenizer)`);
    }
    let model: GPT;
    try {
      model = new GPT(cfg);
    } catch (e) {
      throw new FormatError('kiln generate', `${file}: invalid model config: ${(e as Error).message}`);
    }
    model.to(device).loadStateDict(c.weights);
    const trainer = c.state.trainer as { step?: number } | undefined;
    return { model, tokenizer: tokenizerFromState(tok), tokenizerState: tok, config: cfg, step: trainer?.step ?? 0 };
  } finally {
    disposeCheckpoint(c);
  }
}

export interface SampleOptions {
  maxTokens: number;
  temperature: number;
  topK?: number | null;
  topP?: number | null;
}

/** prompt's token ids followed by maxTokens sampled ones, decoded (one string per sample); runs where the model is. */
export function sampleText(model: GPT, tokenizer: Tokenizer, prompt: number[], samples: number, o: SampleOptions): string[] {
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
