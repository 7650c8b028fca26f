// `kiln train`: trains a GPT on the CPU or a GPU. Without --data the text is kiln's generated toy language
// (lib/train/corpus.ts), and the command shows what was learned: samples before and after training,
// the share of grammatical sentences and correct sums among generated lines, and the validation loss
// against what guessing would give. With --data the text is tokenized (characters or GPT-2 BPE) into
// token files in the output folder, split 90/10 into training and validation data.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as kiln from '../index';
import { DataLoader } from '../data/dataloader';
import { Rng } from '../data/rng';
import { TokenFile, TokenFileDataset, TokenFileWriter, tokenizeFile } from '../data/token_file';
import { CharTokenizer, Tokenizer } from '../data/tokenizer';
import { FormatError } from '../errors';
import { readSafetensorsHeader } from '../io/safetensors';
import { GPT, GPTConfig } from '../nn/gpt';
import { AdamW } from '../optim/adam';
import { WarmupCosineLR } from '../optim/lr_scheduler';
import { checkToyLine, scoreToyText, toyCorpus, unigramEntropy } from '../train/corpus';
import { windowSampler } from '../train/lm';
import { formatCount, formatDuration } from '../train/progress';
import { unitLabels } from '../train/progress';
import { CHECKPOINT_FILE, Trainer, resumeNotice } from '../train/trainer';
import type { BatchSampler, FitOptions, FitResult } from '../train/trainer';
import type { Module } from '../nn/module';
import { CommandSpec, OptionValues, UsageError, helpText, parse, withConfig } from './args';
import { DEVICE_OPTION, TokenizerState, resolveDevice, sampleText, tokenizerFromState } from './model';

export const TRAIN: CommandSpec = {
  name: 'train',
  usage: 'kiln train [--data file.txt] [options]',
  summary:
    'Trains a small GPT, on the CPU or a GPU (--device). Without --data it trains on a toy language\n' +
    'that kiln generates (sentences with agreement rules, and digit arithmetic), then shows what the\n' +
    'model learned.',
  options: [
    { name: 'data', kind: 'string', value: '<file>', help: 'UTF-8 text file to train on', defaultText: "kiln's toy language" },
    { name: 'tokenizer', kind: 'string', value: '<name>', choices: ['char', 'gpt2'], help: 'one token per character, or GPT-2 BPE', defaultText: 'char' },
    { name: 'config', kind: 'string', value: '<file.json>', help: 'JSON object of options below, e.g. {"nLayer": 4, "steps": 2000}; flags win', inConfig: false },
    { name: 'out', kind: 'string', value: '<dir>', help: 'folder for the checkpoint, metrics.jsonl and loss.svg', defaultText: 'kiln-run' },
    { name: 'steps', kind: 'int', value: '<n>', min: 1, help: 'optimizer steps', defaultText: '1000' },
    { name: 'batch-size', kind: 'int', value: '<n>', min: 1, help: 'sequences per micro-batch', defaultText: '32' },
    { name: 'block-size', kind: 'int', value: '<n>', min: 1, help: 'context length in tokens', defaultText: '32, or 64 with --data' },
    { name: 'n-layer', kind: 'int', value: '<n>', min: 1, help: 'Transformer blocks', defaultText: '2' },
    { name: 'n-head', kind: 'int', value: '<n>', min: 1, help: 'attention heads', defaultText: '4' },
    { name: 'n-embd', kind: 'int', value: '<n>', min: 1, help: 'embedding width (a multiple of --n-head)', defaultText: '64' },
    { name: 'dropout', kind: 'number', value: '<p>', min: 0, max: 1, help: 'dropout probability', defaultText: '0' },
    { name: 'lr', kind: 'number', value: '<x>', min: 0, minExclusive: true, help: 'peak learning rate (AdamW)', defaultText: '6e-3' },
    { name: 'min-lr-ratio', kind: 'number', value: '<x>', min: 0, max: 1, help: 'final learning rate as a fraction of --lr (cosine decay)', defaultText: '0.1' },
    { name: 'warmup', kind: 'int', value: '<n>', min: 0, help: 'steps of linear learning-rate warmup', defaultText: '30' },
    { name: 'weight-decay', kind: 'number', value: '<x>', min: 0, help: 'AdamW weight decay of weight matrices', defaultText: '0.1' },
    { name: 'grad-accum', kind: 'int', value: '<n>', min: 1, help: 'micro-batches per optimizer step', defaultText: '1' },
    { name: 'clip', kind: 'number', value: '<x>', min: 0, minExclusive: true, help: 'clip the gradient norm to this', defaultText: '1' },
    { name: 'autocast', kind: 'string', value: '<dtype>', choices: ['bf16', 'off'], help: 'run the forward under bfloat16 autocast (float32 master weights)', defaultText: 'off' },
    { name: 'eval-interval', kind: 'int', value: '<n>', min: 1, help: 'steps between validation runs (and checkpoints)', defaultText: '100' },
    { name: 'eval-batches', kind: 'int', value: '<n>', min: 1, help: 'validation batches per run', defaultText: '20' },
    { name: 'seed', kind: 'int', value: '<n>', min: 0, help: 'seed of initialization, data order and sampling', defaultText: '0' },
    DEVICE_OPTION,
    { name: 'zero', kind: 'boolean', help: 'under a launcher: shard the AdamW state across the processes (ZeRO stage 1)', inConfig: true },
    { name: 'cuda-graph', kind: 'boolean', help: 'on a GPU: capture the training step as a CUDA graph after two steps and replay it (needs --dropout 0, one process)', inConfig: true },
    { name: 'threads', kind: 'int', value: '<n>', min: 1, help: 'CPU threads', defaultText: 'all cores' },
    { name: 'resume', kind: 'boolean', help: `continue the run saved in --out (${CHECKPOINT_FILE}); its LR schedule keeps the steps it was planned for` },
    { name: 'progress', kind: 'string', value: '<mode>', choices: ['bar', 'log', 'none'], help: 'progress display', defaultText: 'bar on a terminal, else log' },
    { name: 'sample-tokens', kind: 'int', value: '<n>', min: 0, help: 'tokens per sample shown before and after training (0: none)', defaultText: '40' },
  ],
  epilog:
    'Examples:\n' +
    '  kiln train                                  # the toy language, about a minute on 2 cores\n' +
    '  kiln train --device cuda --n-layer 6 --n-embd 384 --block-size 256 --data input.txt\n' +
    '  kiln train --data input.txt --steps 2000 --n-layer 4 --n-embd 128 --out shakespeare\n' +
    '  kiln train --data input.txt --tokenizer gpt2 --config run.json\n' +
    '  kiln generate --checkpoint kiln-run --prompt "the cat"',
};

