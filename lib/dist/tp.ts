// Tensor parallelism (Megatron-LM's): a layer's weight is split across the ranks of a group, each
// rank computes with its slice, and collectives put the pieces together.
//
// The four conjugate collectives are autograd ops (recordOp): copyToParallel (identity forward,
// all-reduce backward) where a replicated activation enters a split region, reduceFromParallel
// (all-reduce forward, identity backward) where partial sums leave it, and gatherFromParallel /
// scatterToParallel along the last dim. Autograd rules cannot await, so their collectives block
// with Work.waitSync: Gloo runs them on the group's own thread, so nothing they need is stuck
// behind the blocked JavaScript thread. Every rank of a group runs the same graph, so the collectives
// of forward and backward are issued in the same order everywhere, as a group requires.
//
// ColumnParallelLinear splits the output features (weight rows), RowParallelLinear the input
// features (weight columns); a column layer feeding a row layer (MLP fc -> proj, attention q/k/v ->
// out) needs one all-reduce forward and one backward. VocabParallelEmbedding splits the vocabulary
// rows, and vocabParallelCrossEntropy takes logits split the same way, never gathering them whole:
// the max, the sum of exponentials and the target's logit are all-reduced (N floats each).
//
// Each split parameter keeps the plain layer's name and records how it was cut (SHARDS), so a
// model's plain state dict loads into its shards (shardStateDict) and the shards gather back into a
// plain state dict (gatherStateDict). Replicated parameters (LayerNorms, a row layer's bias, the
// position embedding) are broadcast from the group's rank 0 by the constructor that makes them, so
// they start equal even on ranks seeded differently (or given different sources), and then get the
// same gradient on every rank, as their inputs and the gradients reaching them are replicated.
import { recordOp } from '../autograd/engine';
import { noGrad } from '../autograd/grad_mode';
import { isIntegral } from '../dtype';
import { DeviceError, DistError, DTypeError, IndexError, ShapeError, ValueError } from '../errors';
import { tidy } from '../memory';
import { empty, tensor } from '../ops/creation';
import { where } from '../ops/elementwise';
import { embedding } from '../ops/indexing';
import { linear } from '../ops/matmul';
import { getRngState, setRngState } from '../ops/random';
import { cat } from '../ops/shape';
import { sameShape, shapeStr } from '../shape';
import { Tensor } from '../tensor';
import { clipGradNorm as optimClipGradNorm, gradNormPartial } from '../optim/clip_grad';
import { MultiheadAttention, scaledDotProductAttention } from '../nn/attention';
import { Block, GPT, GPTConfig, MLP } from '../nn/gpt';
import { Dropout, Embedding, FactoryOptions, LayerNorm, Linear } from '../nn/layers';
import type { LoadStateDictOptions, StateDictLoadResult } from '../nn/module';
import { Module, ModuleList, Parameter } from '../nn/module';
import { newGroup, ProcessGroup, rank as worldRank, worldGroup } from './process_group';
import type { ReduceOp } from './process_group';

// ---- groups and sizes ----

function checkGroup(layer: string, group: unknown): ProcessGroup {
  if (group === null || group === undefined) {
    throw new ValueError(layer, `needs { group }: the tensor-parallel group (dist.newGroup returns null on ranks outside it), got ${group}`);
  }
  if (!(group instanceof ProcessGroup)) throw new ValueError(layer, 'group must be a ProcessGroup (from dist.initProcessGroup or dist.newGroup)');
  if (group.isDestroyed) throw new DistError(layer, `the group (rank ${group.rank} of ${group.size}) was destroyed`);
  return group;
}

/** n / group.size, or a ValueError naming the layer and the sizes (and what to do, for a vocabulary). */
function part(layer: string, what: string, n: number, group: ProcessGroup, vocab = false): number {
  if (n % group.size !== 0) {
    const fix = vocab ? `; pad the vocabulary to a multiple of ${group.size} (e.g. ${Math.ceil(n / group.size) * group.size})` : '';
    throw new ValueError(layer, `${what} ${n} is not divisible by the tensor-parallel size ${group.size} (group ranks ${group.ranks.join(', ')})${fix}`);
  }
  return n / group.size;
}

function checkDevice(layer: string, t: Tensor, group: ProcessGroup): void {
  if ((t._dev >= 0) !== (group.backend === 'nccl')) {
    throw new DeviceError(layer, `parameters on ${t.device} do not fit the group's ${group.backend} backend (${group.backend === 'nccl' ? 'CUDA' : 'CPU'} tensors); move the model first`);
  }
}

/** The groups of a 2-D layout: see newGroups. */
export interface ParallelGroups {
  /** This rank's tensor-parallel group: tensorParallelSize consecutive world ranks. */
  tp: ProcessGroup;
  /** This rank's data-parallel group: the ranks at the same place in every tensor-parallel group (null when the world is one tensor-parallel group). */
  dp: ProcessGroup | null;
}

/**
 * Splits the world into tensor-parallel groups of tensorParallelSize consecutive ranks (kept on one
 * machine by `kiln launch`, where their per-layer all-reduces are cheapest) and data-parallel groups
 * across them: 4 processes with size 2 give TP groups {0, 1}, {2, 3} and DP groups {0, 2}, {1, 3}.
 * Every rank must call it (it creates every group, in the same order, as newGroup requires).
 */
