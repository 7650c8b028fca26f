// Pipeline parallelism: a model's consecutive layers split into stages, one stage per rank of a
// process group, so each rank holds (and updates) only its stage's parameters. A step splits the
// batch into micro-batches; each stage runs its layers on a micro-batch, sends the activation to the
// next stage and, in backward, the gradient of its input back to the previous one (send/recv on the
// group). Micro-batches are ordered by a GPipe schedule (every forward, then every backward) or by
// 1F1B (PipeDream-flush: after a warm-up of stages-1-stage forwards each stage alternates one forward
// and one backward, so at most stages-stage micro-batches keep their activations). Both give the
// same gradients, accumulated in .grad over the micro-batches as one backward over the whole batch.
//
// A parameter used by layers on two stages (GPT's lmHead tied to wte) exists on both: after the
// backward the holders add their gradients, so every copy takes the same optimizer step (Megatron's
// embedding group, done with send/recv instead of a subgroup every rank would have to create).
//
// Frozen layers: a stage whose output needs no gradient (every parameter up to it frozen, as when
// fine-tuning only the upper blocks) says so in its activation header; the next stage then takes its
// input as a constant and sends no gradient back, and a frozen tied parameter is not synced.
//
// Each message goes with a (peer, tag) pair; the group matches repeated sends of one tag in the
// order they were issued, which is the order of the micro-batches on both sides, so one tag per
// kind of message is enough.
//
// Stages run over Gloo groups only. NCCL runs a group's point-to-point ops in order on one stream,
// each blocking the ones after it until its peer matches it: the recv posted ahead here, and 1F1B's
// steady state (a send and a recv in flight together), would deadlock without batched send/recv
// (ncclGroupStart/End), which kiln does not have yet.
import { noGrad } from '../autograd/grad_mode';
import { DTYPES, DType, ITEMSIZE } from '../dtype';
import { DistError, ShapeError, ValueError } from '../errors';
import { keep, tidy } from '../memory';
import { Block, GPT } from '../nn/gpt';
import { Dropout, Embedding, LayerNorm, Linear } from '../nn/layers';
import { crossEntropy } from '../nn/losses';
import { Module, Parameter } from '../nn/module';
import type { TensorModule } from '../nn/module';
import { empty, tensor, zeros } from '../ops/creation';
import { shapeStr } from '../shape';
import { Tensor } from '../tensor';
import { ProcessGroup, Work, worldGroup } from './process_group';

/** How a pipeline orders its micro-batches: every forward then every backward, or one forward one backward. */
export type PipelineSchedule = 'gpipe' | '1f1b';

/** Options of dist.pipeline. */
export interface PipelineOptions {
  /** Micro-batches per step; they must divide the batch. */
  microBatches: number;
  /** Number of stages (default: the group's size; it must equal it). Stage i runs on group rank i. */
  stages?: number;
  /** The micro-batch schedule (default '1f1b'). */
  schedule?: PipelineSchedule;
  /**
   * The Gloo group whose ranks run the stages (default: the world). Null is an error (dist.newGroup
   * returns null on ranks outside the group: those ranks must not build the pipeline).
   */
  group?: ProcessGroup;
  /**
   * Layers per stage (GPT blocks for a GPT; modules for a list), summing to all of them; default as
   * even as possible, the first stages taking one more when they do not divide.
   */
  balance?: readonly number[];
  /**
   * For a list of modules: the loss of a micro-batch from the last module's output and the target
   * (a scalar, the micro-batch's mean); the step's loss is the mean over the micro-batches. A GPT
   * uses its own cross-entropy (the mean over the batch's non-ignored targets) and takes none.
   */
  loss?: (output: Tensor, target: Tensor) => Tensor;
}

/** What one pipeline step did on this rank. */
export interface PipelineStepResult {
  /** The batch's loss on the last stage (null on the others). */
  loss: number | null;
  /** Wall time of the step, in milliseconds. */
  stepMs: number;
  /** Time this stage spent waiting for its neighbors (activations, gradients, tied gradients), in milliseconds. */
  idleMs: number;
  /** This stage's idle share of the step, idleMs / stepMs: the measured bubble (plus communication not hidden by compute). */
  measuredBubble: number;
  /** Bytes this stage sent, by kind. */
  bytesSent: {
    /** Activations to the next stage. */
    activations: number;
    /** Gradients of its input to the previous stage. */
    gradients: number;
    /** Gradients of parameters shared with other stages (GPT's tied embedding), with a flag (8 bytes) before each. */
    ties: number;
    /** The activation's dtype, shape and whether its gradient goes back, once a step. */
    headers: number;
  };
}

