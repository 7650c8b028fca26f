// The autograd tape: graph nodes recorded by ops (recordOp) and the backward engine that walks them
// in dependency order, accumulates gradients into leaves, runs hooks and frees saved tensors.
import { setAutocastState } from '../autocast';
import { AutogradError } from '../errors';
import { keep, tidy } from '../memory';
import { sameShape, shapeStr } from '../shape';
import type { Tensor } from '../tensor';
import { isGradEnabled, noGrad } from './grad_mode';

/**
 * The backward rule of an op: given the gradient of its output and the tensors it saved, returns one
 * gradient per input (null where an input needs none; `needs[i]` says which are wanted). Rules build
 * their results from ops; temporaries they make are disposed by the engine.
 */
export type BackwardFn = (grad: Tensor, saved: Tensor[], needs: boolean[]) => Array<Tensor | null | undefined>;

type Edge = { node: Node; leaf?: undefined } | { leaf: Tensor; node?: undefined };

/**
 * What keeps a node's saved tensors alive: a count of the live tensors it produced and of the edges
 * from consumer nodes, the saved tensors, and the same for the nodes its inputs came from. The
 * garbage collector's safety net (lib/tensor.ts) holds this rather than the Node: a node's backward
 * rule is a closure that may reach the node's own output, and a net that reached the output would
 * keep it alive for ever.
 */
class NodeLife {
  refs = 0;
  released = false;
  constructor(
    public saved: Tensor[],
    /** The lives of the nodes this node's inputs came from, one per edge; each is referenced until this one is freed. */
    readonly upstream: readonly NodeLife[],
  ) {
    for (const u of upstream) u.refs++;
  }

  release(): void {
    for (const t of this.saved) t.dispose();
    this.saved = [];
    this.released = true;
  }

  /**
   * Drops one reference. When none is left, nothing can run backward through the node any more: its
   * saved tensors are freed and it drops its references to the nodes upstream (iteratively, so a
   * graph of any depth unwinds without deep recursion).
   */
  unref(): void {
    const stack: NodeLife[] = [this];
    while (stack.length) {
      const n = stack.pop()!;
      if (--n.refs > 0) continue;
      n.release();
      for (const u of n.upstream) stack.push(u);
    }
  }
}

/**
 * One recorded op in the graph (kiln.GradNode; like a PyTorch grad_fn): tensor.gradFn of a result
 * that requires grad. Ops make them as they record; backward() walks them.
 */
export class Node {
  /** @internal Hooks on the gradient of this node's output (registerHook on a non-leaf). */
  hooks: Array<(grad: Tensor) => Tensor | void> = [];
  /** @internal Tensors whose .grad is kept although they are not leaves (retainGrad), held weakly. */
  retainers: WeakRef<Tensor>[] = [];
  /** @internal The reference count and saved tensors (see NodeLife). */
  readonly life: NodeLife;
  /** @internal Each saved tensor's _version when it was saved. */
  readonly savedVersions: number[];
  /** @internal The backward rule (null once released). */
  fn: BackwardFn | null;

  /** @internal Made by recordOp. */
  constructor(
    /** The op that made the output ('matmul', 'add', ...). */
    readonly name: string,
    /** Per input: the node that made it, the leaf it is, or null when it needs no gradient. */
    readonly next: ReadonlyArray<Edge | null>,
    /** The shape of each input. */
    readonly inputShapes: ReadonlyArray<readonly number[]>,
    saved: Tensor[],
    fn: BackwardFn | null,
  ) {
    this.fn = fn;
    this.savedVersions = saved.map((t) => t._version);
    const upstream: NodeLife[] = [];
    for (const e of next) if (e?.node) upstream.push(e.node.life);
    this.life = new NodeLife(saved, upstream);
  }

  /** @internal Tensors the backward rule needs (freed once released). */
  get saved(): Tensor[] {
    return this.life.saved;
  }

  /** @internal True once the saved tensors were freed (after backward, or when nothing can reach the node). */
  get released(): boolean {
    return this.life.released;
  }

  /** @internal Throws when a saved tensor was written in place after it was saved (its gradient would be wrong). */
  checkSavedVersions(): void {
    const saved = this.saved;
    for (let i = 0; i < saved.length; i++) {
      const t = saved[i], now = t._version;
      if (now !== this.savedVersions[i]) {
        throw new AutogradError(
          'backward',
          `a tensor of shape ${shapeStr(t.shape)} (${t.dtype}) that ${this.name} saved for backward was modified by an ` +
            `in-place operation after it was saved (version ${this.savedVersions[i]}, now ${now}); use the ` +
            'out-of-place form, or clone() the tensor before writing into it',
        );
      }
    }
  }

  /** @internal Frees the saved tensors, the backward rule and the hooks (after a backward that does not retain the graph). */
  release(): void {
    this.life.release();
    this.fn = null;
    this.hooks = [];
  }
}