/** The settings of a run after defaults, config file and flags. */
interface Settings {
  data: string | null;
  tokenizer: 'char' | 'gpt2';
  out: string;
  steps: number;
  batchSize: number;
  blockSize: number;
  nLayer: number;
  nHead: number;
  nEmbd: number;
  dropout: number;
  lr: number;
  minLrRatio: number;
  warmup: number;
  weightDecay: number;
  gradAccum: number;
  clip: number;
  autocast: 'bf16' | 'off';
  evalInterval: number;
  evalBatches: number;
  seed: number;
  device: string;
  threads: number | null;
  resume: boolean;
  zero: boolean;
  cudaGraph: boolean;
  progress: 'bar' | 'log' | 'none' | 'auto';
  sampleTokens: number;
}

function settings(v: OptionValues): Settings {
  const data = (v.data as string | undefined) ?? null;
  const s: Settings = {
    data,
    tokenizer: (v.tokenizer as 'char' | 'gpt2') ?? 'char',
    out: (v.out as string) ?? 'kiln-run',
    steps: (v.steps as number) ?? 1000,
    batchSize: (v.batchSize as number) ?? 32,
    blockSize: (v.blockSize as number) ?? (data ? 64 : 32),
    nLayer: (v.nLayer as number) ?? 2,
    nHead: (v.nHead as number) ?? 4,
    nEmbd: (v.nEmbd as number) ?? 64,
    dropout: (v.dropout as number) ?? 0,
    lr: (v.lr as number) ?? 6e-3,
    minLrRatio: (v.minLrRatio as number) ?? 0.1,
    warmup: (v.warmup as number) ?? 30,
    weightDecay: (v.weightDecay as number) ?? 0.1,
    gradAccum: (v.gradAccum as number) ?? 1,
    clip: (v.clip as number) ?? 1,
    autocast: (v.autocast as Settings['autocast']) ?? 'off',
    evalInterval: (v.evalInterval as number) ?? 100,
    evalBatches: (v.evalBatches as number) ?? 20,
    seed: (v.seed as number) ?? 0,
    device: (v.device as string) ?? 'cpu',
    threads: (v.threads as number) ?? null,
    resume: (v.resume as boolean) ?? false,
    zero: (v.zero as boolean) ?? false,
    cudaGraph: (v.cudaGraph as boolean) ?? false,
    progress: (v.progress as Settings['progress']) ?? 'auto',
    sampleTokens: (v.sampleTokens as number) ?? 40,
  };
  if (s.nEmbd % s.nHead !== 0) throw new UsageError(`--n-embd (${s.nEmbd}) must be a multiple of --n-head (${s.nHead})`);
  if (!s.data && s.tokenizer !== 'char') throw new UsageError('--tokenizer gpt2 needs --data (the toy language is tokenized by characters)');
  return s;
}

