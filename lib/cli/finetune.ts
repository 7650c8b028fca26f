// `kiln finetune`: adapts a trained GPT (a run folder of kiln train, or a Hugging Face GPT-2 folder)
// to new text (--task lm) or to a labelled classification task (--task classify), training all its
// weights (--mode full), LoRA adapters (lora) or a soft prompt (prompt). Runs through the same
// Trainer as kiln train: progress, metrics.jsonl, loss.svg, checkpoints and --resume; the checkpoint
// records the fine-tuning (tuned.ts) so kiln generate and kiln classify read it back. A summary.json
// gives the figures of the run (trainable parameters, time, peak memory, validation results).
import * as fs from 'fs';
import * as path from 'path';
import * as kiln from '../index';
import { DataLoader } from '../data/dataloader';
import { Rng } from '../data/rng';
import { TokenFileDataset, tokenizeFile } from '../data/token_file';
import type { Tokenizer } from '../data/tokenizer';
import type { Device } from '../device';
import { GPT, GPTConfig } from '../nn/gpt';
import * as lora from '../nn/lora';
import type { Module } from '../nn/module';
import { AdamW } from '../optim/adam';
import { WarmupCosineLR } from '../optim/lr_scheduler';
import { readSafetensorsHeader } from '../io/safetensors';
import { windowSampler } from '../train/lm';
import { formatCount, formatDuration, unitLabels } from '../train/progress';
import { CHECKPOINT_FILE, Trainer } from '../train/trainer';
import type { BatchSource, FitResult } from '../train/trainer';
import { CommandSpec, OptionValues, UsageError, camel, helpText, parse, withConfig } from './args';
import { ClassifyBatch, Example, classNames, encodeExamples, exampleLoader, readLabelled } from './labelled';
import { DEVICE_OPTION, TokenizerState, lenientTokenizer, loadRun, resolveDevice, warnDropped } from './model';
import { fitStoppingOnSigint, num, pct, plural, tokenize } from './train';
import { FinetuneState, MODES, TASKS, wrapForFinetune } from './tuned';

/** Token ids of the GPT-2 BPE tokenizer. */
const GPT2_VOCAB = 50257;

const DEFAULT_LR: Record<FinetuneState['mode'], number> = { full: 1e-4, lora: 1e-3, prompt: 3e-2 };