/** One layer of a stage: a module (named by prefix in the whole model's state dict) and how it maps one tensor to the next. */
interface Layer {
  name: string;
  prefix: string;
  module: Module;
  forward: (x: Tensor) => Tensor;
}

// Message kinds (the tag of every send/recv).
const TAG_HEADER = 1;
const TAG_ACT = 2;
const TAG_GRAD = 3;
const TAG_TIE = 4;
const TAG_STATE = 5;
/** Most dimensions an activation between stages may have. */
const MAX_DIMS = 8;
/** An activation header's length: dtype code, whether a gradient goes back (1/0), rank, up to MAX_DIMS sizes. */
const HEADER = 3 + MAX_DIMS;

/**
 * The order in which one stage runs its micro-batches' forward ('F') and backward ('B') passes:
 * GPipe runs every forward and then every backward; 1F1B runs min(stages - stage - 1, m) forwards,
 * then alternates one forward and one backward, then the remaining backwards. Micro-batches go
 * through forward, and through backward, in increasing order on every stage.
 */
export function pipelineSchedule(schedule: PipelineSchedule, stage: number, stages: number, microBatches: number): Array<['F' | 'B', number]> {
  const m = microBatches;
  const ops: Array<['F' | 'B', number]> = [];
  if (schedule === 'gpipe') {
    for (let i = 0; i < m; i++) ops.push(['F', i]);
    for (let i = 0; i < m; i++) ops.push(['B', i]);
    return ops;
  }
  const warmup = Math.min(stages - stage - 1, m);
  for (let i = 0; i < warmup; i++) ops.push(['F', i]);
  for (let i = warmup; i < m; i++) ops.push(['F', i], ['B', i - warmup]);
  for (let i = m - warmup; i < m; i++) ops.push(['B', i]);
  return ops;
}

/** The ideal pipeline's idle share with equal stages: (stages - 1) / (microBatches + stages - 1). */
export function bubbleFraction(stages: number, microBatches: number): number {
  return (stages - 1) / (microBatches + stages - 1);
}

function positiveInt(op: string, name: string, v: unknown): number {
  if (!Number.isInteger(v) || (v as number) < 1) throw new ValueError(op, `${name} must be a positive integer, got ${String(v)}`);
  return v as number;
}

/** The layers per stage: balance as given (checked) or as even as possible. */
function partition(op: string, units: number, what: string, stages: number, balance: readonly number[] | undefined): number[] {
  if (stages > units) throw new ValueError(op, `${stages} stages but the model has ${units} ${what}: each stage needs at least one`);
  if (!balance) return Array.from({ length: stages }, (_, s) => Math.floor(units / stages) + (s < units % stages ? 1 : 0));
  if (!Array.isArray(balance) || balance.length !== stages || balance.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new ValueError(op, `balance must list a positive number of ${what} for each of the ${stages} stages, got [${String(balance)}]`);
  }
  const sum = balance.reduce((a, b) => a + b, 0);
  if (sum !== units) throw new ValueError(op, `balance [${balance.join(', ')}] sums to ${sum}, but the model has ${units} ${what}`);
  return [...balance];
}

/** GPT's embedding layer: drop(wte(idx) + wpe[:T]). */
class GPTEmbedding extends Module {
  constructor(public wte: Embedding, public wpe: Embedding, public drop: Dropout) {
    super();
  }
  override forward(idx: Tensor): Tensor {
    return tidy(() => this.drop.forward(this.wte.forward(idx).add(this.wpe.weight.narrow(0, 0, idx.shape[1]))));
  }
}

/** GPT's output layer: lmHead(lnF(x)). */
class GPTHead extends Module {
  constructor(public lnF: LayerNorm, public lmHead: Linear) {
    super();
  }
  override forward(x: Tensor): Tensor {
    return tidy(() => this.lmHead.forward(this.lnF.forward(x)));
  }
}