/** Whether recordOp would record an op on inputs: grad mode is on and one of them requires grad. */
export function willRecord(inputs: ReadonlyArray<Tensor | null | undefined>): boolean {
  return isGradEnabled() && inputs.some((t) => t?.requiresGrad);
}

/**
 * Records output as the result of op `name` on inputs when grad mode is on and an input requires
 * grad. `saved` are the tensors backward needs; the graph keeps its own references to them, so the
 * caller may dispose its own. Returns output.
 */
export function recordOp(
  name: string,
  inputs: ReadonlyArray<Tensor | null | undefined>,
  output: Tensor,
  saved: readonly Tensor[],
  fn: BackwardFn,
): Tensor {
  if (!willRecord(inputs)) return output;
  const next = inputs.map((t): Edge | null => {
    if (!t || !t.requiresGrad) return null;
    return t.gradFn ? { node: t.gradFn } : { leaf: t };
  });
  for (const t of saved) t._check(name);   // before any alias exists, so a throw leaves none behind
  const node = new Node(
    name,
    next,
    inputs.map((t) => (t ? t.shape : [])),
    saved.map((t) => t._aliasForGraph('graph')),
    fn,
  );
  output._setGradFn(node);
  return output;
}

/**
 * Adds gradient g into t.grad. The first gradient becomes t.grad when the engine owns it outright
 * (`owned`: not a view, and no hook saw it); otherwise .grad starts as a copy, as PyTorch copies a
 * gradient someone else holds. Later ones are added IN PLACE into the existing .grad's storage, so a
 * .grad that is a view of a larger buffer (a data-parallel bucket) stays that view and the buffer
 * holds the sum. An owned g is disposed once used; a hook's tensor stays the hook's.
 */
function accumulateInto(t: Tensor, g: Tensor, owned: boolean): void {
  const old = t.grad;
  if (!old) {
    if (!owned || g._isView || !g.isContiguous()) {
      const c = g.clone();
      if (owned) g.dispose();
      g = c;
    }
    t.grad = keep(g);
    return;
  }
  try {
    if (!sameShape(old.shape, t.shape)) {
      throw new AutogradError('backward', `the .grad of a tensor of shape ${shapeStr(t.shape)} has shape ${shapeStr(old.shape)}; set .grad to a tensor of the tensor's shape (or null)`);
    }
    if (g === old) old.add_(old.clone());
    else old.add_(g);
    keep(old);
  } finally {
    if (owned && g !== old) g.dispose();
  }
}

function accumulateLeaf(leaf: Tensor, g: Tensor): void {
  // The engine's gradient is disposed when a hook replaces it; a hook's own tensor never is, and a
  // gradient a hook has seen may be held by it, so .grad does not take it over.
  let engineOwned = true;
  for (const hook of leaf._gradHooks) {
    const r = hook(g);
    if (r && r !== g) {
      if (engineOwned) g.dispose();
      g = r;
      engineOwned = false;
    }
  }
  accumulateInto(leaf, g, engineOwned && leaf._gradHooks.length === 0);
  for (const hook of leaf._postAccumulateHooks) hook(leaf);
}

/**
 * Adds gradient r into pending[key] and counts one of key's incoming edges as delivered. Returns the
 * summed gradient (taken out of pending) once every edge into key has delivered, else null.
 */
function gather<K>(pending: Map<K, Tensor>, deps: Map<K, number>, key: K, r: Tensor): Tensor | null {
  const prev = pending.get(key);
  const sum = prev ? prev.add(r) : r;
  if (prev) {
    prev.dispose();
    r.dispose();
  }
  const left = deps.get(key)! - 1;
  deps.set(key, left);
  if (left > 0) {
    pending.set(key, sum);
    return null;
  }
  pending.delete(key);
  return sum;
}

/** Backpropagates from root (see Tensor.backward). */
// Callbacks queued during the backward in progress (null when none runs).
let endOfBackward: Array<(completed: boolean) => void> | null = null;

/**
 * @internal Runs fn once the backward in progress has ended (torch's queue_callback): with true
 * after it delivered every gradient (data parallelism launches its last buckets there), with false
 * when it threw (so per-backward state can be reset; the backward's own error is what propagates).
 * Only from a gradient hook.
 */
export function queueBackwardCallback(fn: (completed: boolean) => void): void {
  if (!endOfBackward) throw new AutogradError('queueBackwardCallback', 'no backward is running');
  endOfBackward.push(fn);
}

export function runBackward(root: Tensor, gradient: Tensor | undefined, retainGraph: boolean): void {
  const outer = endOfBackward;
  const callbacks: Array<(completed: boolean) => void> = (endOfBackward = []);
  let completed = false;
  try {
    backwardFrom(root, gradient, retainGraph);
    completed = true;
  } finally {
    endOfBackward = outer;
    if (!completed) {
      for (const fn of callbacks) {
        try {
          fn(false);
        } catch {
          // The backward's own error is the one to report.
        }
      }
    }
  }
  // Every callback runs even when one throws (each resets its own per-backward state); the first
  // error is rethrown.
  let error: unknown = null;
  for (const fn of callbacks) {
    try {
      fn(true);
    } catch (e) {
      error ??= e;
    }
  }
  if (error !== null) throw error;
}