export async function newGroups(tensorParallelSize: number): Promise<ParallelGroups> {
  const op = 'tp.newGroups';
  const world = worldGroup().size;
  const t = tensorParallelSize;
  if (!Number.isInteger(t) || t < 1 || world % t !== 0) {
    throw new ValueError(op, `tensorParallelSize must be a positive integer dividing the world size ${world}, got ${t}`);
  }
  const d = world / t;
  let tp: ProcessGroup | null = null, dp: ProcessGroup | null = null;
  for (let i = 0; i < d; i++) tp = (await newGroup(Array.from({ length: t }, (_, r) => i * t + r))) ?? tp;
  for (let j = 0; d > 1 && j < t; j++) dp = (await newGroup(Array.from({ length: d }, (_, r) => r * t + j))) ?? dp;
  return { tp: tp!, dp };
}

/**
 * An IndexError when an element of ids is outside [0, size): each rank would find it in no rank's
 * part and silently use zeros. Checked where the ids are on the host only: on a GPU the two reads
 * would be a device sync per call (as the unsharded embedding, which checks inside its kernel).
 */
function checkRange(op: string, what: string, ids: Tensor, size: number, also = ''): void {
  if (ids.numel === 0 || ids.device !== 'cpu') return;
  const lo = tidy(() => ids.min().item()), hi = tidy(() => ids.max().item());
  if (lo < 0 || hi >= size) throw new IndexError(op, `${what} ${lo < 0 ? lo : hi} is out of range: expected 0 to ${size - 1}${also}`);
}

// ---- the conjugate collectives ----

/** A contiguous copy of x reduced over the group (no autograd). */
function allReduced(x: Tensor, group: ProcessGroup, op: ReduceOp = 'sum'): Tensor {
  const out = noGrad(() => x.clone());
  group.allReduce(out, { op }).waitSync();
  return out;
}

/** Every rank's x, in group rank order: views of one gathered buffer (no autograd). */
function gatherParts(x: Tensor, group: ProcessGroup): Tensor[] {
  const flat = empty([group.size, ...x.shape], { dtype: x.dtype, device: x.device });
  group.allGather(flat, x.contiguous()).waitSync();
  return Array.from({ length: group.size }, (_, r) => flat.select(0, r));
}

/** Every rank's x concatenated along dim (no autograd). */
function allGathered(x: Tensor, group: ProcessGroup, dim: number): Tensor {
  return noGrad(() => tidy(() => cat(gatherParts(x, group), dim)));
}

/** This rank's part of x's last dim, contiguous (no autograd). */
function ownPart(x: Tensor, group: ProcessGroup, layer: string): Tensor {
  const n = part(layer, 'the last dim', x.shape[x.ndim - 1], group);
  return noGrad(() => tidy(() => x.narrow(-1, group.rank * n, n).contiguous()));
}

/**
 * Identity forward, all-reduce (sum) of the gradient backward: where a replicated activation enters a
 * tensor-parallel region (the input of a ColumnParallelLinear), each rank's gradient is a partial sum.
 */
export function copyToParallel(x: Tensor, group: ProcessGroup): Tensor {
  const g = checkGroup('copyToParallel', group);
  return recordOp('copyToParallel', [x], x.detach(), [], (grad) => [allReduced(grad, g)]);
}

/**
 * All-reduce (sum) forward, identity backward: where partial sums leave a tensor-parallel region (the
 * output of a RowParallelLinear). Every rank gets the whole sum.
 */
export function reduceFromParallel(x: Tensor, group: ProcessGroup): Tensor {
  const g = checkGroup('reduceFromParallel', group);
  return recordOp('reduceFromParallel', [x], allReduced(x, g), [], (grad) => [grad]);
}

/** Concatenates the ranks' x along the last dim; backward keeps this rank's part of the gradient. */
export function gatherFromParallel(x: Tensor, group: ProcessGroup): Tensor {
  const g = checkGroup('gatherFromParallel', group);
  return recordOp('gatherFromParallel', [x], allGathered(x, g, -1), [], (grad) => [ownPart(grad, g, 'gatherFromParallel')]);
}

/** This rank's part of x's last dim (which the group size must divide); backward gathers the gradient. */
export function scatterToParallel(x: Tensor, group: ProcessGroup): Tensor {
  const g = checkGroup('scatterToParallel', group);
  return recordOp('scatterToParallel', [x], ownPart(x, g, 'scatterToParallel'), [], (grad) => [allGathered(grad, g, -1)]);
}

// ---- how parameters are cut ----

/**
 * How a parameter is split: along dim, in `sections` packed blocks (3 for attention's q/k/v weight,
 * each block split across the ranks), over group. fullShape is the plain parameter's shape.
 */
interface Shard {
  dim: number;
  sections: number;
  group: ProcessGroup;
  fullShape: readonly number[];
}

const SHARDS = new WeakMap<Parameter, Shard>();

/** Group rank r's part of the plain tensor full (a contiguous copy of its own). */
function cutShard(full: Tensor, s: Shard, r: number): Tensor {
  const block = full.shape[s.dim] / s.sections, n = block / s.group.size;
  return noGrad(() => tidy(() => {
    const pieces = Array.from({ length: s.sections }, (_, j) => full.narrow(s.dim, j * block + r * n, n));
    // Always a copy: a narrow along dim 0 is already contiguous, and the shard must not share the plain tensor's storage.
    return pieces.length === 1 ? pieces[0].clone() : cat(pieces, s.dim);
  }));
}

/** A parameter holding this rank's shard of the plain tensor full, recorded in SHARDS. */
function shardParameter(full: Tensor, dim: number, group: ProcessGroup, sections = 1): Parameter {
  const s: Shard = { dim, sections, group, fullShape: full.shape };
  const p = Parameter.own(cutShard(full, s, group.rank), full.requiresGrad);
  SHARDS.set(p, s);
  return p;
}