/** A GPT as pipeline layers: the embedding, each block (attending causally), the head; stages cut between blocks. */
function gptLayers(op: string, model: GPT, stages: number, balance: readonly number[] | undefined): { layers: Layer[]; cuts: number[] } {
  const counts = partition(op, model.config.nLayer, 'blocks', stages, balance);
  const blockLayer = (b: Block, i: number): Layer => ({
    name: `blocks.${i}`, prefix: `blocks.${i}`, module: b,
    forward: (x) => b.forward(x, x.shape[1] > 1 ? 'causal' : null),
  });
  const embed = new GPTEmbedding(model.wte, model.wpe, model.drop);
  const head = new GPTHead(model.lnF, model.lmHead);
  const layers: Layer[] = [
    { name: 'embedding', prefix: '', module: embed, forward: (x) => embed.forward(x) },
    ...[...model.blocks].map(blockLayer),
    { name: 'head', prefix: '', module: head, forward: (x) => head.forward(x) },
  ];
  // Stage s's layers end at cuts[s] (the embedding goes with the first stage's blocks, the head with the last's).
  let end = 1;
  const cuts = counts.map((c) => (end += c));
  cuts[stages - 1] = layers.length;
  return { layers, cuts };
}

/**
 * A model split into pipeline stages, this rank running one of them (dist.pipeline makes it). step()
 * runs a batch's forward and backward through every stage and leaves the stage's gradients in its
 * parameters' .grad; an optimizer over parameters() then updates the stage, as on one process.
 */
export class Pipeline {
  /** This rank's stage (its rank in the group). */
  readonly stage: number;
  /** Number of stages. */
  readonly stages: number;
  /** Micro-batches per step. */
  readonly microBatches: number;
  /** The micro-batch schedule. */
  readonly schedule: PipelineSchedule;
  /** The group the stages run on. */
  readonly group: ProcessGroup;
  /** Each stage's layer names ('embedding', 'blocks.0', ..., 'head' for a GPT; '0', '1', ... for a list). */
  readonly partition: readonly string[][];
  #layers: Layer[];
  #loss: (output: Tensor, target: Tensor, weight: number) => Tensor;
  #lossWeights: (target: Tensor) => number[];
  /** This stage's parameters also held by other stages, with every holder, lowest first. */
  #ties: Array<{ param: Parameter; holders: number[] }>;