function backwardFrom(root: Tensor, gradient: Tensor | undefined, retainGraph: boolean): void {
  if (!root.requiresGrad) {
    throw new AutogradError('backward', 'tensor does not require grad and has no grad function');
  }
  let g0: Tensor;
  if (gradient === undefined) {
    if (root.numel !== 1) {
      throw new AutogradError(
        'backward',
        `grad can be implicitly created only for scalar outputs; got shape ${shapeStr(root.shape)} (pass a gradient)`,
      );
    }
    g0 = noGrad(() => root._onesLike());
  } else {
    if (!sameShape(gradient.shape, root.shape)) {
      throw new AutogradError(
        'backward',
        `gradient shape ${shapeStr(gradient.shape)} does not match tensor shape ${shapeStr(root.shape)}`,
      );
    }
    g0 = gradient._aliasForGraph();
    g0._isView = true;
  }
  // Backward computes in the dtypes the forward chose: autocast is off while rules run.
  const autocastBefore = setAutocastState(null);
  try {
    noGrad(() => {
      if (!root.gradFn) {
        accumulateLeaf(root, g0);
        return;
      }
      // Count, for each node and leaf reachable from the root, how many edges lead into it. A leaf
      // reached by several edges gets the sum of their gradients once (hooks run once, as in PyTorch).
      const deps = new Map<Node, number>();
      const leafDeps = new Map<Tensor, number>();
      const stack: Node[] = [root.gradFn];
      deps.set(root.gradFn, 0);
      while (stack.length) {
        const n = stack.pop()!;
        for (const e of n.next) {
          if (e?.leaf) leafDeps.set(e.leaf, (leafDeps.get(e.leaf) ?? 0) + 1);
          if (!e || !e.node) continue;
          const c = deps.get(e.node);
          if (c === undefined) {
            deps.set(e.node, 1);
            stack.push(e.node);
          } else deps.set(e.node, c + 1);
        }
      }
      const grads = new Map<Node, Tensor>([[root.gradFn, g0]]);
      const leafGrads = new Map<Tensor, Tensor>();
      const ready: Node[] = [root.gradFn];
      try {
        while (ready.length) {
          const node = ready.pop()!;
          let g = grads.get(node)!;
          grads.delete(node);
          let results: Array<Tensor | null | undefined> = [];
          const owned = new Set<Tensor>();   // results passed on (pending sums and leaves dispose them)
          try {
            if (node.released || !node.fn) {
              throw new AutogradError(
                'backward',
                `trying to backward through the graph a second time (at ${node.name}); its saved tensors were freed ` +
                  'by the first backward. Pass {retainGraph: true} to the first call if you need to backward twice',
              );
            }
            node.checkSavedVersions();
            for (const hook of node.hooks) {
              const r = hook(g);
              if (r && r !== g) {
                g.dispose();
                g = r;
              }
            }
            for (const ref of node.retainers) {
              const t = ref.deref();
              if (!t || t.isDisposed) continue;
              const a = g._aliasForGraph();
              a._isView = true;   // g flows on to the node's rule: the first .grad is a copy of it
              accumulateInto(t, a, true);
            }
            const fn = node.fn;
            const needs = node.next.map((e) => e !== null);
            results = tidy(() => fn(g, node.saved, needs));
            for (let i = 0; i < node.next.length; i++) {
              const edge = node.next[i];
              let r = results[i];
              if (!edge || !r) continue;
              if (!sameShape(r.shape, node.inputShapes[i])) {
                throw new AutogradError(
                  'backward',
                  `${node.name} returned a gradient of shape ${shapeStr(r.shape)} for input ${i} of shape ` +
                    `${shapeStr(node.inputShapes[i])}`,
                );
              }
              // Every consumer owns its own handle: a rule may return g itself or one tensor twice.
              if (r === g || owned.has(r)) {
                const a = r._aliasForGraph();
                a._isView = true;
                r = a;
              }
              owned.add(r);
              if (edge.leaf) {
                const total = gather(leafGrads, leafDeps, edge.leaf, r);
                if (total) accumulateLeaf(edge.leaf, total);
              } else {
                const total = gather(grads, deps, edge.node, r);
                if (total) {
                  grads.set(edge.node, total);
                  ready.push(edge.node);
                }
              }
            }
          } finally {
            // What this node made and did not pass on: its gradient, results for inputs that need none,
            // and on a throw the results not reached yet.
            for (const r of results) if (r && r !== g && !owned.has(r)) r.dispose();
            g.dispose();
          }
          if (!retainGraph) node.release();
        }
      } finally {
        for (const t of grads.values()) t.dispose();
        for (const t of leafGrads.values()) t.dispose();
      }
    });
  } finally {
    setAutocastState(autocastBefore);
  }
}