/** Tokenized text ready for training. */
export interface Prepared {
  tokenizer: Tokenizer;
  tokenizerState: TokenizerState;
  train: TokenFileDataset;
  val: TokenFileDataset;
  /** Tokens in the text, and how many distinct ids they use. */
  count: number;
  distinct: number;
  /** The toy language's text (null with --data). */
  toyText: string | null;
  description: string;
}

/** The distinct characters of a text file, read in pieces, sorted by code point. */
async function charsOf(file: string): Promise<string[]> {
  const set = new Set<string>();
  for await (const piece of fs.createReadStream(file, { encoding: 'utf8' })) for (const c of piece as string) set.add(c);
  return [...set].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
}

/** Copies tokens [start, end) of an open token file into a new one, marking the ids it meets in seen. */
function copyTokens(src: TokenFile, start: number, end: number, dest: string, seen: Uint8Array): void {
  const w = new TokenFileWriter(dest, { vocabSize: src.vocabSize, dtype: src.dtype });
  try {
    const chunk = 1 << 20;
    for (let s = start; s < end; s += chunk) {
      const ids = src.read(s, Math.min(chunk, end - s));
      for (const id of ids) seen[id] = 1;
      w.write(ids);
    }
    w.close();
  } catch (e) {
    w.abort();
    throw e;
  }
}

/**
 * Tokenizes the text file into <dir>/tokens.tok and splits it into train.tok (90%) and val.tok (10%)
 * (also used by kiln finetune --task lm);
 * the training windows are sampled with --seed and stream `rank` (each data-parallel rank its own).
 */
export async function tokenize(
  textFile: string, tokenizer: Tokenizer, s: { blockSize: number; seed: number }, dir: string, rank: number,
): Promise<Pick<Prepared, 'train' | 'val' | 'count' | 'distinct'>> {
  const all = path.join(dir, 'tokens.tok');
  const count = await tokenizeFile(textFile, all, tokenizer);
  const need = s.blockSize + 1;
  const nVal = Math.max(need, Math.floor(count * 0.1));
  if (count - nVal < need) {
    throw new UsageError(`${textFile} has ${count} tokens; training and validation need at least ${need} each with --block-size ${s.blockSize}`);
  }
  const f = TokenFile.open(all);
  const seen = new Uint8Array(tokenizer.vocabSize);
  try {
    copyTokens(f, 0, count - nVal, path.join(dir, 'train.tok'), seen);
    copyTokens(f, count - nVal, count, path.join(dir, 'val.tok'), seen);
  } finally {
    f.close();
  }
  fs.rmSync(all);
  return {
    train: new TokenFileDataset(path.join(dir, 'train.tok'), { blockSize: s.blockSize, seed: s.seed, stream: rank }),
    val: new TokenFileDataset(path.join(dir, 'val.tok'), { blockSize: s.blockSize }),
    count,
    distinct: seen.reduce((n, x) => n + x, 0),
  };
}