/** Replicated parameters already broadcast by a constructor (so an enclosing layer skips them). */
const SYNCED = new WeakSet<Parameter>();

/**
 * Broadcasts the replicated (unsplit) parameters among params from group rank 0, so every rank of
 * the group holds the same values; the shards stay each rank's own. A collective: every rank of the
 * group constructs the same layers in the same order, as their forward already requires.
 */
function syncReplicated(params: Iterable<Parameter>, group: ProcessGroup): void {
  for (const p of params) {
    if (SHARDS.has(p) || SYNCED.has(p)) continue;
    group.broadcast(p, 0).waitSync();
    SYNCED.add(p);
  }
}

/** The plain tensor gathered from every rank's shard (a collective over the shard's group). */
function joinShard(local: Tensor, s: Shard): Tensor {
  return noGrad(() => tidy(() => {
    const parts = gatherParts(local, s.group);
    const n = local.shape[s.dim] / s.sections;
    const pieces = [];
    for (let j = 0; j < s.sections; j++) for (const p of parts) pieces.push(p.narrow(s.dim, j * n, n));
    return cat(pieces, s.dim);
  }));
}

// ---- layers ----

/** Options shared by the tensor-parallel linear layers. */
export interface ParallelLinearOptions extends FactoryOptions {
  /** The tensor-parallel group the weight is split over. */
  group: ProcessGroup;
  /** A bias (default true; with source, whether source has one). */
  bias?: boolean;
  /**
   * The plain layer whose weights to split (default: a fresh nn.Linear(inFeatures, outFeatures), so
   * that the same seed gives the same weights as the plain layer).
   */
  source?: Linear;
}

/** Options of ColumnParallelLinear. */
export interface ColumnParallelLinearOptions extends ParallelLinearOptions {
  /** Gather the output features from every rank (default true); false leaves them split (to feed a RowParallelLinear). */
  gatherOutput?: boolean;
  /** This rank's [outFeatures / size, inFeatures] slice to use as the weight (weight tying; then no bias), instead of source's. */
  weight?: Parameter;
}

/** Options of RowParallelLinear. */
export interface RowParallelLinearOptions extends ParallelLinearOptions {
  /** The input arrives already split along its last dim (a ColumnParallelLinear's without gatherOutput); default false. */
  inputIsParallel?: boolean;
}

function sourceLinear(layer: string, inF: number, outF: number, o: ParallelLinearOptions): Linear {
  const src = o.source ?? new Linear(inF, outF, { bias: o.bias, dtype: o.dtype, device: o.device });
  if (!(src instanceof Linear) || src.inFeatures !== inF || src.outFeatures !== outF) {
    throw new ShapeError(layer, `source must be an nn.Linear(${inF}, ${outF})${src instanceof Linear ? `, got nn.Linear(${src.inFeatures}, ${src.outFeatures})` : ''}`);
  }
  return src;
}

/**
 * y = x W^T + b with W's rows (the output features) split across the group: rank r holds rows
 * [r out/size, (r+1) out/size) of the plain weight and bias, under the plain names weight and bias.
 * The input is replicated (its gradient is all-reduced backward); the output is gathered whole, or
 * left split with gatherOutput false.
 */
export class ColumnParallelLinear extends Module {
  /** This rank's rows of the weight, [outFeatures / size, inFeatures]. */
  weight: Parameter;
  /** This rank's part of the bias, [outFeatures / size], or null. */
  bias: Parameter | null;
  /** Input features. */
  readonly inFeatures: number;
  /** Output features of the whole (plain) layer. */
  readonly outFeatures: number;
  /** Whether forward gathers the output features from every rank. */
  readonly gatherOutput: boolean;
  /** The tensor-parallel group. */
  readonly group: ProcessGroup;

  /** A ValueError when the group size does not divide outFeatures or the group is missing. */
  constructor(inFeatures: number, outFeatures: number, opts: ColumnParallelLinearOptions) {
    super();
    const layer = 'ColumnParallelLinear';
    const g = checkGroup(layer, opts?.group);
    const local = part(layer, 'outFeatures', outFeatures, g);
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    this.gatherOutput = opts.gatherOutput ?? true;
    this.group = g;
    if (opts.weight) {
      if (!sameShape(opts.weight.shape, [local, inFeatures])) {
        throw new ShapeError(layer, `weight must be this rank's slice [${local}, ${inFeatures}], got ${shapeStr(opts.weight.shape)}`);
      }
      this.weight = opts.weight;
      this.bias = null;
      if (opts.bias) throw new ValueError(layer, 'a tied weight (opts.weight) takes no bias');
    } else {
      const src = sourceLinear(layer, inFeatures, outFeatures, opts);
      this.weight = shardParameter(src.weight, 0, g);
      this.bias = src.bias ? shardParameter(src.bias, 0, g) : null;
      if (!opts.source) src.dispose();
    }
    checkDevice(layer, this.weight, g);
  }

  /** x [..., inFeatures] -> [..., outFeatures], or [..., outFeatures / size] without gatherOutput. */
  override forward(x: Tensor): Tensor {
    if (x.shape[x.ndim - 1] !== this.inFeatures) {
      throw new ShapeError('ColumnParallelLinear', `expects inputs with last dim ${this.inFeatures}, got shape ${shapeStr(x.shape)}`);
    }
    return tidy(() => {
      const y = linear(copyToParallel(x, this.group), this.weight, this.bias);
      return this.gatherOutput ? gatherFromParallel(y, this.group) : y;
    });
  }