export const FINETUNE: CommandSpec = {
  name: 'finetune',
  usage: 'kiln finetune --base <run folder | Hugging Face GPT-2 folder> --data <file> [--task lm|classify] [--mode full|lora|prompt] [options]',
  summary:
    'Fine-tunes a GPT trained with kiln train (its run folder or checkpoint file) or a Hugging Face GPT-2\n' +
    'folder (config.json + model.safetensors) on new text (--task lm: a UTF-8 text file) or on labelled\n' +
    'texts (--task classify: JSON Lines, one {"text": ..., "label": ...} per line), training all weights,\n' +
    'LoRA adapters or a soft prompt.',
  options: [
    { name: 'base', kind: 'string', value: '<path>', help: 'the model to start from: a kiln train run folder or checkpoint, or a Hugging Face GPT-2 folder' },
    { name: 'data', kind: 'string', value: '<file>', help: 'training data: text (--task lm) or JSON Lines of labelled texts (--task classify)' },
    { name: 'val-data', kind: 'string', value: '<file>', help: 'validation data in the same format', defaultText: '10% of --data, held out' },
    { name: 'task', kind: 'string', value: '<task>', choices: TASKS, help: 'language modelling or sequence classification', defaultText: 'lm' },
    { name: 'mode', kind: 'string', value: '<mode>', choices: MODES, help: 'train all weights, LoRA adapters, or a soft prompt', defaultText: 'full' },
    { name: 'config', kind: 'string', value: '<file.json>', help: 'JSON object of options below, e.g. {"mode": "lora", "steps": 500}; flags win', inConfig: false },
    { name: 'out', kind: 'string', value: '<dir>', help: 'folder for the checkpoint, metrics.jsonl, loss.svg and summary.json', defaultText: 'kiln-finetune' },
    { name: 'steps', kind: 'int', value: '<n>', min: 1, help: 'optimizer steps', defaultText: '300' },
    { name: 'batch-size', kind: 'int', value: '<n>', min: 1, help: 'sequences (or texts) per micro-batch', defaultText: '16' },
    { name: 'block-size', kind: 'int', value: '<n>', min: 1, help: 'lm: context length in tokens', defaultText: "the base's context (less the soft prompt), at most 128" },
    { name: 'max-length', kind: 'int', value: '<n>', min: 1, help: 'classify: tokens read from the start of each text', defaultText: "the base's context (less the soft prompt), at most 128" },
    { name: 'lr', kind: 'number', value: '<x>', min: 0, minExclusive: true, help: 'peak learning rate (AdamW)', defaultText: 'full 1e-4, lora 1e-3, prompt 3e-2' },
    { name: 'min-lr-ratio', kind: 'number', value: '<x>', min: 0, max: 1, help: 'final learning rate as a fraction of --lr (cosine decay)', defaultText: '0.1' },
    { name: 'warmup', kind: 'int', value: '<n>', min: 0, help: 'steps of linear learning-rate warmup', defaultText: '20' },
    { name: 'weight-decay', kind: 'number', value: '<x>', min: 0, help: 'AdamW weight decay of 2-D parameters (matrices, embeddings, a soft prompt)', defaultText: '0' },
    { name: 'grad-accum', kind: 'int', value: '<n>', min: 1, help: 'micro-batches per optimizer step', defaultText: '1' },
    { name: 'clip', kind: 'number', value: '<x>', min: 0, minExclusive: true, help: 'clip the gradient norm to this', defaultText: '1' },
    { name: 'autocast', kind: 'string', value: '<dtype>', choices: ['bf16', 'off'], help: 'run the forward under bfloat16 autocast', defaultText: 'off' },
    { name: 'lora-rank', kind: 'int', value: '<r>', min: 1, help: 'LoRA rank', defaultText: '8' },
    { name: 'lora-alpha', kind: 'number', value: '<a>', min: 0, minExclusive: true, help: 'LoRA scale numerator (updates scaled by alpha / rank)', defaultText: '16' },
    { name: 'lora-dropout', kind: 'number', value: '<p>', min: 0, max: 0.99, help: "dropout on the adapters' input", defaultText: '0' },
    { name: 'lora-targets', kind: 'string', value: '<list>', help: "comma-separated layers to adapt, e.g. attn.inProj,attn.outProj,mlp.fc,mlp.proj (or attn.q,attn.v)", defaultText: 'attn.inProj' },
    { name: 'prompt-tokens', kind: 'int', value: '<n>', min: 1, help: 'soft prompt length', defaultText: '20' },
    { name: 'prompt-init', kind: 'string', value: '<text>', help: 'start the soft prompt from the embeddings of this text', defaultText: 'random' },
    { name: 'text-field', kind: 'string', value: '<name>', help: 'classify: the text field of the JSON records', defaultText: 'text' },
    { name: 'label-field', kind: 'string', value: '<name>', help: 'classify: the label field of the JSON records', defaultText: 'label' },
    { name: 'eval-interval', kind: 'int', value: '<n>', min: 1, help: 'steps between validation runs (and checkpoints)', defaultText: '50' },
    { name: 'eval-batches', kind: 'int', value: '<n>', min: 1, help: 'validation batches per run', defaultText: 'lm 20, classify all' },
    { name: 'seed', kind: 'int', value: '<n>', min: 0, help: 'seed of initialization, data split and order', defaultText: '0' },
    DEVICE_OPTION,
    { name: 'threads', kind: 'int', value: '<n>', min: 1, help: 'CPU threads', defaultText: 'all cores' },
    { name: 'resume', kind: 'boolean', help: `continue the fine-tuning saved in --out (${CHECKPOINT_FILE})` },
    { name: 'progress', kind: 'string', value: '<mode>', choices: ['bar', 'log', 'none'], help: 'progress display', defaultText: 'bar on a terminal, else log' },
  ],
  epilog:
    'Examples:\n' +
    '  kiln train --data mail.txt --out base                       # a base model\n' +
    '  kiln finetune --base base --data labelled.jsonl --task classify --mode lora --out spam\n' +
    '  kiln classify --checkpoint spam --data test.jsonl\n' +
    '  kiln finetune --base ./gpt2 --data notes.txt --mode prompt --prompt-tokens 16 --out notes\n' +
    '  kiln generate --checkpoint notes --prompt "Dear"',
};