/** The training text tokenized into dir (--out, or a data-parallel rank's own folder). */
async function prepare(s: Settings, dir: string, rank: number): Promise<Prepared> {
  if (!s.data) {
    const text = toyCorpus({ lines: 20000, seed: 1234 });
    const file = path.join(dir, 'corpus.txt');
    fs.writeFileSync(file, text);
    const tokenizer = CharTokenizer.fromText(text);
    return {
      tokenizer, tokenizerState: { type: 'char', chars: [...tokenizer.chars] }, ...(await tokenize(file, tokenizer, s, dir, rank)), toyText: text,
      description: `kiln's toy language: 20000 generated lines, ${formatCount(text.length)} characters (${file})`,
    };
  }
  const tokenizerState: TokenizerState = s.tokenizer === 'gpt2' ? { type: 'gpt2' } : { type: 'char', chars: await charsOf(s.data) };
  const tokenizer = tokenizerFromState(tokenizerState);
  const tokens = await tokenize(s.data, tokenizer, s, dir, rank);
  return {
    tokenizer, tokenizerState, ...tokens, toyText: null,
    description: `${s.data}: ${formatCount(tokens.count)} tokens (${s.tokenizer} tokenizer, vocabulary ${tokenizer.vocabSize})`,
  };
}

/**
 * A warning when most of the GPT-2 vocabulary never occurs in the text: the embedding and output rows
 * of those ids (most of a small model's parameters) never learn anything, and the loss starts at
 * log(50257) however little text there is. Character tokens suit such a corpus better.
 */
function vocabularyWarning(data: Prepared, file: string): string | null {
  const V = data.tokenizer.vocabSize;
  if (data.tokenizerState.type !== 'gpt2' || data.distinct >= V / 2) return null;
  return (
    `warning: ${file} uses ${data.distinct} of the GPT-2 tokenizer's ${V} token ids (${pct(data.distinct, V)}) in ${formatCount(data.count)} tokens, ` +
    `so most of the model's embedding and output rows will never be trained. For a corpus this small, --tokenizer char is the better choice.`
  );
}

/** Prompts that show the toy language's rules: agreement, a/an, irregular plurals, sums. */
const TOY_PROMPTS = ['the cat ', 'two ', 'a ', 'these mice ', 'every ', '3 + 4 =', '9 - 2 ='];

/** Each prompt's continuation up to the end of its line, marked by whether the line follows the rules. */
function toySamples(model: GPT, tok: Tokenizer, tokens: number): string[] {
  return TOY_PROMPTS.map((p) => {
    const [text] = sampleText(model, tok, tok.encode(p), 1, { maxTokens: tokens, temperature: 0.8 });
    const end = text.indexOf('\n', p.length);
    const line = end < 0 ? text : text.slice(0, end);
    return `  ${checkToyLine(line).valid ? '\u2713' : '\u2717'} ${JSON.stringify(line).slice(1, -1)}`;
  });
}

/** Grammatical sentences and correct sums among lines generated from the start of a line. */
function toyScore(model: GPT, tok: Tokenizer): { sentences: number; valid: number; facts: number; correct: number } {
  const texts = sampleText(model, tok, tok.encode('\n'), 8, { maxTokens: 120, temperature: 0.8 });
  const total = { sentences: 0, valid: 0, facts: 0, correct: 0 };
  for (const t of texts) {
    const s = scoreToyText(t.slice(1));
    total.sentences += s.sentences;
    total.valid += s.validSentences;
    total.facts += s.facts;
    total.correct += s.correctFacts;
  }
  return total;
}

/** What --resume needs from a checkpoint before loading it: the step, the planned steps and the model config. */
function savedRun(file: string): { step: number; plannedSteps: number | null; model: unknown } {
  let state: { trainer?: { step?: unknown; plannedSteps?: unknown }; extra?: { model?: unknown; finetune?: unknown } } = {};
  try {
    state = JSON.parse(readSafetensorsHeader(file).metadata['kiln.state'] ?? '{}');
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
  }
  const step = state.trainer?.step, planned = state.trainer?.plannedSteps;
  if (!Number.isSafeInteger(step)) throw new FormatError('kiln train', `${file} is not a checkpoint of kiln train (its state has no step)`);
  if (state.extra?.finetune !== undefined) throw new UsageError(`--resume: ${file} was written by kiln finetune; continue it with kiln finetune --resume`);
  return { step: step as number, plannedSteps: Number.isSafeInteger(planned) ? (planned as number) : null, model: state.extra?.model };
}

