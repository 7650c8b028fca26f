// The Trainer's cudaGraph option: a training step captured once as a CUDA graph (kiln.cuda.CUDAGraph)
// and replayed for the steps after it, each on its batches copied into the graph's static input
// tensors, so that a step costs one launch and no JavaScript per op. The first steps run eagerly
// (they make the optimizer's state, the gradients' first layout and the libraries' workspaces, which
// a capture must find in place), and the capture waits for a step shaped like the one before it (not
// an epoch's short tail); a step whose batches differ from the captured ones (a tensor's shape or
// dtype, or any value that is not a tensor, which a graph would keep at its captured value) runs
// eagerly too. A replay copies the batches' tensors straight into the graph's inputs (from the host
// or the GPU), with no copy of its own. Also the walk over a batch's tensors (arrays and plain
// objects) the Trainer moves batches to a device with.
import { CUDAGraph, emptyCache } from '../cuda';
import { ValueError } from '../errors';
import { dispose, keep } from '../memory';
import type { Module } from '../nn/module';
import type { Optimizer } from '../optim/optimizer';
import { Tensor } from '../tensor';
import { TrainStrategy } from './strategy';

/** Eager steps before the capture. */
const WARMUP_STEPS = 2;

/** batch with every tensor in it (in arrays and plain objects, recursively) replaced by f(tensor). */
export function mapBatch<B>(batch: B, f: (t: Tensor) => Tensor): B {
  const map = (x: unknown): unknown => {
    if (x instanceof Tensor) return f(x);
    if (Array.isArray(x)) return x.map(map);
    if (x !== null && typeof x === 'object' && Object.getPrototypeOf(x) === Object.prototype) {
      return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, map(v)]));
    }
    return x;
  };
  return map(batch) as B;
}

/**
 * What a step must share with the captured one: tensors' dtype and shape (wherever they are: a step
 * moves them to the GPU), other values as they are.
 */
function signature(batch: unknown): string {
  if (batch instanceof Tensor) return `${batch.dtype}[${batch.shape}]`;
  if (Array.isArray(batch)) return `[${batch.map(signature).join(',')}]`;
  if (batch !== null && typeof batch === 'object' && Object.getPrototypeOf(batch) === Object.prototype) {
    return `{${Object.entries(batch).map(([k, v]) => `${JSON.stringify(k)}:${signature(v)}`).join(',')}}`;
  }
  return typeof batch === 'bigint' ? `${batch}n` : (JSON.stringify(batch) ?? String(batch));
}

/** batch with each of its tensors (in arrays and plain objects) on device; tensors already there stay. */
export function toDevice<B>(batch: B, device: string): B {
  return mapBatch(batch, (t) => t.to({ device }));
}

function tensorsOf(batch: unknown): Tensor[] {
  const out: Tensor[] = [];
  mapBatch(batch, (t) => (out.push(t), t));
  return out;
}

/** Frees the tensors of moved (a batch mapped by toDevice) that are not original's own. */
function disposeCopies(moved: unknown, original: unknown): void {
  const own = new Set(tensorsOf(original));
  for (const t of tensorsOf(moved)) if (!own.has(t)) t.dispose();
}

/** A source of micro-batches: the Trainer's training stream, or the captured step's inputs. */
export interface BatchFeed<B> {
  next(): B;
  /** Whether the Trainer owns (and disposes) what next() returns. */
  readonly owned: boolean;
}

/** The Trainer's checks of the cudaGraph option, when it is constructed. */
export function checkGraphable(model: Module, optimizer: Optimizer<any>, strategy: TrainStrategy<any>): void {
  const op = 'Trainer';
  if (strategy.constructor !== TrainStrategy) {
    throw new ValueError(op, `cudaGraph needs the single-process strategy, not ${strategy.constructor.name} (a distributed step waits on the host between its parts)`);
  }
  const fixed = optimizer.paramGroups.findIndex((g) => !(g as { capturable?: boolean }).capturable);
  if (fixed !== -1) {
    throw new ValueError(op, `cudaGraph needs an optimizer made with capturable: true (group ${fixed} is not): its learning rate and step count must live on the GPU`);
  }
  const devices = new Set(model.parameters().map((p) => p.device));
  if (devices.size !== 1 || !String([...devices][0]).startsWith('cuda')) {
    throw new ValueError(op, `cudaGraph needs the model on one GPU; its parameters are on ${[...devices].join(', ') || 'nothing'}`);
  }
}