/** The settings of a run after defaults, config file and flags. */
interface Settings {
  base: string;
  data: string;
  valData: string | null;
  task: FinetuneState['task'];
  mode: FinetuneState['mode'];
  out: string;
  steps: number;
  batchSize: number;
  blockSize: number | null;
  maxLength: number | null;
  lr: number;
  minLrRatio: number;
  warmup: number;
  weightDecay: number;
  gradAccum: number;
  clip: number;
  autocast: 'bf16' | 'off';
  loraRank: number;
  loraAlpha: number;
  loraDropout: number;
  loraTargets: string[];
  promptTokens: number;
  promptInit: string | null;
  textField: string;
  labelField: string;
  evalInterval: number;
  evalBatches: number | null;
  seed: number;
  device: string;
  threads: number | null;
  resume: boolean;
  progress: 'bar' | 'log' | 'none' | 'auto';
}

function settings(v: OptionValues): Settings {
  if (v.base === undefined) throw new UsageError('--base is required (a kiln train run folder or checkpoint, or a Hugging Face GPT-2 folder)');
  if (v.data === undefined) throw new UsageError('--data is required (a text file for --task lm, JSON Lines of {"text", "label"} records for --task classify)');
  const mode = (v.mode as Settings['mode']) ?? 'full';
  const task = (v.task as Settings['task']) ?? 'lm';
  // Options of another mode or task would be ignored: say so rather than train without them.
  const onlyFor: Array<[string[], boolean, string]> = [
    [['lora-rank', 'lora-alpha', 'lora-dropout', 'lora-targets'], mode === 'lora', '--mode lora'],
    [['prompt-tokens', 'prompt-init'], mode === 'prompt', '--mode prompt'],
    [['max-length', 'text-field', 'label-field'], task === 'classify', '--task classify'],
    [['block-size'], task === 'lm', '--task lm'],
  ];
  for (const [flags, applies, where] of onlyFor) {
    const given = flags.find((f) => v[camel(f)] !== undefined);
    if (given && !applies) throw new UsageError(`--${given} applies to ${where} only`);
  }
  const targets = ((v.loraTargets as string | undefined) ?? 'attn.inProj').split(',').map((t) => t.trim()).filter(Boolean);
  if (!targets.length) throw new UsageError('--lora-targets needs at least one layer, e.g. attn.inProj');
  return {
    base: v.base as string,
    data: v.data as string,
    valData: (v.valData as string | undefined) ?? null,
    task,
    mode,
    out: (v.out as string) ?? 'kiln-finetune',
    steps: (v.steps as number) ?? 300,
    batchSize: (v.batchSize as number) ?? 16,
    blockSize: (v.blockSize as number) ?? null,
    maxLength: (v.maxLength as number) ?? null,
    lr: (v.lr as number) ?? DEFAULT_LR[mode],
    minLrRatio: (v.minLrRatio as number) ?? 0.1,
    warmup: (v.warmup as number) ?? 20,
    weightDecay: (v.weightDecay as number) ?? 0,
    gradAccum: (v.gradAccum as number) ?? 1,
    clip: (v.clip as number) ?? 1,
    autocast: (v.autocast as Settings['autocast']) ?? 'off',
    loraRank: (v.loraRank as number) ?? 8,
    loraAlpha: (v.loraAlpha as number) ?? 16,
    loraDropout: (v.loraDropout as number) ?? 0,
    loraTargets: targets,
    promptTokens: (v.promptTokens as number) ?? 20,
    promptInit: (v.promptInit as string) ?? null,
    textField: (v.textField as string) ?? 'text',
    labelField: (v.labelField as string) ?? 'label',
    evalInterval: (v.evalInterval as number) ?? 50,
    evalBatches: (v.evalBatches as number) ?? null,
    seed: (v.seed as number) ?? 0,
    device: (v.device as string) ?? 'cpu',
    threads: (v.threads as number) ?? null,
    resume: (v.resume as boolean) ?? false,
    progress: (v.progress as Settings['progress']) ?? 'auto',
  };
}