  /** @internal dist.pipeline builds it. */
  constructor(o: {
    group: ProcessGroup; microBatches: number; schedule: PipelineSchedule; layers: Layer[]; cuts: number[];
    loss: (output: Tensor, target: Tensor, weight: number) => Tensor; lossWeights: (target: Tensor) => number[];
  }) {
    this.group = o.group;
    this.stage = o.group.rank;
    this.stages = o.group.size;
    this.microBatches = o.microBatches;
    this.schedule = o.schedule;
    const ranges = o.cuts.map((end, s) => [s ? o.cuts[s - 1] : 0, end]);
    this.partition = ranges.map(([a, b]) => o.layers.slice(a, b).map((l) => l.name));
    const [from, to] = ranges[this.stage];
    this.#layers = o.layers.slice(from, to);
    this.#loss = o.loss;
    this.#lossWeights = o.lossWeights;
    // Which stages hold each parameter; a stage keeps only its own and frees the rest.
    const holders = new Map<Parameter, number[]>();
    ranges.forEach(([a, b], s) => {
      for (const l of o.layers.slice(a, b)) {
        for (const p of l.module.parameters()) {
          const h = holders.get(p) ?? [];
          if (!h.includes(s)) h.push(s);
          holders.set(p, h);
        }
      }
    });
    const mine = new Set(this.parameters());
    const myBuffers = new Set(this.#layers.flatMap((l) => l.module.buffers()));
    this.#ties = [...mine].filter((p) => holders.get(p)!.length > 1).map((param) => ({ param, holders: holders.get(param)! }));
    for (const l of o.layers) {
      if (this.#layers.includes(l)) continue;
      for (const p of l.module.parameters()) {
        if (mine.has(p) || p.isDisposed) continue;
        p.grad?.dispose();
        p.grad = null;
        p.dispose();
      }
      for (const b of l.module.buffers()) if (!myBuffers.has(b) && !b.isDisposed) b.dispose();
    }
    for (const l of this.#layers) l.module.to({ device: this.group.device });
  }

  private get isFirst(): boolean {
    return this.stage === 0;
  }

  private get isLast(): boolean {
    return this.stage === this.stages - 1;
  }

  /** The analytic bubble (idle share of an ideal pipeline): (stages - 1) / (microBatches + stages - 1). */
  get bubbleFraction(): number {
    return bubbleFraction(this.stages, this.microBatches);
  }

  /** This stage's parameters with their names in the whole model (what an optimizer over the stage takes). */
  namedParameters(): Array<[string, Parameter]> {
    const seen = new Set<Parameter>();
    const out: Array<[string, Parameter]> = [];
    for (const l of this.#layers) {
      for (const [n, p] of l.module.namedParameters({ prefix: l.prefix })) {
        if (seen.has(p)) continue;
        seen.add(p);
        out.push([n, p]);
      }
    }
    return out;
  }

  /** This stage's parameters. */
  parameters(): Parameter[] {
    return this.namedParameters().map(([, p]) => p);
  }

  /** Training mode (dropout on) for this stage's layers, or eval mode with false. */
  train(mode = true): this {
    for (const l of this.#layers) l.module.train(mode);
    return this;
  }

  /** Eval mode: train(false). */
  eval(): this {
    return this.train(false);
  }

  /** Frees (or zeroes) the gradients of this stage's parameters. */
  zeroGrad(setToNone = true): void {
    for (const l of this.#layers) l.module.zeroGrad(setToNone);
  }

  /**
   * Runs the batch forward and backward through the pipeline and adds the stage's gradients to its
   * parameters' .grad (equal to one backward of the unsplit model on the whole batch). Every rank
   * calls it with the same batch: the first stage reads input (a GPT's token ids [B, T]), the last
   * target; the others check what they are given and may pass null. The batch's first dimension
   * must divide into microBatches.
   */
  async step(input: Tensor | null, target: Tensor | null): Promise<PipelineStepResult> {
    const op = 'Pipeline.step';
    const m = this.microBatches;
    const split = (t: Tensor | null, name: string, needed: boolean): Tensor[] | null => {
      if (!t) {
        if (needed) throw new ValueError(op, `stage ${this.stage} of ${this.stages} needs the ${name}, got null`);
        return null;
      }
      if (!(t instanceof Tensor)) throw new ValueError(op, `${name} must be a Tensor or null`);
      const B = t.shape[0];
      if (t.ndim === 0 || B % m !== 0) {
        throw new ShapeError(op, `${m} micro-batches do not divide the ${name}'s batch: ${name} is ${shapeStr(t.shape)} (${B} rows)`);
      }
      return Array.from({ length: m }, (_, i) => t.narrow(0, i * (B / m), B / m));
    };
    const inputs = split(input, 'input', this.isFirst);
    const targets = split(target, 'target', this.isLast);
    const weights = this.isLast ? this.#lossWeights(target!) : [];
    if (!this.isFirst) inputs?.forEach((t) => t.dispose());
    if (!this.isLast) targets?.forEach((t) => t.dispose());

    const t0 = performance.now();
    let idle = 0;
    const waitFor = async <T>(p: PromiseLike<T>): Promise<T> => {
      const w0 = performance.now();
      try {
        return await p;
      } finally {
        idle += performance.now() - w0;
      }
    };
    const bytes = { activations: 0, gradients: 0, ties: 0, headers: 0 };
    const sends: Array<{ work: Work; free: Tensor[] }> = [];
    const send = (t: Tensor, dst: number, tag: number, kind: keyof typeof bytes, free: Tensor[]): Work => {
      const work = this.group.send(t, dst, { tag });
      bytes[kind] += t.numel * ITEMSIZE[t.dtype];
      sends.push({ work, free });
      return work;
    };
    // Incoming activations (from stage - 1) and gradients (from stage + 1), each recv posted one ahead.
    const acts = new Inbox(this.group, this.stage - 1, TAG_ACT);
    const grads = new Inbox(this.group, this.stage + 1, TAG_GRAD);

    const received: Array<Tensor | null> = new Array(m).fill(null);
    const outputs: Array<{ y: Tensor; sent: Work | null } | null> = new Array(m).fill(null);
    // The micro-batches' losses (detached), added up once the step is done.
    const losses: Tensor[] = [];
    let loss: number | null = null;
    // Whether the previous stage wants the gradient of this stage's input, and the next one sends the
    // gradient of its output (false where every parameter below is frozen): told in the header.
    let inputNeedsGrad = false, outputNeedsGrad = false;
    try {
      if (!this.isFirst) {
        const header = zeros([HEADER], { dtype: 'int64', device: this.group.device });
        try {
          await waitFor(this.group.recv(header, this.stage - 1, { tag: TAG_HEADER }));
          const h = Array.from(header.dataSync() as BigInt64Array, Number);
          inputNeedsGrad = h[1] === 1;
          acts.expect(h.slice(3, 3 + h[2]), DTYPES[h[0]], m);
        } finally {
          header.dispose();
        }
      }
      for (const [kind, i] of pipelineSchedule(this.schedule, this.stage, this.stages, m)) {
        if (kind === 'F') {
          let x: Tensor;
          if (this.isFirst) x = inputs![i];
          else {
            x = await waitFor(acts.next());
            x.requiresGrad = inputNeedsGrad;
            received[i] = x;
          }
          const y = tidy(() => this.#layers.reduce((h, l) => l.forward(h), x));
          if (this.isLast) {
            const loss = tidy(() => this.#loss(y, targets![i], weights[i]));
            y.dispose();
            losses.push(loss.detach());
            outputs[i] = { y: loss, sent: null };
            continue;
          }
          if (i === 0) {
            if (y.ndim > MAX_DIMS) throw new ShapeError(op, `stage ${this.stage}'s output has ${y.ndim} dimensions; a pipeline passes at most ${MAX_DIMS}`);
            outputNeedsGrad = y.requiresGrad;
            const h = [DTYPES.indexOf(y.dtype), outputNeedsGrad ? 1 : 0, y.ndim, ...y.shape];
            while (h.length < HEADER) h.push(0);
            const header = tensor(h, { dtype: 'int64', device: this.group.device });
            send(header, this.stage + 1, TAG_HEADER, 'headers', [header]);
            if (outputNeedsGrad) grads.expect(y.shape, y.dtype, m);
          }
          // tidy frees the detached handle when contiguous() copies.
          const wire = tidy(() => y.detach().contiguous());
          outputs[i] = { y, sent: send(wire, this.stage + 1, TAG_ACT, 'activations', [wire]) };
        } else {
          const out = outputs[i]!;
          outputs[i] = null;
          // No backward where nothing below the output trains (a frozen first stage, or all of them).
          if (this.isLast) {
            if (out.y.requiresGrad) out.y.backward();
          } else {
            if (outputNeedsGrad) {
              const dy = await waitFor(grads.next());
              out.y.backward(dy);
              dy.dispose();
            }
            await waitFor(out.sent!);
          }
          out.y.dispose();
          if (!this.isFirst) {
            const x = received[i]!;
            received[i] = null;
            if (inputNeedsGrad) {
              const dx = x.grad ?? zeros(x.shape, { dtype: x.dtype, device: x.device });
              x.grad = null;
              send(dx, this.stage - 1, TAG_GRAD, 'gradients', [dx, x]);
            } else x.dispose();
          }
        }
        for (let k = sends.length - 1; k >= 0; k--) {
          if (!sends[k].work.isCompleted()) continue;
          await sends[k].work;
          for (const t of sends[k].free) t.dispose();
          sends.splice(k, 1);
        }
      }
      if (losses.length) loss = tidy(() => losses.reduce((a, b) => a.add(b)).item());
      bytes.ties = await this.syncTies(waitFor);
      for (const s of sends.splice(0)) {
        await waitFor(s.work);
        for (const t of s.free) t.dispose();
      }
    } finally {
      for (const s of sends) s.work.wait().catch(() => {}).finally(() => s.free.forEach((t) => t.dispose()));
      acts.close();
      grads.close();
      for (const t of received) t?.dispose();
      for (const o of outputs) o?.y.dispose();
      for (const l of losses) l.dispose();
      if (this.isFirst) inputs!.forEach((t) => t.dispose());
      if (this.isLast) targets!.forEach((t) => t.dispose());
    }
    const stepMs = performance.now() - t0;
    return { loss, stepMs, idleMs: idle, measuredBubble: stepMs > 0 ? idle / stepMs : 0, bytesSent: bytes };
  }

  /**
   * Adds up the gradients of parameters held by several stages: the lowest holder receives the
   * others', sums in holder order and sends the sum back. Each gradient goes after a flag saying
   * whether the holder has one, so a tie no holder has a gradient for keeps .grad null. Frozen ties
   * (requiresGrad false, alike on every holder) are skipped: a zero .grad would let weight decay move
   * them. Returns the bytes this stage sent.
   */
  private async syncTies(waitFor: <T>(p: PromiseLike<T>) => Promise<T>): Promise<number> {
    let sent = 0;
    const device = this.group.device;
    const sendFlag = async (on: boolean, dst: number): Promise<void> => {
      const f = tensor([on ? 1 : 0], { dtype: 'int64', device });
      try {
        await waitFor(this.group.send(f, dst, { tag: TAG_TIE }));
        sent += ITEMSIZE.int64;
      } finally {
        f.dispose();
      }
    };
    const recvFlag = async (src: number): Promise<boolean> => {
      const f = empty([1], { dtype: 'int64', device });
      try {
        await waitFor(this.group.recv(f, src, { tag: TAG_TIE }));
        return (f.dataSync() as BigInt64Array)[0] === 1n;
      } finally {
        f.dispose();
      }
    };
    for (const { param, holders } of this.#ties) {
      if (!param.requiresGrad) continue;
      if (param.grad && !param.grad.isContiguous()) {
        const c = keep(param.grad.contiguous());
        param.grad.dispose();
        param.grad = c;
      }
      if (this.stage === holders[0]) {
        for (const h of holders.slice(1)) {
          if (!(await recvFlag(h))) continue;
          const other = keep(empty(param.shape, { dtype: param.dtype, device }));
          try {
            await waitFor(this.group.recv(other, h, { tag: TAG_TIE }));
          } catch (e) {
            other.dispose();
            throw e;
          }
          if (!param.grad) param.grad = other;
          else {
            noGrad(() => param.grad!.add_(other));
            other.dispose();
          }
        }
        const g = param.grad;
        for (const h of holders.slice(1)) {
          await sendFlag(g !== null, h);
          if (g) await waitFor(this.group.send(g, h, { tag: TAG_TIE }));
        }
        if (g) sent += (holders.length - 1) * g.numel * ITEMSIZE[g.dtype];
      } else {
        const g = param.grad;
        await sendFlag(g !== null, holders[0]);
        if (g) {
          await waitFor(this.group.send(g, holders[0], { tag: TAG_TIE }));
          sent += g.numel * ITEMSIZE[g.dtype];
        }
        if (!(await recvFlag(holders[0]))) continue;
        if (!param.grad) param.grad = keep(empty(param.shape, { dtype: param.dtype, device }));
        await waitFor(this.group.recv(param.grad, holders[0], { tag: TAG_TIE }));
      }
    }
    return sent;
  }

  /** This stage's parameters and persistent buffers by their names in the whole model. */
  private localStateDict(): Map<string, Tensor> {
    const sd = new Map<string, Tensor>();
    for (const l of this.#layers) for (const [k, t] of l.module.stateDict(l.prefix)) sd.set(k, t);
    return sd;
  }

  /**
   * The whole model's state dict (the unsplit model's names and order) on group rank 0, gathered from
   * every stage; null on the other ranks. Every rank must call it. Save it as a plain checkpoint
   * (io.saveSafetensors) that the unsplit model, or a pipeline of any stage count, loads.
   */
  async stateDict(): Promise<Map<string, Tensor> | null> {
    const local = this.localStateDict();
    const meta = (await this.group.allGatherObject([...local].map(([k, t]) => [k, t.shape, t.dtype]))) as Array<Array<[string, number[], DType]>>;
    if (this.stage !== 0) {
      for (const t of local.values()) {
        const c = t.contiguous();
        await this.group.send(c, 0, { tag: TAG_STATE });
        if (c !== t) c.dispose();
        t.dispose();
      }
      return null;
    }
    const out = new Map(local);
    for (let s = 1; s < this.stages; s++) {
      for (const [k, shape, dtype] of meta[s]) {
        const t = empty(shape, { dtype, device: this.group.device });
        await this.group.recv(t, s, { tag: TAG_STATE });
        out.set(k, t);
      }
    }
    return out;
  }

  /**
   * Loads this stage's share of a whole-model state dict (a plain checkpoint, as stateDict() or the
   * unsplit model's stateDict() give): each stage takes the entries its layers own and ignores the
   * rest. A ValueError lists the stage's missing keys; shapes must match.
   */
  loadStateDict(sd: Map<string, Tensor> | Record<string, Tensor>): void {
    const given = sd instanceof Map ? sd : new Map(Object.entries(sd));
    const missing: string[] = [];
    const parts = this.#layers.map((l) => {
      const part = new Map<string, Tensor>();
      const strip = l.prefix ? l.prefix.length + 1 : 0;
      for (const k of l.module.stateDict(l.prefix).keys()) {
        const t = given.get(k);
        if (t) part.set(k.slice(strip), t);
        else missing.push(k);
      }
      return part;
    });
    if (missing.length) {
      throw new ValueError('Pipeline.loadStateDict', `stage ${this.stage} needs keys the state dict lacks: ${missing.slice(0, 6).join(', ')}${missing.length > 6 ? `, ... (${missing.length} in all)` : ''}`);
    }
    this.#layers.forEach((l, i) => l.module.loadStateDict(parts[i]));
  }

  /** Frees this stage's parameters, gradients and buffers. */
  dispose(): void {
    for (const l of this.#layers) l.module.dispose();
  }
}

/**
 * The messages of one kind from one neighbor, in order: each is received into a fresh tensor of the
 * step's shape, and the next recv is posted as soon as one is taken.
 */
class Inbox {
  private pending: { t: Tensor; work: Work } | null = null;
  private shape: number[] = [];
  private dtype: DType = 'float32';
  private left = 0;

  constructor(private readonly group: ProcessGroup, private readonly peer: number, private readonly tag: number) {}

  /** Posts the first of count recvs of the given shape. */
  expect(shape: readonly number[], dtype: DType, count: number): void {
    this.shape = [...shape];
    this.dtype = dtype;
    this.left = count;
    this.post();
  }

  private post(): void {
    if (this.left === 0) return;
    this.left--;
    const t = keep(empty(this.shape, { dtype: this.dtype, device: this.group.device }));
    this.pending = { t, work: this.group.recv(t, this.peer, { tag: this.tag }) };
  }

  /** The next message (the caller owns the tensor); posts the recv of the one after. */
  async next(): Promise<Tensor> {
    const p = this.pending;
    if (!p) throw new ValueError('Pipeline.step', `no message from stage ${this.peer} is expected (tag ${this.tag})`);
    this.pending = null;
    try {
      await p.work;
    } catch (e) {
      p.t.dispose();
      throw e;
    }
    this.post();
    return p.t;
  }

  /** Drops a recv still posted (after a failure): its tensor is freed once the recv ends. */
  close(): void {
    const p = this.pending;
    this.pending = null;
    this.left = 0;
    if (p) p.work.wait().catch(() => {}).finally(() => p.t.dispose());
  }
}

/**
 * Splits a model into pipeline stages over the ranks of a group (the world by default; stage i on
 * group rank i) and returns this rank's stage. A GPT is split between its blocks: the first stage
 * also holds the embeddings, the last the final LayerNorm, the head and the loss (the head's weight,
 * tied to wte, lives on both and the two gradients are added). A list of modules (each mapping one
 * tensor to the next) is split into consecutive runs and needs options.loss. Every rank builds the
 * whole model the same way and calls pipeline(); each then frees the parameters of the other stages
 * and moves its own to the group's device, so a model larger than one process's memory trains. The
 * model is the pipeline's from then on. The group must be a Gloo group (CPU stages): over NCCL the
 * stages' send/recv would deadlock without batched point-to-point ops, which kiln lacks (a DistError).
 *
 * ```ts
 * await kiln.dist.initProcessGroup();
 * const pipe = kiln.dist.pipeline(new kiln.nn.GPT(config), { microBatches: 8, schedule: '1f1b' });
 * const opt = new kiln.optim.AdamW(pipe.parameters(), { lr: 3e-4 });
 * for (const [x, y] of batches) {
 *   const { loss } = await pipe.step(x, y);     // every rank passes the batch; loss on the last stage
 *   opt.step();
 *   opt.zeroGrad();
 * }
 * ```
 */
export function pipeline(model: GPT | readonly TensorModule[], opts: PipelineOptions): Pipeline {
  const op = 'pipeline';
  if (!opts || typeof opts !== 'object') throw new ValueError(op, 'options { microBatches } are required');
  const microBatches = positiveInt(op, 'microBatches', opts.microBatches);
  const schedule = opts.schedule ?? '1f1b';
  if (schedule !== 'gpipe' && schedule !== '1f1b') throw new ValueError(op, `schedule must be 'gpipe' or '1f1b', got ${String(schedule)}`);
  if (opts.group === null) {
    throw new ValueError(op, 'group is null: dist.newGroup returns null on ranks outside the group, and those ranks must not build the pipeline (leave group out for the world)');
  }
  const group = opts.group ?? worldGroup();
  if (!(group instanceof ProcessGroup)) throw new ValueError(op, 'group must be a ProcessGroup (from dist.initProcessGroup or dist.newGroup)');
  if (group.backend === 'nccl') {
    throw new DistError(op, `pipeline runs over Gloo groups; NCCL needs batched send/recv (ncclGroupStart/End), not built: make the group with dist.newGroup(ranks, { backend: 'gloo' }) and keep the stages on the CPU`);
  }
  const stages = opts.stages === undefined ? group.size : positiveInt(op, 'stages', opts.stages);
  let built: { layers: Layer[]; cuts: number[] };
  let loss: (output: Tensor, target: Tensor, weight: number) => Tensor;
  let lossWeights: (target: Tensor) => number[];
  if (model instanceof GPT) {
    if (opts.loss) throw new ValueError(op, 'a GPT computes its own loss; options.loss is for a list of modules');
    built = gptLayers(op, model, stages, opts.balance);
    const V = model.config.vocabSize;
    // Each micro-batch's summed cross-entropy over the batch's non-ignored targets: the losses add up
    // to the whole batch's mean, with ignored targets (-100) anywhere.
    loss = (logits, y, w) => crossEntropy(logits.reshape(-1, V), y.reshape(-1), { reduction: 'sum' }).mul(w);
    lossWeights = (y) => {
      const valid = tidy(() => y.ne(-100).sum().item());
      return new Array(microBatches).fill(valid > 0 ? 1 / valid : 0);
    };
  } else if (Array.isArray(model)) {
    if (typeof opts.loss !== 'function') throw new ValueError(op, 'a pipeline over a list of modules needs options.loss(output, target)');
    model.forEach((m, i) => {
      if (!(m instanceof Module)) throw new ValueError(op, `model[${i}] is not a Module`);
    });
    const counts = partition(op, model.length, 'modules', stages, opts.balance);
    const layers = model.map((m, i): Layer => ({ name: String(i), prefix: String(i), module: m, forward: (x) => m.forward(x) }));
    let end = 0;
    built = { layers, cuts: counts.map((c) => (end += c)) };
    const userLoss = opts.loss;
    loss = (out, y, w) => userLoss(out, y).mul(w);
    lossWeights = () => new Array(microBatches).fill(1 / microBatches);
  } else {
    throw new ValueError(op, 'model must be a GPT or an array of modules');
  }
  if (stages !== group.size) {
    throw new ValueError(op, `${stages} stages need a group of ${stages} ranks, the group has ${group.size}`);
  }
  return new Pipeline({ group, microBatches, schedule, layers: built.layers, cuts: built.cuts, loss, lossWeights });
}