  override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures} (${this.weight.shape[0]} on rank ${this.group.rank} of ${this.group.size}), bias=${this.bias !== null}, gatherOutput=${this.gatherOutput}`;
  }
}

/**
 * y = x W^T + b with W's columns (the input features) split across the group: rank r holds columns
 * [r in/size, (r+1) in/size) of the plain weight; the bias is whole on every rank. Each rank's
 * product is a partial sum; they are all-reduced, then the bias is added. The input is split here
 * (scatterToParallel) unless inputIsParallel says it already is.
 */
export class RowParallelLinear extends Module {
  /** This rank's columns of the weight, [outFeatures, inFeatures / size]. */
  weight: Parameter;
  /** The whole bias [outFeatures] (the same on every rank), or null. */
  bias: Parameter | null;
  /** Input features of the whole (plain) layer. */
  readonly inFeatures: number;
  /** Output features. */
  readonly outFeatures: number;
  /** Whether forward takes inputs already split along the last dim. */
  readonly inputIsParallel: boolean;
  /** The tensor-parallel group. */
  readonly group: ProcessGroup;

  /**
   * A ValueError when the group size does not divide inFeatures or the group is missing. Every rank
   * of the group must construct it: the bias is broadcast from group rank 0.
   */
  constructor(inFeatures: number, outFeatures: number, opts: RowParallelLinearOptions) {
    super();
    const layer = 'RowParallelLinear';
    const g = checkGroup(layer, opts?.group);
    part(layer, 'inFeatures', inFeatures, g);
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    this.inputIsParallel = opts.inputIsParallel ?? false;
    this.group = g;
    const src = sourceLinear(layer, inFeatures, outFeatures, opts);
    this.weight = shardParameter(src.weight, 1, g);
    this.bias = src.bias ? Parameter.own(noGrad(() => src.bias!.clone()), src.bias.requiresGrad) : null;
    if (!opts.source) src.dispose();
    checkDevice(layer, this.weight, g);
    if (this.bias) syncReplicated([this.bias], g);
  }

  /** x [..., inFeatures] (or [..., inFeatures / size] with inputIsParallel) -> [..., outFeatures]. */
  override forward(x: Tensor): Tensor {
    const want = this.inputIsParallel ? this.inFeatures / this.group.size : this.inFeatures;
    if (x.shape[x.ndim - 1] !== want) {
      const how = this.inputIsParallel ? `inFeatures ${this.inFeatures} / tensor-parallel size ${this.group.size}, inputIsParallel` : 'inFeatures';
      throw new ShapeError('RowParallelLinear', `expects inputs with last dim ${want} (${how}), got shape ${shapeStr(x.shape)}`);
    }
    return tidy(() => {
      const xs = this.inputIsParallel ? x : scatterToParallel(x, this.group);
      const y = reduceFromParallel(linear(xs, this.weight, null), this.group);
      return this.bias ? y.add(this.bias) : y;
    });
  }

  override extraRepr(): string {
    return `inFeatures=${this.inFeatures} (${this.weight.shape[1]} on rank ${this.group.rank} of ${this.group.size}), outFeatures=${this.outFeatures}, bias=${this.bias !== null}, inputIsParallel=${this.inputIsParallel}`;
  }
}

/** Options of VocabParallelEmbedding. */
export interface VocabParallelEmbeddingOptions extends FactoryOptions {
  /** The tensor-parallel group the rows are split over. */
  group: ProcessGroup;
  /** The plain embedding whose rows to split (default: a fresh nn.Embedding, so the same seed gives the same rows). */
  source?: Embedding;
}

/**
 * An embedding whose rows (the vocabulary) are split across the group: rank r holds ids
 * [vocabStart, vocabEnd). Each rank looks up the ids it holds (zeros for the others), and the
 * results are all-reduced, so every rank gets every id's row.
 */
export class VocabParallelEmbedding extends Module {
  /** This rank's rows, [numEmbeddings / size, embeddingDim]. */
  weight: Parameter;
  /** Rows of the whole (plain) table. */
  readonly numEmbeddings: number;
  /** Size of each row. */
  readonly embeddingDim: number;
  /** The first id this rank holds. */
  readonly vocabStart: number;
  /** One past the last id this rank holds. */
  readonly vocabEnd: number;
  /** The tensor-parallel group. */
  readonly group: ProcessGroup;

  /** A ValueError when the group size does not divide numEmbeddings (pad the vocabulary) or the group is missing. */
  constructor(numEmbeddings: number, embeddingDim: number, opts: VocabParallelEmbeddingOptions) {
    super();
    const layer = 'VocabParallelEmbedding';
    const g = checkGroup(layer, opts?.group);
    const local = part(layer, 'numEmbeddings', numEmbeddings, g, true);
    const src = opts.source ?? new Embedding(numEmbeddings, embeddingDim, { dtype: opts.dtype, device: opts.device });
    if (!(src instanceof Embedding) || src.numEmbeddings !== numEmbeddings || src.embeddingDim !== embeddingDim || src.paddingIdx !== null) {
      throw new ShapeError(layer, `source must be an nn.Embedding(${numEmbeddings}, ${embeddingDim}) without paddingIdx`);
    }
    this.numEmbeddings = numEmbeddings;
    this.embeddingDim = embeddingDim;
    this.vocabStart = g.rank * local;
    this.vocabEnd = this.vocabStart + local;
    this.group = g;
    this.weight = shardParameter(src.weight, 0, g);
    if (!opts.source) src.dispose();
    checkDevice(layer, this.weight, g);
  }

  /** ids (int32/int64, any shape) -> [...ids.shape, embeddingDim], the same on every rank; an IndexError for an id outside the table. */
  override forward(ids: Tensor): Tensor {
    return tidy(() => {
      checkRange('VocabParallelEmbedding', 'id', ids, this.numEmbeddings);
      const mine = ids.ge(this.vocabStart).logicalAnd(ids.lt(this.vocabEnd));
      const rows = embedding(where(mine, ids.sub(this.vocabStart), 0), this.weight);
      return reduceFromParallel(rows.maskedFill(mine.logicalNot().unsqueeze(-1), 0), this.group);
    });
  }

  override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim} (ids ${this.vocabStart}..${this.vocabEnd - 1} on rank ${this.group.rank} of ${this.group.size})`;
  }
}