/** The model fine-tuning starts from, on device. */
interface Base {
  gpt: GPT;
  config: GPTConfig;
  tokenizerState: TokenizerState;
  /** 'hf': a Hugging Face folder (savePretrained writes the result back in its layout). */
  kind: 'kiln' | 'hf';
  description: string;
}

/**
 * Reads --base: a kiln checkpoint (a file, or a folder holding checkpoint.safetensors) of kiln train
 * or of a language-model fine-tuning (full, or LoRA merged into the weights), or a Hugging Face
 * GPT-2 folder. Anything else is a UsageError saying what was expected.
 */
function loadBase(where: string, device: Device): Base {
  if (!fs.existsSync(where)) throw new UsageError(`--base: no such file or folder: ${where}`);
  const isDir = fs.statSync(where).isDirectory();
  const has = (f: string) => fs.existsSync(path.join(where, f));
  if (isDir && !has(CHECKPOINT_FILE)) {
    if (!has('config.json') && !has('model.safetensors')) {
      throw new UsageError(`--base ${where} is neither a kiln run folder (${CHECKPOINT_FILE}) nor a Hugging Face GPT-2 folder (config.json and model.safetensors)`);
    }
    const gpt = GPT.fromPretrained(where, { device });
    if (gpt.config.vocabSize < GPT2_VOCAB) {
      gpt.dispose();
      throw new UsageError(`--base ${where}: its vocabulary has ${gpt.config.vocabSize} tokens, fewer than the GPT-2 tokenizer's ${GPT2_VOCAB} (kiln pairs Hugging Face GPT-2 folders with that tokenizer)`);
    }
    return { gpt, config: gpt.config, tokenizerState: { type: 'gpt2' }, kind: 'hf', description: `Hugging Face GPT-2 folder ${where}` };
  }
  if (!isDir && !where.endsWith('.safetensors')) throw new UsageError(`--base ${where} is not a checkpoint (a .safetensors file of kiln train or kiln finetune, or a folder)`);
  const file = isDir ? path.join(where, CHECKPOINT_FILE) : where;
  const run = loadRun(file, device, 'kiln finetune');
  const ft = run.finetune;
  if (ft && (ft.task !== 'lm' || ft.mode === 'prompt')) {
    run.module.dispose();
    throw new UsageError(`--base ${where} is a ${ft.mode} fine-tuning for ${ft.task === 'lm' ? 'language modelling' : 'classification'}; start from its base (${ft.base}) or from a language model`);
  }
  if (ft?.mode === 'lora') {
    try {
      lora.mergeAndUnload(run.gpt);
    } catch (e) {
      run.module.dispose();
      throw new UsageError(`--base ${where}: its LoRA adapters cannot be merged into the weights (${(e as Error).message.replace(/^[\w.]+: /, '')}); start from its base (${ft.base})`);
    }
    for (const p of run.gpt.parameters()) p.requiresGrad = true;   // apply() had frozen the base
  }
  const what = ft ? `a ${ft.mode === 'lora' ? 'LoRA (merged)' : 'full'} fine-tuning of ${ft.base}` : 'kiln train';
  return { gpt: run.gpt, config: run.config, tokenizerState: run.tokenizerState, kind: 'kiln', description: `${file} (${what}, step ${run.step})` };
}