/** What a step's work returns: the mean loss and the gradient norm (null without clipping), on the device. */
export interface StepOutputs {
  loss: Tensor;
  gradNorm: Tensor | null;
}

/** One training step, eager at first, then captured and replayed (see the header). */
export class GraphedStep {
  private graph: CUDAGraph | null = null;
  /** The captured step's inputs: static copies of its micro-batches, rewritten before each replay. */
  private inputs: unknown[] = [];
  /** Their tensors, micro-batch by micro-batch, in the order tensorsOf walks a batch. */
  private inputTensors: Tensor[][] = [];
  /** What the captured step returned; every replay rewrites it. */
  private outputs: StepOutputs | null = null;
  private eagerSteps = 0;
  /** The signature of the last eager step's batches, then of the captured step's. */
  private lastSignature = '';

  /** device: the GPU the model is on, where the batches go. */
  constructor(
    private readonly optimizer: Optimizer<any>,
    private readonly device: string,
  ) {}

  /**
   * Runs one step on batches (micro-batches, anywhere) with work (the step's forward, backward and
   * optimizer step on micro-batches on the GPU, synchronous): eagerly, or captured and replayed.
   * Returns tensors the caller owns.
   */
  step(batches: unknown[], work: (batches: unknown[]) => StepOutputs): StepOutputs {
    const sig = batches.map(signature).join(';');
    const eager = this.graph ? sig !== this.lastSignature : this.eagerSteps < WARMUP_STEPS || sig !== this.lastSignature;
    if (eager) {
      if (!this.graph) this.lastSignature = sig;
      this.eagerSteps++;
      const moved = batches.map((b) => toDevice(b, this.device));
      try {
        return work(moved);
      } finally {
        moved.forEach((b, i) => disposeCopies(b, batches[i]));
      }
    }
    if (this.graph) {
      batches.forEach((b, i) => tensorsOf(b).forEach((t, j) => this.inputTensors[i][j].copy_(t)));
    } else {
      this.capture(batches, work);
    }
    this.optimizer.syncLr();
    this.graph!.replay();
    const out = this.outputs!;
    return { loss: out.loss.clone(), gradNorm: out.gradNorm ? out.gradNorm.clone() : null };
  }

  /** Captures work on static copies of batches (the replay that follows runs this step). */
  private capture(batches: unknown[], work: (batches: unknown[]) => StepOutputs): void {
    // Copies of their own on the GPU (a tensor moved there is one already).
    this.inputs = batches.map((b) => mapBatch(b, (t) => keep(t.device === this.device ? t.clone() : t.to({ device: this.device }))));
    this.inputTensors = this.inputs.map(tensorsOf);
    // Written now, outside the graph: inside it, nothing host-side may change.
    this.optimizer.syncLr();
    // The eager steps' cached memory goes back to the driver: the graph allocates its own.
    emptyCache();
    const graph = new CUDAGraph(this.device);
    try {
      const out = graph.capture(() => work(this.inputs));
      this.outputs = { loss: keep(out.loss), gradNorm: out.gradNorm && keep(out.gradNorm) };
    } catch (e) {
      dispose(this.inputs);
      this.inputs = [];
      this.inputTensors = [];
      throw new ValueError('Trainer', `cudaGraph: the training step could not be captured: ${(e as Error).message}`);
    }
    this.graph = graph;
  }

  /** Frees the graph and its inputs and outputs. */
  dispose(): void {
    this.graph?.dispose();
    this.graph = null;
    dispose([this.inputs, this.outputs?.loss, this.outputs?.gradNorm]);
    this.inputs = [];
    this.inputTensors = [];
    this.outputs = null;
  }
}