/** Options of vocabParallelCrossEntropy. */
export interface VocabParallelCrossEntropyOptions {
  /** Targets equal to this are skipped and excluded from the mean (default -100). */
  ignoreIndex?: number;
  /** 'mean' (default; over the non-ignored targets), 'sum' or 'none' (a loss per target). */
  reduction?: 'mean' | 'sum' | 'none';
}

/**
 * Cross-entropy of logits whose classes are split across the group (rank r holds classes
 * [r C/size, (r+1) C/size), as a vocabulary-parallel output head makes them) against class ids
 * targets of the whole range; localLogits [..., C / size], targets [...]. The logits are never
 * gathered: the row max, the sum of exponentials and the target's logit are all-reduced. Equals
 * nn.crossEntropy on the gathered logits, on every rank.
 */
export function vocabParallelCrossEntropy(localLogits: Tensor, targets: Tensor, group: ProcessGroup, opts: VocabParallelCrossEntropyOptions = {}): Tensor {
  const op = 'vocabParallelCrossEntropy';
  const g = checkGroup(op, group);
  const reduction = opts.reduction ?? 'mean';
  if (reduction !== 'mean' && reduction !== 'sum' && reduction !== 'none') {
    throw new ValueError(op, `reduction must be 'mean', 'sum' or 'none', got '${reduction}'`);
  }
  if (localLogits.ndim < 1 || !sameShape(localLogits.shape.slice(0, -1), targets.shape)) {
    throw new ShapeError(op, `localLogits ${shapeStr(localLogits.shape)} and targets ${shapeStr(targets.shape)} do not fit: expected [..., C / ${g.size}] and [...]`);
  }
  return tidy(() => {
    const n = localLogits.shape[localLogits.ndim - 1], start = g.rank * n;
    const x = localLogits.reshape(-1, n), t = targets.reshape(-1);
    const valid = t.ne(opts.ignoreIndex ?? -100);
    checkRange(op, 'target', where(valid, t, 0), n * g.size, ` (or ignoreIndex ${opts.ignoreIndex ?? -100})`);
    // The shift cancels in the loss and its gradient: it only keeps exp() in range.
    const shifted = x.sub(allReduced(noGrad(() => x.max(-1, true)), g, 'max'));
    const sumExp = reduceFromParallel(shifted.exp().sum(-1), g);
    const mine = t.ge(start).logicalAnd(t.lt(start + n));
    const picked = shifted.gather(1, where(mine, t.sub(start), 0).unsqueeze(1)).squeeze(1).maskedFill(mine.logicalNot(), 0);
    const loss = sumExp.log().sub(reduceFromParallel(picked, g)).maskedFill(valid.logicalNot(), 0);
    if (reduction === 'none') return loss.reshape(targets.shape);
    return reduction === 'sum' ? loss.sum() : loss.sum().div(valid.sum().to(loss.dtype));
  });
}

/** Options of ParallelSelfAttention. */
export interface ParallelSelfAttentionOptions extends FactoryOptions {
  /** The tensor-parallel group the heads are split over. */
  group: ProcessGroup;
  /** Biases on the projections (default true). */
  bias?: boolean;
  /** Dropout on the attention probabilities in training mode (default 0). */
  dropout?: number;
  /** The plain attention whose weights to split (default: a fresh nn.MultiheadAttention). */
  source?: MultiheadAttention;
}

/**
 * Self-attention with the heads split across the group: rank r computes heads [r H/size, (r+1) H/size).
 * The packed q/k/v projection is column-parallel (inProjWeight holds this rank's rows of each of q, k
 * and v: [3 E / size, E]), the output projection row-parallel: one all-reduce forward, one backward.
 * Parameter names are nn.MultiheadAttention's.
 */
export class ParallelSelfAttention extends Module {
  /** This rank's rows of the packed q, k, v projection: [3 E / size, E]. */
  inProjWeight: Parameter;
  /** This rank's part of the packed bias [3 E / size], or null. */
  inProjBias: Parameter | null;
  /** The output projection E -> E, its input features (the heads) split. */
  outProj: RowParallelLinear;
  /** E, the model width. */
  readonly embedDim: number;
  /** Heads of the whole layer. */
  readonly numHeads: number;
  /** Features per head. */
  readonly headDim: number;
  /** Dropout probability on the attention probabilities in training mode. */
  readonly dropout: number;
  /** The tensor-parallel group. */
  readonly group: ProcessGroup;