/** What the Trainer trains on, by task. */
interface TaskData {
  train: BatchSource<unknown>;
  val: BatchSource<unknown>;
  description: string;
  unit: 'token' | 'char' | 'sample';
  /** Files to close when the run ends. */
  close: () => void;
  /** classify: the class names. */
  labels?: string[];
}

/** --task lm: the text (and --val-data, else a 10% split) tokenized into token files in the out folder. */
async function lmData(s: Settings, tokenizer: Tokenizer, blockSize: number, unit: 'token' | 'char'): Promise<TaskData> {
  const made = !fs.existsSync(s.out);
  fs.mkdirSync(s.out, { recursive: true });
  try {
    return await tokenizeLm(s, tokenizer, blockSize, unit);
  } catch (e) {
    // Text too short (or unreadable): leave --out as it was.
    for (const f of ['tokens.tok', 'train.tok', 'val.tok']) fs.rmSync(path.join(s.out, f), { force: true });
    if (made) fs.rmSync(s.out, { recursive: true, force: true });
    throw e;
  }
}

async function tokenizeLm(s: Settings, tokenizer: Tokenizer, blockSize: number, unit: 'token' | 'char'): Promise<TaskData> {
  let train: TokenFileDataset, val: TokenFileDataset, count: number;
  if (s.valData) {
    const tok = (file: string, name: string) => tokenizeFile(file, path.join(s.out, name), tokenizer);
    count = await tok(s.data, 'train.tok');
    const nVal = await tok(s.valData, 'val.tok');
    for (const [file, n] of [[s.data, count], [s.valData, nVal]] as const) {
      if (n < blockSize + 1) throw new UsageError(`${file} has ${n} tokens; at least ${blockSize + 1} are needed with --block-size ${blockSize}`);
    }
    train = new TokenFileDataset(path.join(s.out, 'train.tok'), { blockSize, seed: s.seed });
    val = new TokenFileDataset(path.join(s.out, 'val.tok'), { blockSize });
  } else {
    ({ train, val, count } = await tokenize(s.data, tokenizer, { blockSize, seed: s.seed }, s.out, 0));
  }
  return {
    train: windowSampler(train, s.batchSize),
    val: new DataLoader(val, { batchSize: s.batchSize }),
    description: `${s.data}: ${formatCount(count)} ${unit}s`,
    unit,
    close: () => {
      train.close();
      val.close();
    },
  };
}

/** --task classify: labelled texts tokenized and cut to maxLength; validation from --val-data or a seeded 10% split. */
function classifyData(s: Settings, tokenizer: Tokenizer, maxLength: number, say: (l: string) => void): TaskData {
  const fields = { text: s.textField, label: s.labelField };
  const data = readLabelled(s.data, fields, true);
  const labels = classNames(data.labels);
  if (labels.length < 2) throw new UsageError(`${s.data} has one class (${labels[0]}): classification needs two or more`);
  let { examples: train, empty } = encodeExamples(tokenizer, data, labels, maxLength, s.data);
  let val: Example[];
  if (s.valData) {
    const v = encodeExamples(tokenizer, readLabelled(s.valData, fields, true), labels, maxLength, s.valData);
    val = v.examples;
    empty += v.empty;
  } else {
    const order = new Rng(s.seed, 1).permutation(train.length);
    const nVal = Math.max(1, Math.floor(train.length * 0.1));
    const all = train;
    val = Array.from(order.subarray(0, nVal), (i) => all[i]);
    train = Array.from(order.subarray(nVal), (i) => all[i]);
  }
  if (!train.length || !val.length) {
    throw new UsageError(`${s.data}: too few texts to train and validate (${train.length} and ${val.length})${empty ? `; ${empty} had no tokens the base model knows` : ''}`);
  }
  if (empty) say(`note: ${plural(empty, 'text')} without tokens left out`);
  const counts = labels.map((l, i) => `${l} ${train.filter((e) => e.label === i).length}`).join(', ');
  return {
    train: exampleLoader(train, s.batchSize, true, s.seed),
    val: exampleLoader(val, s.batchSize, false),
    description: `${s.data}: ${train.length} texts for training (${counts}), ${val.length} for validation${s.valData ? ` (${s.valData})` : ''}; at most ${maxLength} tokens each`,
    unit: 'sample',
    close: () => {},
    labels,
  };
}