/**
 * The training sampler of data-parallel rank `rank`: on resume, rank 0 continues the saved sampler
 * state exactly; another rank continues from a generator seeded by that state on its own stream, so
 * the ranks keep drawing different windows at any world size.
 */
function rankSampler<B>(sampler: BatchSampler<B>, source: TokenFileDataset, rank: number): BatchSampler<B> {
  if (rank === 0) return sampler;
  return {
    ...sampler,
    loadStateDict: (saved: unknown) => {
      const [a = 0, b = 0] = (saved as { rng?: number[] } | null)?.rng ?? [];
      source.loadStateDict({ rng: new Rng((a >>> 0) * 2 ** 21 + ((b >>> 0) >>> 11), rank).getState() });
    },
  };
}

/**
 * trainer.fit(fo), where Ctrl-C stops after the current step and saves a checkpoint (a second
 * Ctrl-C quits at once).
 */
export async function fitStoppingOnSigint<M extends Module, B>(trainer: Trainer<M>, fo: FitOptions<M, B>): Promise<FitResult> {
  let interrupts = 0;
  const onSigint = () => {
    if (++interrupts > 1) process.exit(130);
    process.stderr.write('\nstopping after this step and saving a checkpoint (Ctrl-C again to quit at once)\n');
    trainer.stop();
  };
  process.on('SIGINT', onSigint);
  try {
    return await trainer.fit(fo);
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** A number without float noise (0.0006000000000000001 -> 0.0006). */
export const num = (x: number) => String(Number(x.toPrecision(6)));
export const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
export const pct = (a: number, b: number) => (b ? `${Math.round((100 * a) / b)}%` : '-');

export async function train(argv: string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const started = Date.now();
  const { values, help } = parse(TRAIN, argv);
  if (help) {
    out.write(helpText(TRAIN));
    return 0;
  }
  const s = settings(withConfig(TRAIN, values));
  const device = resolveDevice(s.device);
  // Under `kiln launch`, torchrun, srun or mpirun (a world of several processes): data parallel, each
  // rank sampling its own windows, rank 0 printing and writing --out.
  const distributed = kiln.dist.readDistEnv().worldSize > 1;
  if (s.zero && !distributed) throw new UsageError('--zero shards the optimizer across processes: run under kiln launch (or torchrun, srun, mpirun) with several');
  if (s.cudaGraph) {
    if (device === 'cpu') throw new UsageError('--cuda-graph needs --device cuda');
    if (distributed) throw new UsageError('--cuda-graph trains in one process; it cannot run under a launcher');
    if (s.dropout > 0) throw new UsageError(`--cuda-graph needs --dropout 0 (a graph would replay the same dropout masks), got ${s.dropout}`);
  }
  if (distributed) await kiln.dist.initProcessGroup({ backend: device === 'cpu' ? 'gloo' : 'nccl' });
  const rank = kiln.dist.rank();
  const isMain = rank === 0;
  const say = (line = '') => void (isMain && out.write(`${line}\n`));
  const ckptPath = path.join(s.out, CHECKPOINT_FILE);
  if (s.resume && !fs.existsSync(ckptPath)) throw new UsageError(`--resume: no checkpoint to resume (${ckptPath} not found)`);
  const saved = s.resume ? savedRun(ckptPath) : null;
  if (s.data) {
    if (!fs.existsSync(s.data)) throw new UsageError(`no such file: ${s.data}`);
    if (!fs.statSync(s.data).isFile()) throw new UsageError(`not a file: ${s.data}`);
    if (fs.statSync(s.data).size === 0) throw new UsageError(`${s.data} is empty`);
  }
  fs.mkdirSync(s.out, { recursive: true });
  // The other ranks tokenize into a folder of their own (so --data need only exist on every machine),
  // removed at the end; --resume reads the checkpoint on every rank (a shared --out, or a copy).
  const dataDir = isMain ? s.out : fs.mkdtempSync(path.join(os.tmpdir(), `kiln-train-rank${rank}-`));
  if (s.threads) kiln.setNumThreads(s.threads);
  kiln.manualSeed(s.seed);
  if (saved) say(resumeNotice(saved.step, s.steps, saved.plannedSteps, ckptPath));

  const data = await prepare(s, dataDir, rank);
  const warning = s.data && vocabularyWarning(data, s.data);
  if (warning && isMain) process.stderr.write(`kiln train: ${warning}\n`);
  const config: GPTConfig = { vocabSize: data.tokenizer.vocabSize, blockSize: s.blockSize, nLayer: s.nLayer, nHead: s.nHead, nEmbd: s.nEmbd, dropout: s.dropout };
  if (saved && JSON.stringify(saved.model) !== JSON.stringify(config)) {
    throw new UsageError(`--resume: ${ckptPath} holds a model ${JSON.stringify(saved.model)}, these options make ${JSON.stringify(config)}`);
  }
  const model = new GPT(config).to(device);
  const ddp = distributed ? new kiln.dist.DistributedDataParallel(model) : null;
  if (ddp) await ddp.ready;
  const params = model.parameters();
  // Weight decay on matrices only (not on biases and norm gains), as in GPT-2 training setups.
  const groups = [
    { params: params.filter((p) => p.ndim >= 2), weightDecay: s.weightDecay },
    { params: params.filter((p) => p.ndim < 2), weightDecay: 0 },
  ];
  const adam = { lr: s.lr, betas: [0.9, 0.99] as [number, number], capturable: s.cudaGraph };
  const optimizer = s.zero ? new kiln.dist.ZeroRedundancyOptimizer(groups, { optimizer: AdamW, ...adam }) : new AdamW(groups, adam);
  let where = device === 'cpu' ? plural(kiln.buildInfo().threads, 'thread') : `on ${device} (${kiln.cuda.getDeviceName(device)})`;
  if (distributed) where += ` per process; data parallel on ${kiln.dist.worldSize()} processes (${kiln.dist.worldGroup().backend})`;
  // A resumed run's schedule keeps the steps the run was first planned for (see Trainer.fit).
  const scheduleSteps = saved?.plannedSteps ?? s.steps;
  say(`data: ${data.description}`);
  if (data.toyText) {
    say('  e.g. ' + data.toyText.split('\n').slice(0, 4).join('  '));
  }
  say(`model: GPT, ${plural(s.nLayer, 'layer')}, ${s.nEmbd} wide, ${plural(s.nHead, 'head')}, context ${s.blockSize}; ${formatCount(model.numParameters())} parameters`);
  const tokensPerStep = s.batchSize * s.blockSize * s.gradAccum;
  say(
    `training: ${s.steps} steps of ${s.gradAccum > 1 ? `${s.gradAccum} x ` : ''}${s.batchSize} x ${s.blockSize} tokens (${formatCount(s.steps * tokensPerStep)} in all), ` +
      `AdamW lr ${num(s.lr)} (warmup ${Math.min(s.warmup, scheduleSteps)}, cosine to ${num(s.lr * s.minLrRatio)} at step ${scheduleSteps}), clip ${num(s.clip)}, ${s.autocast === 'bf16' ? 'bf16 autocast, ' : ''}${s.cudaGraph ? 'CUDA graph, ' : ''}${where}`,
  );

  const showSamples = (when: string) => {
    if (s.sampleTokens === 0) return;
    say(`\nsamples ${when} (temperature 0.8${data.toyText ? '; \u2713 follows the rules, \u2717 does not' : ''}):`);
    if (data.toyText) {
      for (const line of toySamples(model, data.tokenizer, s.sampleTokens)) say(line);
    } else {
      const start = data.tokenizerState.type === 'gpt2' ? [50256] : data.val.file.read(0, 1);
      const [text] = sampleText(model, data.tokenizer, Array.from(start), 1, { maxTokens: s.sampleTokens, temperature: 0.8 });
      const body = data.tokenizerState.type === 'gpt2' ? text.slice(data.tokenizer.decode([50256]).length) : text;
      say(body.split('\n').map((l) => `  ${l}`).join('\n'));
    }
  };
  const before = isMain && data.toyText && !s.resume ? toyScore(model, data.tokenizer) : null;
  if (!s.resume && isMain) showSamples('before training');
  say('');

  const trainer = new Trainer({
    model: ddp ?? model,
    optimizer,
    device,
    unit: data.tokenizerState.type === 'char' ? 'char' : 'token',
    scheduler: (o, total) => new WarmupCosineLR(o, { warmupSteps: Math.min(s.warmup, total), totalSteps: total, minLrRatio: s.minLrRatio }),
    gradAccumulation: s.gradAccum,
    clipGradNorm: s.clip,
    autocast: s.autocast === 'bf16' ? 'bfloat16' : false,
    cudaGraph: s.cudaGraph,
    evalInterval: s.evalInterval,
    evalBatches: s.evalBatches,
    checkpointInterval: s.evalInterval,
    logInterval: Math.max(1, Math.min(50, Math.round(s.steps / 20))),
    outDir: s.out,
    progress: s.progress,
    extraState: () => ({ model: config, tokenizer: data.tokenizerState }),
    title: data.toyText ? 'kiln train: GPT on the toy language' : `kiln train: GPT on ${path.basename(s.data!)}`,
  });
  let result;
  try {
    result = await fitStoppingOnSigint(trainer, {
      train: rankSampler(windowSampler(data.train, s.batchSize), data.train, rank),
      val: new DataLoader(data.val, { batchSize: s.batchSize }),
      steps: s.steps,
      resume: s.resume ? ckptPath : null,
    });
  } finally {
    data.train.close();
    if (!isMain) {
      data.val.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }
  // Every rank takes part in gathering what each holds of the sharded optimizer state.
  const shards = optimizer instanceof kiln.dist.ZeroRedundancyOptimizer ? await kiln.dist.worldGroup().allGatherObject(optimizer.memoryReport()) : null;
  if (!isMain) {
    kiln.dist.destroyProcessGroup();
    model.dispose();
    optimizer.dispose();
    return result.stopped ? 130 : 0;
  }

  showSamples(result.stopped ? `after ${result.step} steps (stopped early)` : 'after training');
  if (data.toyText) {
    const after = toyScore(model, data.tokenizer);
    say(`\ngenerated lines that follow the toy language's rules (temperature 0.8):`);
    say(`  grammatical sentences: ${before ? `${pct(before.valid, before.sentences)} before training, ` : ''}${pct(after.valid, after.sentences)} after (${after.valid} of ${after.sentences})`);
    say(`  correct sums:          ${before ? `${pct(before.correct, before.facts)} before training, ` : ''}${pct(after.correct, after.facts)} after (${after.correct} of ${after.facts})`);
  }
  data.val.close();
  const V = data.tokenizer.vocabSize;
  const labels = unitLabels(result.unit);
  const from = result.initialValLoss !== null ? `${result.initialValLoss.toFixed(3)} -> ` : '';
  say(`\nvalidation loss: ${from}${result.valLoss?.toFixed(3) ?? '-'} ${labels.loss} after ${result.step} steps`);
  const refs = [`guessing uniformly: ${Math.log(V).toFixed(3)}`];
  if (data.toyText) refs.push(`knowing only character frequencies: ${unigramEntropy(data.toyText).toFixed(3)}`);
  say(`  (for comparison, ${refs.join('; ')})`);
  const world = kiln.dist.worldSize();
  say(`  training throughput ${formatCount(result.throughput)} ${labels.rate}${world > 1 ? ` per process, ${formatCount(result.throughput * world)} ${labels.rate} on all ${world}` : ''}`);
  if (shards) {
    const bytes = (shards as Array<{ stateBytes: number }>).map((r) => r.stateBytes);
    say(`  optimizer state (ZeRO-1): ${bytes.map((b) => `${formatCount(b)}B`).join(', ')} on ranks 0-${bytes.length - 1}; ${formatCount(bytes.reduce((a, b) => a + b, 0))}B unsharded`);
  }
  say(`\nsaved ${path.join(s.out, CHECKPOINT_FILE)}, ${path.join(s.out, 'metrics.jsonl')}, loss curve ${path.join(s.out, 'loss.svg')}`);
  say(`sample more: kiln generate --checkpoint ${s.out} --prompt ${data.toyText ? '"the cat"' : '"..."'}`);
  say(`done in ${formatDuration((Date.now() - started) / 1000)} (${device === 'cpu' ? `${os.cpus().length} cores` : device})`);
  model.dispose();
  optimizer.dispose();
  kiln.dist.destroyProcessGroup();
  // Interrupted runs end like an interrupted program (128 + SIGINT), after saving.
  return result.stopped ? 130 : 0;
}