  /**
   * A ValueError when the group size does not divide numHeads or the group is missing. Every rank of
   * the group must construct it: the output projection's bias is broadcast from group rank 0.
   */
  constructor(embedDim: number, numHeads: number, opts: ParallelSelfAttentionOptions) {
    super();
    const layer = 'ParallelSelfAttention';
    const g = checkGroup(layer, opts?.group);
    part(layer, 'numHeads', numHeads, g);
    const src = opts.source ?? new MultiheadAttention(embedDim, numHeads, { bias: opts.bias, dropout: opts.dropout, dtype: opts.dtype, device: opts.device });
    if (!(src instanceof MultiheadAttention) || !src.inProjWeight || src.embedDim !== embedDim || src.numHeads !== numHeads) {
      throw new ShapeError(layer, `source must be a self-attention nn.MultiheadAttention(${embedDim}, ${numHeads}) with packed projections`);
    }
    this.embedDim = embedDim;
    this.numHeads = numHeads;
    this.headDim = embedDim / numHeads;
    this.dropout = opts.dropout ?? src.dropout;
    this.group = g;
    this.inProjWeight = shardParameter(src.inProjWeight, 0, g, 3);
    this.inProjBias = src.inProjBias ? shardParameter(src.inProjBias, 0, g, 3) : null;
    this.outProj = new RowParallelLinear(embedDim, embedDim, { group: g, inputIsParallel: true, source: src.outProj });
    if (!opts.source) src.dispose();
  }

  /**
   * x [B, L, E] -> [B, L, E]; mask: 'causal', a bool [L, L] (true = blocked), or null. Causal or no
   * mask takes the fused attention where it applies, as nn.MultiheadAttention does.
   */
  override forward(x: Tensor, mask: Tensor | 'causal' | null = null): Tensor {
    const E = this.embedDim;
    if (x.ndim !== 3 || x.shape[2] !== E) throw new ShapeError('ParallelSelfAttention', `expects x [B, L, ${E}], got ${shapeStr(x.shape)}`);
    return tidy(() => {
      const [B, L] = x.shape;
      const local = E / this.group.size, H = this.numHeads / this.group.size, D = this.headDim;
      const heads = (t: Tensor) => t.reshape(B, L, H, D).transpose(1, 2);
      const [q, k, v] = linear(copyToParallel(x, this.group), this.inProjWeight, this.inProjBias).split(local, -1).map(heads);
      const output = scaledDotProductAttention(q, k, v, {
        isCausal: mask === 'causal',
        attnMask: mask === 'causal' ? null : mask,
        dropoutP: this.training ? this.dropout : 0,
      });
      return this.outProj.forward(output.transpose(1, 2).reshape(B, L, local));
    });
  }

  override extraRepr(): string {
    return `embedDim=${this.embedDim}, numHeads=${this.numHeads} (${this.numHeads / this.group.size} on rank ${this.group.rank} of ${this.group.size}), dropout=${this.dropout}`;
  }
}

/** A GPT MLP with fc column-parallel and proj row-parallel (names as nn.GPTMLP's). */
export class ParallelMLP extends Module {
  /** E -> 4E, output features split. */
  fc: ColumnParallelLinear;
  /** 4E -> E, input features split. */
  proj: RowParallelLinear;
  /** Dropout on the output (training only). */
  drop: Dropout;
  /** The tensor-parallel form of source (a plain GPT MLP), over group. Every rank of the group must call it (proj's bias is broadcast). */
  constructor(source: MLP, group: ProcessGroup) {
    super();
    const g = checkGroup('ParallelMLP', group);
    this.fc = new ColumnParallelLinear(source.fc.inFeatures, source.fc.outFeatures, { group: g, gatherOutput: false, source: source.fc });
    this.proj = new RowParallelLinear(source.proj.inFeatures, source.proj.outFeatures, { group: g, inputIsParallel: true, source: source.proj });
    this.drop = new Dropout(source.drop.p);
  }
  /** x [..., E] -> [..., E]. */
  override forward(x: Tensor): Tensor {
    return tidy(() => this.drop.forward(this.proj.forward(this.fc.forward(x).gelu('tanh'))));
  }
}

/** A GPT block with tensor-parallel attention and MLP (names as nn.GPTBlock's). */
export class ParallelBlock extends Module {
  /** LayerNorm before attention (replicated). */
  ln1: LayerNorm;
  /** Causal self-attention, heads split. */
  attn: ParallelSelfAttention;
  /** Dropout on the attention output (training only). */
  drop: Dropout;
  /** LayerNorm before the MLP (replicated). */
  ln2: LayerNorm;
  /** The feed-forward part, split. */
  mlp: ParallelMLP;
  /**
   * The tensor-parallel form of source (a plain GPT block; its weights are copied, it is left as it
   * was), over group. Every rank of the group must call it: the LayerNorms and the row layers' biases
   * are broadcast from group rank 0.
   */
  constructor(source: Block, group: ProcessGroup) {
    super();
    const g = checkGroup('ParallelBlock', group);
    this.ln1 = copyLayerNorm(source.ln1);
    this.attn = new ParallelSelfAttention(source.attn.embedDim, source.attn.numHeads, { group: g, source: source.attn });
    this.drop = new Dropout(source.drop.p);
    this.ln2 = copyLayerNorm(source.ln2);
    this.mlp = new ParallelMLP(source.mlp, g);
    syncReplicated(this.parameters(), g);
  }
  /** x [B, T, E] -> [B, T, E]; mask: 'causal', a bool mask [T, T], or null (as ParallelSelfAttention takes it). */
  override forward(x: Tensor, mask: Tensor | 'causal' | null): Tensor {
    return tidy(() => {
      const y = x.add(this.drop.forward(this.attn.forward(this.ln1.forward(x), mask)));
      return y.add(this.mlp.forward(this.ln2.forward(y)));
    });
  }
}