/** The fine-tuning and model config a checkpoint in --out holds, for --resume to check against. */
function savedSetup(file: string): { model: unknown; finetune: Partial<FinetuneState> | undefined } {
  try {
    const state = JSON.parse(readSafetensorsHeader(file).metadata['kiln.state'] ?? '{}') as { extra?: { model?: unknown; finetune?: FinetuneState } };
    return { model: state.extra?.model, finetune: state.extra?.finetune };
  } catch (e) {
    if (e instanceof SyntaxError) return { model: undefined, finetune: undefined };
    throw e;
  }
}

/** Peak resident memory of this process so far, in MiB. */
const peakRssMiB = () => process.resourceUsage().maxRSS / 1024;

export async function finetune(argv: string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const started = Date.now();
  const { values, help } = parse(FINETUNE, argv);
  if (help) {
    out.write(helpText(FINETUNE));
    return 0;
  }
  const s = settings(withConfig(FINETUNE, values));
  const device = resolveDevice(s.device);
  const say = (line = '') => void out.write(`${line}\n`);
  const ckptPath = path.join(s.out, CHECKPOINT_FILE);
  if (s.resume && !fs.existsSync(ckptPath)) throw new UsageError(`--resume: no checkpoint to resume (${ckptPath} not found)`);
  if (fs.existsSync(s.base)) {
    const baseDir = fs.statSync(s.base).isDirectory() ? s.base : path.dirname(s.base);
    if (path.resolve(baseDir) === path.resolve(s.out)) throw new UsageError(`--out ${s.out} is where the base model is: fine-tuning would overwrite it; choose another --out`);
  }
  for (const f of [s.data, s.valData]) {
    if (f === null) continue;
    if (!fs.existsSync(f)) throw new UsageError(`no such file: ${f}`);
    if (!fs.statSync(f).isFile()) throw new UsageError(`not a file: ${f}`);
    if (fs.statSync(f).size === 0) throw new UsageError(`${f} is empty`);
  }
  if (s.threads) kiln.setNumThreads(s.threads);
  kiln.manualSeed(s.seed);

  const base = loadBase(s.base, device);
  const P = s.mode === 'prompt' ? s.promptTokens : 0;
  const room = base.config.blockSize - P;
  if (room < 1) throw new UsageError(`--prompt-tokens ${P} leaves no room in the base's context of ${base.config.blockSize}`);
  const length = (given: number | null, flag: string) => {
    const n = given ?? Math.min(room, 128);
    if (n > room) throw new UsageError(`--${flag} ${n}${P ? ` plus ${P} prompt tokens` : ''} exceeds the base's context of ${base.config.blockSize}`);
    return n;
  };
  const { tokenizer, dropped } = lenientTokenizer(base.tokenizerState);
  const blockSize = s.task === 'lm' ? length(s.blockSize, 'block-size') : null;
  const maxLength = s.task === 'classify' ? length(s.maxLength, 'max-length') : null;
  // Labelled data first (the classes shape the model); text after the model is built, so that a bad
  // option fails before the text is tokenized into --out.
  const labelledData = s.task === 'classify' ? classifyData(s, tokenizer, maxLength!, say) : null;

  const ft: FinetuneState = {
    task: s.task, mode: s.mode, base: s.base,
    ...(labelledData ? { labels: labelledData.labels!, maxLength: maxLength! } : {}),
    ...(s.mode === 'lora' ? { lora: { targets: s.loraTargets, rank: s.loraRank, alpha: s.loraAlpha, dropout: s.loraDropout } } : {}),
    ...(s.mode === 'prompt' ? { prompt: { numVirtualTokens: P } } : {}),
  };
  if (s.resume) {
    const saved = savedSetup(ckptPath);
    const { base: _b, ...want } = ft;
    const { base: _s, ...had } = saved.finetune ?? {};
    if (JSON.stringify(had) !== JSON.stringify(want) || JSON.stringify(saved.model) !== JSON.stringify(base.config)) {
      throw new UsageError(saved.finetune
        ? `--resume: ${ckptPath} holds another fine-tuning (${JSON.stringify(had)}) than these options make (${JSON.stringify(want)})`
        : `--resume: ${ckptPath} is not a fine-tuning (a run of kiln train?)`);
    }
  }
  let initTokens: number[] | undefined;
  if (s.promptInit !== null) {
    initTokens = tokenizer.encode(s.promptInit);
    if (!initTokens.length) throw new UsageError('--prompt-init has no tokens the base model knows');
  }
  let tuned;
  try {
    tuned = wrapForFinetune(base.gpt, ft, initTokens);
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/^[\w.]+: /, ''));
  }
  const data = labelledData ?? (await lmData(s, tokenizer, blockSize!, base.tokenizerState.type === 'gpt2' ? 'token' : 'char'));
  warnDropped('finetune', dropped);
  const model: Module = tuned.module;
  const trainable = model.parameters().filter((p) => p.requiresGrad);
  const total = model.numParameters();
  const nTrainable = model.numParameters({ trainableOnly: true });
  const groups = [
    { params: trainable.filter((p) => p.ndim >= 2), weightDecay: s.weightDecay },
    { params: trainable.filter((p) => p.ndim < 2), weightDecay: 0 },
  ].filter((g) => g.params.length);
  const optimizer = new AdamW(groups, { lr: s.lr });

  const what = s.mode === 'full' ? 'all weights' : s.mode === 'lora'
    ? `LoRA rank ${s.loraRank}, alpha ${num(s.loraAlpha)} on ${s.loraTargets.join(', ')}${s.task === 'classify' ? ' (and the head)' : ''}`
    : `a soft prompt of ${P} tokens${s.task === 'classify' ? ' (and the head)' : ''}`;
  const c = base.config;
  say(`base: ${base.description}: GPT, ${plural(c.nLayer, 'layer')}, ${c.nEmbd} wide, context ${c.blockSize}`);
  say(`data: ${data.description}`);
  say(`fine-tuning (${s.task === 'lm' ? 'language model' : `classifier over ${data.labels!.length} classes`}): ${what}; ` +
    `${formatCount(nTrainable)} of ${formatCount(total)} parameters trainable (${pct(nTrainable, total)})`);
  say(`training: ${s.steps} steps of ${s.gradAccum > 1 ? `${s.gradAccum} x ` : ''}${s.batchSize} ${s.task === 'lm' ? `x ${blockSize} tokens` : 'texts'}, ` +
    `AdamW lr ${num(s.lr)} (warmup ${Math.min(s.warmup, s.steps)}, cosine to ${num(s.lr * s.minLrRatio)}), clip ${num(s.clip)}, ` +
    `${device === 'cpu' ? plural(kiln.buildInfo().threads, 'thread') : `on ${device}`}\n`);

  const trainer = new Trainer({
    model,
    optimizer,
    device,
    unit: data.unit,
    scheduler: (o, n) => new WarmupCosineLR(o, { warmupSteps: Math.min(s.warmup, n), totalSteps: n, minLrRatio: s.minLrRatio }),
    gradAccumulation: s.gradAccum,
    clipGradNorm: s.clip,
    autocast: s.autocast === 'bf16' ? 'bfloat16' : false,
    evalInterval: s.evalInterval,
    evalBatches: s.evalBatches ?? (s.task === 'lm' ? 20 : null),
    checkpointInterval: s.evalInterval,
    logInterval: Math.max(1, Math.min(50, Math.round(s.steps / 20))),
    outDir: s.out,
    progress: s.progress,
    extraState: () => ({ model: base.config, tokenizer: base.tokenizerState, finetune: ft }),
    title: `kiln finetune (${s.mode}, ${s.task}) on ${path.basename(s.data)}`,
  });
  const accuracy = (m: Module, batch: unknown) => {
    const [x, y, o] = batch as ClassifyBatch;
    return { accuracy: (m.forward(x, null, o) as { logits: kiln.Tensor }).logits.argmax(-1).eq(y).to('float32').mean().item() };
  };
  let result: FitResult;
  try {
    result = await fitStoppingOnSigint(trainer, {
      train: data.train,
      val: data.val,
      steps: s.steps,
      resume: s.resume ? ckptPath : null,
      ...(s.task === 'classify' ? { evalMetrics: accuracy } : {}),
    });
  } finally {
    data.close();
  }

  const exported: string[] = [];
  if (s.task === 'lm' && s.mode === 'lora') {
    lora.saveAdapter(tuned.gpt, path.join(s.out, 'adapter'), { baseModel: s.base });
    exported.push(`LoRA adapter (PEFT layout) ${path.join(s.out, 'adapter')}`);
  }
  if (s.task === 'lm' && s.mode === 'full' && base.kind === 'hf') {
    tuned.gpt.savePretrained(path.join(s.out, 'hf'));
    exported.push(`Hugging Face GPT-2 folder ${path.join(s.out, 'hf')}`);
  }
  const seconds = (Date.now() - started) / 1000;
  const summary = {
    task: s.task, mode: s.mode, base: s.base, steps: result.step,
    trainableParameters: nTrainable, totalParameters: total,
    valLoss: result.valLoss, ...Object.fromEntries(Object.entries(result.valMetrics).map(([k, v]) => [`val${k[0].toUpperCase()}${k.slice(1)}`, v])),
    trainSeconds: result.elapsed, throughput: result.throughput, unit: result.unit,
    peakRssMiB: Math.round(peakRssMiB()),
    ...(device === 'cpu' ? {} : { peakDeviceMiB: Math.round(kiln.cuda.memoryStats(device).peakAllocated / 2 ** 20) }),
  };
  fs.writeFileSync(path.join(s.out, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);

  const labels = unitLabels(result.unit);
  const from = result.initialValLoss !== null ? `${result.initialValLoss.toFixed(3)} -> ` : '';
  say(`\nvalidation loss: ${from}${result.valLoss?.toFixed(3) ?? '-'}${labels.loss ? ` ${labels.loss}` : ''} after ${result.step} steps`);
  if (result.valMetrics.accuracy !== undefined) say(`validation accuracy: ${(100 * result.valMetrics.accuracy).toFixed(1)}%`);
  say(`training throughput ${formatCount(result.throughput)} ${labels.rate}; peak memory ${summary.peakRssMiB} MiB (RSS)${'peakDeviceMiB' in summary ? `, ${summary.peakDeviceMiB} MiB on ${device}` : ''}`);
  say(`\nsaved ${ckptPath}, ${path.join(s.out, 'metrics.jsonl')}, ${path.join(s.out, 'summary.json')}, loss curve ${path.join(s.out, 'loss.svg')}`);
  for (const e of exported) say(`exported ${e}`);
  say(s.task === 'classify' ? `classify: kiln classify --checkpoint ${s.out} --text "..." (or --data file.jsonl)` : `sample: kiln generate --checkpoint ${s.out} --prompt "..."`);
  say(`done in ${formatDuration(seconds)}`);
  model.dispose();
  optimizer.dispose();
  return result.stopped ? 130 : 0;
}