function copyLayerNorm(src: LayerNorm): LayerNorm {
  const ln = new LayerNorm(src.normalizedShape, { bias: src.bias !== null, eps: src.eps, elementwiseAffine: src.weight !== null, dtype: src.weight?.dtype, device: src.weight?.device });
  ln.loadStateDict(src.stateDict());
  return ln;
}

/**
 * A GPT split across a tensor-parallel group (`dist.tp.parallelize(gpt, group)`): the token embedding
 * and the tied output head vocabulary-parallel, attention heads and MLP features split, LayerNorms
 * and the position embedding replicated. Parameter names are nn.GPT's, with this rank's shapes; a
 * plain GPT state dict loads into it (loadStateDict cuts it), and gatherStateDict(model) puts the
 * plain one back together. forward returns this rank's slice of the logits and the loss
 * (vocabParallelCrossEntropy: the logits are never gathered whole).
 */
export class ParallelGPT extends Module {
  /** Token embedding, rows split (shared with lmHead). */
  wte: VocabParallelEmbedding;
  /** Learned position embedding [blockSize, nEmbd] (replicated). */
  wpe: Embedding;
  /** Dropout on the summed embeddings (training only). */
  drop: Dropout;
  /** The tensor-parallel blocks. */
  blocks: ModuleList<ParallelBlock>;
  /** The final LayerNorm (replicated). */
  lnF: LayerNorm;
  /** Output head nEmbd -> vocabSize, its output features split; its weight is wte.weight. */
  lmHead: ColumnParallelLinear;
  /** The plain model's configuration. */
  readonly config: Required<GPTConfig>;
  /** The tensor-parallel group. */
  readonly group: ProcessGroup;

  /**
   * The tensor-parallel form of source (its weights are copied; source is left as it was). Every rank
   * of the group must call it. Replicated parameters and the random generator's state are broadcast
   * from the group's rank 0, so replicated activations and their dropout agree across the group even
   * when the ranks were seeded differently. (Attention dropout then draws the same stream on every
   * rank, for different heads: Megatron keeps a second generator per rank for it, kiln does not yet.)
   * A ValueError when the group size does not divide vocabSize or nHead.
   */
  constructor(source: GPT, group: ProcessGroup) {
    super();
    const layer = 'ParallelGPT';
    const g = checkGroup(layer, group);
    if (!(source instanceof GPT)) throw new ValueError(layer, 'source must be an nn.GPT');
    const cfg = source.config;
    part(layer, 'config.vocabSize', cfg.vocabSize, g, true);
    part(layer, 'config.nHead', cfg.nHead, g);
    this.config = cfg;
    this.group = g;
    this.wte = new VocabParallelEmbedding(cfg.vocabSize, cfg.nEmbd, { group: g, source: source.wte });
    const pos = source.wpe.weight;
    this.wpe = new Embedding(cfg.blockSize, cfg.nEmbd, { weight: Parameter.own(noGrad(() => pos.clone()), pos.requiresGrad) });
    this.drop = new Dropout(source.drop.p);
    this.blocks = new ModuleList([...source.blocks].map((b) => new ParallelBlock(b, g)));
    this.lnF = copyLayerNorm(source.lnF);
    this.lmHead = new ColumnParallelLinear(cfg.nEmbd, cfg.vocabSize, { group: g, bias: false, gatherOutput: false, weight: this.wte.weight });
    syncReplicated(this.parameters(), g);
    this.syncRng();
  }

  /** Broadcasts the random generator's state from group rank 0, so replicated dropout agrees. */
  private syncRng(): void {
    const { seed, offset } = getRngState();
    const state = tensor(new BigInt64Array([BigInt.asIntN(64, BigInt(seed)), BigInt.asIntN(64, BigInt(offset))]), { dtype: 'int64', device: this.group.device });
    try {
      this.group.broadcast(state, 0).waitSync();
      const [s, o] = state.dataSync() as BigInt64Array;
      setRngState({ seed: BigInt.asUintN(64, s).toString(), offset: BigInt.asUintN(64, o).toString() });
    } finally {
      state.dispose();
    }
  }

  /** idx [B, T] token ids -> the final hidden states lnF(h) [B, T, nEmbd], the same on every rank. */
  hiddenStates(idx: Tensor): Tensor {
    if (idx.ndim !== 2 || !isIntegral(idx.dtype)) {
      throw new (idx.ndim !== 2 ? ShapeError : DTypeError)('ParallelGPT', `expects token ids [B, T] of an integer dtype, got ${shapeStr(idx.shape)} ${idx.dtype}`);
    }
    const T = idx.shape[1];
    if (T > this.config.blockSize) throw new ValueError('ParallelGPT', `sequence of ${T} positions is longer than blockSize ${this.config.blockSize}`);
    return tidy(() => {
      let x = this.drop.forward(this.wte.forward(idx).add(this.wpe.weight.narrow(0, 0, T)));
      const mask = T > 1 ? 'causal' : null;
      for (const block of this.blocks) x = block.forward(x, mask);
      return this.lnF.forward(x);
    });
  }

  /**
   * idx [B, T] -> this rank's slice of the logits [B, T, vocabSize / size] (classes
   * wte.vocabStart..vocabEnd-1); with targets [B, T], also the mean cross-entropy over every class
   * (targets equal to -100 ignored), the same on every rank.
   */
  override forward(idx: Tensor, targets?: Tensor | null): {
    /** This rank's slice of the next-token logits. */
    logits: Tensor;
    /** With targets: the mean cross-entropy, a scalar. */
    loss?: Tensor;
  } {
    if (targets && !sameShape(targets.shape, idx.shape)) {
      throw new ShapeError('ParallelGPT', `targets must be ${shapeStr(idx.shape)} like idx, got ${shapeStr(targets.shape)}`);
    }
    return tidy(() => {
      const logits = this.lmHead.forward(this.hiddenStates(idx));
      if (!targets) return { logits };
      return { logits, loss: vocabParallelCrossEntropy(logits, targets, this.group) };
    });
  }

  /** Loads a plain GPT state dict (cut to this rank's shards) or this model's own (already cut). */
  override loadStateDict(stateDict: Map<string, Tensor> | Record<string, Tensor>, opts: LoadStateDictOptions = {}): StateDictLoadResult {
    const cut = shardStateDict(this, stateDict, opts);
    try {
      return super.loadStateDict(cut, opts);
    } finally {
      for (const [k, t] of cut) if (t !== (stateDict instanceof Map ? stateDict.get(k) : stateDict[k])) t.dispose();
    }
  }

  override extraRepr(): string {
    return `rank ${this.group.rank} of ${this.group.size}`;
  }
}

/** A GPT split across the tensor-parallel group: new ParallelGPT(gpt, group). Every rank of the group must call it. */
export function parallelize(gpt: GPT, group: ProcessGroup): ParallelGPT {
  return new ParallelGPT(gpt, group);
}

// ---- gradient clipping ----

/**
 * optim.clipGradNorm for a model holding tensor-parallel layers: the norm is taken over the whole
 * (plain) model's gradients, the split ones summed over their group and the replicated ones counted
 * once, and every rank scales by the same coefficient. Returns the total norm (as optim.clipGradNorm).
 * Every rank of the group must call it; under data parallelism, after the gradients were averaged.
 */
export function clipGradNorm(model: Module, maxNorm: number, normType = 2): Tensor {
  const op = 'tp.clipGradNorm';
  const params = model.parameters();
  const groups = new Set(params.flatMap((p) => SHARDS.get(p)?.group ?? []));
  if (groups.size > 1) throw new ValueError(op, `the model's parameters are split over ${groups.size} different groups; clip each part's gradients with optim.clipGradNorm and a reducePartial of your own`);
  const [g] = groups;
  if (!g) return optimClipGradNorm(params, maxNorm, normType);
  const replicated = params.filter((p) => !SHARDS.has(p));
  return optimClipGradNorm(params, maxNorm, normType, {
    reducePartial: (partial) => tidy(() => {
      if (normType === Infinity) {
        g.allReduce(partial, { op: 'max' }).waitSync();
        return;
      }
      // Sum the split gradients' partials over the group, then add the replicated ones' once.
      const rep = gradNormPartial(replicated, normType).to(partial.dtype);
      partial.sub_(rep);
      g.allReduce(partial).waitSync();
      partial.add_(rep);
    }),
  });
}

// ---- state dicts ----

/** Each of model's parameter names (tied ones under every name) with its shard, where it has one. */
function shardsByName(model: Module): Map<string, [Parameter, Shard]> {
  const out = new Map<string, [Parameter, Shard]>();
  for (const [name, p] of model.namedParameters({ removeDuplicate: false })) {
    const s = SHARDS.get(p);
    if (s) out.set(name, [p, s]);
  }
  return out;
}

/**
 * A copy of stateDict with each plain (whole) tensor of a split parameter of model cut to this rank's
 * shard; entries already shaped like the shard, and replicated ones, pass as they are (the same
 * tensors). opts.keyMap (as loadStateDict takes it) renames keys for the lookup only. No communication.
 */
export function shardStateDict(model: Module, stateDict: Map<string, Tensor> | Record<string, Tensor>, opts: Pick<LoadStateDictOptions, 'keyMap'> = {}): Map<string, Tensor> {
  const shards = shardsByName(model);
  const out = new Map<string, Tensor>();
  for (const [k, t] of stateDict instanceof Map ? stateDict : Object.entries(stateDict)) {
    const name = opts.keyMap ? opts.keyMap(k) : k;
    const hit = name === null ? undefined : shards.get(name);
    const cut = hit && !sameShape(t.shape, hit[0].shape) && sameShape(t.shape, hit[1].fullShape);
    out.set(k, cut ? cutShard(t, hit[1], hit[1].group.rank) : t);
  }
  return out;
}

/** Options of gatherStateDict. */
export interface GatherStateDictOptions {
  /** Only this world rank keeps the gathered tensors; the others get an empty Map (default: every rank keeps them). */
  dst?: number;
}

/**
 * The plain (unsplit) state dict of a model holding tensor-parallel layers: split parameters are
 * gathered from their group (a collective: every rank of the groups must call it, in the same order),
 * the rest are model.stateDict()'s aliases. Keys are the plain model's (a ParallelGPT's load into an
 * nn.GPT). Dispose the tensors when done.
 */
export function gatherStateDict(model: Module, opts: GatherStateDictOptions = {}): Map<string, Tensor> {
  const shards = shardsByName(model);
  const sd = model.stateDict();
  const out = new Map<string, Tensor>();
  const gathered = new Map<Parameter, Tensor>();
  for (const [k, t] of sd) {
    const hit = shards.get(k);
    if (!hit) {
      out.set(k, t);
      continue;
    }
    t.dispose();
    const full = gathered.get(hit[0]);
    // A tied parameter's second name gets its own handle, as stateDict() gives each name one.
    if (full) out.set(k, full.detach());
    else {
      const joined = joinShard(hit[0], hit[1]);
      gathered.set(hit[0], joined);
      out.set(k, joined);
    }
  }
  if (opts.dst === undefined || opts.dst === worldRank()) return out;
  for (const t of out.values()) t.dispose();
  return new Map();
}
