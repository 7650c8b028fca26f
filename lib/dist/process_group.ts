// Process groups (torch.distributed's): initProcessGroup joins this process to the job the
// environment describes (lib/dist/env.ts), through a TCPStore at MASTER_ADDR:MASTER_PORT that rank
// 0 hosts; a group then runs collectives in place on CPU tensors (Gloo) or CUDA tensors (NCCL),
// natively (native/dist). Every collective returns at once with a Work: `await` it (or its wait()) to
// know it is done; the JavaScript thread never blocks on the network, except in Work.waitSync (for
// autograd rules, which cannot await). Every rank must issue the same
// collectives in the same order. A failure (peer gone, timeout) rejects with a DistError naming the
// op, the rank and the backend, and breaks the group: later ops fail at once.
import { distNative as N, GroupHandle, WorkHandle } from '../ops/dist_runtime';
import { cat } from '../ops/shape';
import { empty, tensor, zeros } from '../ops/creation';
import type { Device } from '../device';
import { deviceCount } from '../cuda';
import { DeviceError, DistError, ValueError } from '../errors';
import { Tensor } from '../tensor';
import { TCPStore } from './store';
import { DistEnv, readDistEnv } from './env';

/** The collective library: 'gloo' for CPU tensors, 'nccl' for CUDA tensors. */
export type Backend = 'gloo' | 'nccl';
/** How allReduce and reduceScatter combine the ranks' values ('avg' needs floating point tensors). */
export type ReduceOp = 'sum' | 'avg' | 'max' | 'min';

const REDUCE_CODES: Record<ReduceOp, number> = { sum: 0, avg: 1, max: 2, min: 3 };

/** torch's default: 30 minutes is too long to notice a dead peer in a test; kiln waits 5 minutes. */
const DEFAULT_TIMEOUT_MS = 300_000;

/**
 * An operation in flight. `await work` (or `await work.wait()`) resolves once the op has finished
 * (for NCCL: once later work on the current CUDA stream is ordered after it) and rejects with its
 * DistError; isCompleted() asks without waiting. Tensors the op writes must not be read before.
 */
export class Work implements PromiseLike<void> {
  private readonly handle: WorkHandle;
  private onDone: (() => void) | null;
  private onFail: (() => void) | null;
  private settled: Promise<void> | null = null;

  /** @internal onDone runs once the op succeeded (copies out of a temporary), onFail once it failed. */
  constructor(handle: WorkHandle, onDone: (() => void) | null = null, onFail: (() => void) | null = null) {
    this.handle = handle;
    this.onDone = onDone;
    this.onFail = onFail;
  }

  /** Resolves when the op has finished; rejects with its DistError. Calling it again returns the same promise. */
  wait(): Promise<void> {
    if (!this.settled) {
      this.settled = N.pgWorkWait(this.handle).then(
        () => this.finish(true),
        (e: unknown) => {
          this.finish(false);
          throw e;
        },
      );
    }
    return this.settled;
  }

  /**
   * Blocks the calling thread until the op has finished (for NCCL: until later work on the current
   * stream is ordered after it); throws its DistError. For code that cannot await, such as the
   * collectives inside tensor-parallel autograd rules. The op never needs the JavaScript thread to
   * progress (it runs on the group's own thread), so this cannot deadlock this process, but the event
   * loop stands still meanwhile: up to the group's timeout if a peer never issues the op.
   */
  waitSync(): void {
    try {
      N.pgWorkWaitSync(this.handle);
    } catch (e) {
      this.finish(false);
      throw e;
    }
    this.finish(true);
  }

  /** Runs onDone or onFail, once, whichever of wait() and waitSync() sees the end first. */
  private finish(ok: boolean): void {
    const fn = ok ? this.onDone : this.onFail;
    this.onDone = this.onFail = null;
    fn?.();
  }

  /** Whether the op has finished (successfully or not), without waiting. */
  isCompleted(): boolean {
    return N.pgWorkDone(this.handle);
  }

  /** Makes a Work awaitable: `await dist.allReduce(t)`. */
  then<A = void, B = never>(onfulfilled?: ((value: void) => A | PromiseLike<A>) | null, onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<A | B> {
    return this.wait().then(onfulfilled, onrejected);
  }
}

/** Options of a collective that reduces. */
export interface ReduceOptions {
  /** How values combine (default 'sum'). */
  op?: ReduceOp;
}

/** What went through a group, per op name ('allReduce', 'send', ...): see ProcessGroup.commStats. */
export type CommStats = Record<string, {
  /** Ops issued. */
  calls: number;
  /** Bytes of tensor data in them (the message size, as nccl-tests count it: allGather's output, reduceScatter's input). */
  bytes: number;
}>;

/** Options of send and recv. */
export interface P2POptions {
  /** Matches a send with the recv of the same tag (default 0; NCCL matches in order and ignores it). */
  tag?: number;
}

/**
 * A set of ranks that run collectives together: the world from initProcessGroup, or a subgroup from
 * newGroup. Ranks passed to its methods (src, dst) are ranks within the group; `ranks` maps them to
 * world ranks. Tensors are worked on in place and must be contiguous, on the CPU for Gloo and on this
 * process's GPU for NCCL.
 */
export class ProcessGroup {
  /** This process's rank in the group. */
  readonly rank: number;
  /** Ranks in the group. */
  readonly size: number;
  /** The library running its collectives. */
  readonly backend: Backend;
  /** The world rank of each group rank. */
  readonly ranks: readonly number[];
  /** Where its tensors live: 'cpu' for Gloo, this process's GPU for NCCL. */
  readonly device: Device;
  private handle: GroupHandle | null;
  private traffic: CommStats = {};

  /** @internal */
  constructor(handle: GroupHandle, rank: number, size: number, backend: Backend, ranks: readonly number[], device: Device) {
    this.handle = handle;
    this.rank = rank;
    this.size = size;
    this.backend = backend;
    this.ranks = ranks;
    this.device = device;
  }

  /**
   * Ops issued through this group and their bytes since it was made (or resetCommStats), per op: what
   * a benchmark compares with the analytic communication volume of a layout.
   */
  commStats(): CommStats {
    return Object.fromEntries(Object.entries(this.traffic).map(([k, v]) => [k, { ...v }]));
  }

  /** Starts commStats() afresh. */
  resetCommStats(): void {
    this.traffic = {};
  }

  private count(op: string, bytes: number): void {
    const c = (this.traffic[op] ??= { calls: 0, bytes: 0 });
    c.calls++;
    c.bytes += bytes;
  }

  private live(op: string): GroupHandle {
    if (!this.handle) throw new DistError(op, `rank ${this.rank} of ${this.size} (${this.backend}): the process group was destroyed`);
    return this.handle;
  }

  private check(op: string, t: unknown, name: string): Tensor {
    if (!(t instanceof Tensor)) throw new ValueError(op, `${name} must be a Tensor`);
    if (t.isDisposed) throw new DistError(op, `${name} was disposed`);
    const cuda = t._dev >= 0;
    if (cuda !== (this.backend === 'nccl')) {
      throw new DeviceError(op, `${name} is on ${t.device}, but the ${this.backend} backend takes ${this.backend === 'nccl' ? 'CUDA' : 'CPU'} tensors`);
    }
    if (!t.isContiguous()) throw new ValueError(op, `${name} (shape [${t.shape}]) must be contiguous; call contiguous() first`);
    return t;
  }

  private reduceCode(op: string, r: ReduceOp | undefined): number {
    const code = REDUCE_CODES[r ?? 'sum'];
    if (code === undefined) throw new ValueError(op, `op must be 'sum', 'avg', 'max' or 'min', got ${String(r)}`);
    return code;
  }

  private peer(op: string, r: unknown, name: string): number {
    if (!Number.isInteger(r) || (r as number) < 0 || (r as number) >= this.size) {
      throw new ValueError(op, `${name} ${String(r)} is not a rank of this group (0..${this.size - 1})`);
    }
    return r as number;
  }

  /** Reduces t over the ranks, in place: afterwards every rank's t holds the sum (avg, max, min). */
  allReduce(t: Tensor, opts: ReduceOptions = {}): Work {
    const op = 'allReduce';
    this.check(op, t, 'tensor');
    const w = new Work(N.pgAllReduce(this.live(op), t._h, this.reduceCode(op, opts.op)));
    this.count(op, t.numel * t.itemsize);
    t._bumpVersion();
    return w;
  }

  /** Copies rank src's t into every rank's t. */
  broadcast(t: Tensor, src: number): Work {
    const op = 'broadcast';
    this.check(op, t, 'tensor');
    const w = new Work(N.pgBroadcast(this.live(op), t._h, this.peer(op, src, 'src')));
    this.count(op, t.numel * t.itemsize);
    t._bumpVersion();
    return w;
  }

  /**
   * Gathers every rank's input: into output[i] for rank i (a list of size tensors shaped like input),
   * or into one tensor of size x input's elements, rank by rank (torch's all_gather_into_tensor).
   */
  allGather(output: Tensor | readonly Tensor[], input: Tensor): Work {
    const op = 'allGather';
    this.check(op, input, 'input');
    const bytes = this.size * input.numel * input.itemsize;
    if (output instanceof Tensor) {
      this.check(op, output, 'output');
      const w = new Work(N.pgAllGather(this.live(op), output._h, input._h));
      this.count(op, bytes);
      output._bumpVersion();
      return w;
    }
    const outs = this.list(op, output, input, 'output');
    const flat = empty([this.size * input.numel], { dtype: input.dtype, device: input.device });
    let native: WorkHandle;
    try {
      native = N.pgAllGather(this.live(op), flat._h, input._h);
    } catch (e) {
      flat.dispose();
      throw e;
    }
    this.count(op, bytes);
    const n = input.numel;
    return new Work(native, () => {
      outs.forEach((o, i) => {
        const part = flat.narrow(0, i * n, n);
        o.copy_(part.reshape(o.shape));
        part.dispose();
      });
      flat.dispose();
    }, () => flat.dispose());
  }

  /**
   * Reduces input over the ranks and leaves chunk `rank` of the result in output: input is a list of
   * size tensors shaped like output, or one tensor of size x output's elements.
   */
  reduceScatter(output: Tensor, input: Tensor | readonly Tensor[], opts: ReduceOptions = {}): Work {
    const op = 'reduceScatter';
    this.check(op, output, 'output');
    const code = this.reduceCode(op, opts.op);
    let flat: Tensor;
    let owned = false;
    if (input instanceof Tensor) {
      flat = this.check(op, input, 'input');
    } else {
      const ins = this.list(op, input, output, 'input');
      flat = cat(ins.map((x) => x.reshape([-1])));
      owned = true;
    }
    let native: WorkHandle;
    try {
      native = N.pgReduceScatter(this.live(op), output._h, flat._h, code);
    } catch (e) {
      if (owned) flat.dispose();
      throw e;
    }
    this.count(op, flat.numel * flat.itemsize);
    output._bumpVersion();
    const free = owned ? () => flat.dispose() : null;
    return new Work(native, free, free);
  }

  /** Resolves once every rank of the group has reached it. */
  barrier(): Work {
    const w = new Work(N.pgBarrier(this.live('barrier')));
    this.count('barrier', 0);
    return w;
  }

  /** Sends t to group rank dst (its recv from this rank with the same tag receives it). */
  send(t: Tensor, dst: number, opts: P2POptions = {}): Work {
    const op = 'send';
    this.check(op, t, 'tensor');
    const w = new Work(N.pgSend(this.live(op), t._h, this.peer(op, dst, 'dst'), this.tag(op, opts.tag)));
    this.count(op, t.numel * t.itemsize);
    return w;
  }

  /** Receives into t what group rank src sends with the same tag (t's size must match the send's). */
  recv(t: Tensor, src: number, opts: P2POptions = {}): Work {
    const op = 'recv';
    this.check(op, t, 'tensor');
    const w = new Work(N.pgRecv(this.live(op), t._h, this.peer(op, src, 'src'), this.tag(op, opts.tag)));
    this.count(op, t.numel * t.itemsize);
    t._bumpVersion();
    return w;
  }

  /**
   * Every rank's value, in group rank order (torch's all_gather_object): for small metadata, sent as
   * JSON (so it must survive JSON.stringify).
   */
  async allGatherObject(value: unknown): Promise<unknown[]> {
    const bytes = Buffer.from(JSON.stringify(value) ?? 'null', 'utf8');
    const made: Tensor[] = [];
    const keep = <T extends Tensor>(t: T): T => (made.push(t), t);
    try {
      const lens = keep(zeros([this.size], { dtype: 'int64', device: this.device }));
      await this.allGather(lens, keep(tensor([bytes.length], { dtype: 'int64', device: this.device })));
      const n = Array.from(lens.dataSync() as BigInt64Array, Number);
      const words = Math.max(1, Math.ceil(Math.max(...n) / 4));
      const packed = new Int32Array(words);
      new Uint8Array(packed.buffer).set(bytes);
      const out = keep(zeros([words * this.size], { dtype: 'int32', device: this.device }));
      await this.allGather(out, keep(tensor(packed, { dtype: 'int32', device: this.device })));
      const all = new Uint8Array((out.dataSync() as Int32Array).buffer);
      return n.map((k, r) => JSON.parse(Buffer.from(all.subarray(r * words * 4, r * words * 4 + k)).toString('utf8')));
    } finally {
      for (const t of made) t.dispose();
    }
  }

  /** Ends the group: ops not yet run fail, its connections close. Idempotent. */
  destroy(): void {
    if (this.handle) N.pgShutdown(this.handle);
    this.handle = null;
  }

  /** Whether destroy() has run. */
  get isDestroyed(): boolean {
    return this.handle === null;
  }

  private tag(op: string, tag: number | undefined): number {
    const t = tag ?? 0;
    if (!Number.isInteger(t) || t < 0 || t > 0xffffffff) throw new ValueError(op, `tag must be an integer in [0, 2^32), got ${t}`);
    return t;
  }

  private list(op: string, xs: readonly Tensor[], like: Tensor, name: string): readonly Tensor[] {
    if (!Array.isArray(xs) || xs.length !== this.size) {
      throw new ValueError(op, `${name} must be a Tensor or a list of ${this.size} tensors (one per rank)`);
    }
    xs.forEach((x, i) => {
      this.check(op, x, `${name}[${i}]`);
      if (x.dtype !== like.dtype || x.numel !== like.numel) {
        throw new ValueError(op, `${name}[${i}] is ${x.dtype} [${x.shape}], expected ${like.dtype} with ${like.numel} elements`);
      }
    });
    return xs;
  }
}

/** Options of initProcessGroup; unset fields come from the environment (lib/dist/env.ts). */
export interface InitProcessGroupOptions {
  /** 'gloo' (CPU tensors, the default) or 'nccl' (CUDA tensors). */
  backend?: Backend;
  /** How long rendezvous and each op may take before a DistError, in milliseconds (default 300000). */
  timeoutMs?: number;
  /** This process's rank (default: RANK, SLURM_PROCID or OMPI_COMM_WORLD_RANK). */
  rank?: number;
  /** Processes in the job (default: WORLD_SIZE, SLURM_NTASKS or OMPI_COMM_WORLD_SIZE). */
  worldSize?: number;
  /** Rank 0's address (default MASTER_ADDR). */
  masterAddr?: string;
  /** The rendezvous port (default MASTER_PORT, else 29500). */
  masterPort?: number;
  /** An existing store to meet through instead of one at masterAddr:masterPort. */
  store?: TCPStore;
  /** NCCL: the CUDA device index (default: the local rank modulo the visible devices). */
  device?: number;
}

interface World {
  env: DistEnv;
  store: TCPStore;
  ownsStore: boolean;
  group: ProcessGroup;
  groups: ProcessGroup[];
  timeoutMs: number;
  nextGroup: number;
  device: number;
}

let world: World | null = null;

function isLoopback(addr: string): boolean {
  return addr === 'localhost' || addr.startsWith('127.') || addr === '::1';
}

function checkBackend(op: string, backend: unknown): Backend {
  if (backend !== 'gloo' && backend !== 'nccl') throw new ValueError(op, `backend must be 'gloo' or 'nccl', got ${String(backend)}`);
  if (!N.distBackends()[backend]) {
    throw new DistError(op, backend === 'gloo'
      ? 'this build of kiln has no Gloo: install libgloo-dev (apt-get install libgloo-dev) and run `npm run build:native`'
      : 'this build of kiln has no NCCL: build the CUDA backend on a machine with NCCL');
  }
  return backend;
}

async function connectGroup(w: World, backend: Backend, rank: number, ranks: readonly number[]): Promise<ProcessGroup> {
  const prefix = `pg/${w.nextGroup}/`;
  const iface = process.env.GLOO_SOCKET_IFNAME ?? '';
  const h = await N.pgCreate(backend, w.store._client('initProcessGroup'), prefix, rank, ranks.length, w.timeoutMs, '', iface, w.device);
  const g = new ProcessGroup(h, rank, ranks.length, backend, ranks, backend === 'nccl' ? `cuda:${w.device}` : 'cpu');
  w.groups.push(g);
  return g;
}

/**
 * Joins this process to the job: reads its rank, the world size and the master's address from the
 * options or the environment (torchrun / `kiln launch`, Slurm, Open MPI), meets the other ranks
 * through a TCPStore that rank 0 hosts at MASTER_ADDR:MASTER_PORT, and connects the world group.
 * Rejects with DistError when the master cannot be reached or not every rank joins within timeoutMs.
 *
 * ```ts
 * await kiln.dist.initProcessGroup({ backend: 'gloo' });
 * const t = kiln.ones([4]);
 * await kiln.dist.allReduce(t);            // every rank: 4 x worldSize()
 * kiln.dist.destroyProcessGroup();
 * ```
 */
export async function initProcessGroup(opts: InitProcessGroupOptions = {}): Promise<ProcessGroup> {
  const op = 'initProcessGroup';
  if (world) throw new DistError(op, 'the process group is already initialized (call destroyProcessGroup() first)');
  const backend = checkBackend(op, opts.backend ?? 'gloo');
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) throw new ValueError(op, `timeoutMs must be a positive integer, got ${timeoutMs}`);
  const env = readDistEnv();
  if (opts.rank !== undefined) env.rank = opts.rank;
  if (opts.worldSize !== undefined) env.worldSize = opts.worldSize;
  if (opts.masterAddr !== undefined) env.masterAddr = opts.masterAddr;
  if (opts.masterPort !== undefined) env.masterPort = opts.masterPort;
  if (!Number.isInteger(env.worldSize) || env.worldSize < 1) throw new ValueError(op, `worldSize must be a positive integer, got ${env.worldSize}`);
  if (!Number.isInteger(env.rank) || env.rank < 0 || env.rank >= env.worldSize) {
    throw new ValueError(op, `rank ${env.rank} is not in [0, ${env.worldSize})`);
  }
  let device = -1;
  if (backend === 'nccl') {
    const n = deviceCount();
    if (n === 0) throw new DeviceError(op, 'the nccl backend needs a CUDA device, and none is visible');
    device = opts.device ?? env.localRank % n;
  }
  const who = `rank ${env.rank} of ${env.worldSize}`;
  let store = opts.store ?? null;
  const ownsStore = !store;
  if (!store) {
    try {
      store = await TCPStore.create({
        host: env.masterAddr, port: env.masterPort, isServer: env.rank === 0, worldSize: env.worldSize, timeoutMs,
        listenHost: isLoopback(env.masterAddr) ? env.masterAddr : '0.0.0.0',
      });
    } catch (e) {
      const m = e instanceof Error ? e.message : String(e);
      const from = env.source === 'single' ? '' : ` (rank and world size from ${env.source}'s variables)`;
      throw new DistError(op, `${who}${from}: cannot meet the other ranks at ${env.masterAddr}:${env.masterPort} (MASTER_ADDR:MASTER_PORT): ${m}`);
    }
  }
  const w: World = { env, store, ownsStore, group: null as unknown as ProcessGroup, groups: [], timeoutMs, nextGroup: 0, device };
  const ranks = Array.from({ length: env.worldSize }, (_, i) => i);
  try {
    w.group = await connectGroup(w, backend, env.rank, ranks);
  } catch (e) {
    if (ownsStore) store.close();
    throw e;
  }
  w.nextGroup++;
  world = w;
  return w.group;
}

function current(op: string): World {
  if (!world) throw new DistError(op, 'the process group is not initialized (await kiln.dist.initProcessGroup() first)');
  return world;
}

/** Whether initProcessGroup has run (and destroyProcessGroup has not since). */
export function isInitialized(): boolean {
  return world !== null;
}

/** Whether this build has the backend (Gloo when libgloo-dev was installed at build time; NCCL with CUDA). */
export function isBackendAvailable(backend: Backend): boolean {
  return N.distBackends()[backend] === true;
}

/** This process's world rank (0 before initProcessGroup). */
export function rank(): number {
  return world ? world.group.rank : 0;
}

/** Processes in the job (1 before initProcessGroup). */
export function worldSize(): number {
  return world ? world.group.size : 1;
}

/** This process's rank on its machine (from the environment; 0 for a single process). */
export function localRank(): number {
  return world ? world.env.localRank : readDistEnv().localRank;
}

/** Processes on this machine. */
export function localWorldSize(): number {
  return world ? world.env.localWorldSize : readDistEnv().localWorldSize;
}

/** The world group (DistError before initProcessGroup). */
export function worldGroup(): ProcessGroup {
  return current('worldGroup').group;
}

/**
 * A subgroup of the given world ranks, for hybrid layouts (e.g. data parallel across machines,
 * model parallel within one). Every rank must call it, in the same order as its other newGroup
 * calls, members or not; members get the group (their rank in it is their index in `ranks`, sorted),
 * the others null.
 */
export async function newGroup(ranks: readonly number[], opts: { backend?: Backend } = {}): Promise<ProcessGroup | null> {
  const op = 'newGroup';
  const w = current(op);
  const size = w.group.size;
  if (!Array.isArray(ranks) || ranks.length === 0) throw new ValueError(op, 'ranks must be a non-empty array of world ranks');
  const sorted = [...ranks].sort((a, b) => a - b);
  sorted.forEach((r, i) => {
    if (!Number.isInteger(r) || r < 0 || r >= size) throw new ValueError(op, `rank ${r} is not a world rank (0..${size - 1})`);
    if (i > 0 && sorted[i - 1] === r) throw new ValueError(op, `rank ${r} is listed twice`);
  });
  const backend = checkBackend(op, opts.backend ?? w.group.backend);
  const me = sorted.indexOf(w.group.rank);
  if (me < 0) {
    w.nextGroup++;
    return null;
  }
  try {
    return await connectGroup(w, backend, me, sorted);
  } finally {
    w.nextGroup++;
  }
}

/**
 * Destroys group (default: the world, with every subgroup, and closes the store; rank 0's store
 * server stops). Idempotent for a subgroup; without initProcessGroup it does nothing.
 */
export function destroyProcessGroup(group?: ProcessGroup): void {
  if (!world) return;
  if (group && group !== world.group) {
    group.destroy();
    world.groups = world.groups.filter((g) => g !== group);
    return;
  }
  const w = world;
  world = null;
  for (const g of w.groups) g.destroy();
  if (w.ownsStore) w.store.close();
}

/** Options of the module-level collectives: the group (default the world). */
export interface GroupOptions {
  /** The group to run in (default: the world). */
  group?: ProcessGroup;
}

function groupOf(op: string, o: GroupOptions): ProcessGroup {
  return o.group ?? current(op).group;
}

function groupRank(op: string, g: ProcessGroup, worldRank: number, name: string): number {
  const i = g.ranks.indexOf(worldRank);
  if (i < 0) throw new ValueError(op, `${name} ${worldRank} is not a member of the group (world ranks ${g.ranks.join(', ')})`);
  return i;
}

/** allReduce in the world (or opts.group); see ProcessGroup.allReduce. */
export function allReduce(t: Tensor, opts: ReduceOptions & GroupOptions = {}): Work {
  return groupOf('allReduce', opts).allReduce(t, opts);
}

/** broadcast from world rank src; see ProcessGroup.broadcast. */
export function broadcast(t: Tensor, src: number, opts: GroupOptions = {}): Work {
  const g = groupOf('broadcast', opts);
  return g.broadcast(t, groupRank('broadcast', g, src, 'src'));
}

/** allGather in the world (or opts.group); see ProcessGroup.allGather. */
export function allGather(output: Tensor | readonly Tensor[], input: Tensor, opts: GroupOptions = {}): Work {
  return groupOf('allGather', opts).allGather(output, input);
}

/** reduceScatter in the world (or opts.group); see ProcessGroup.reduceScatter. */
export function reduceScatter(output: Tensor, input: Tensor | readonly Tensor[], opts: ReduceOptions & GroupOptions = {}): Work {
  return groupOf('reduceScatter', opts).reduceScatter(output, input, opts);
}

/** A barrier over the world (or opts.group). */
export function barrier(opts: GroupOptions = {}): Work {
  return groupOf('barrier', opts).barrier();
}

/** Sends t to world rank dst; see ProcessGroup.send. */
export function send(t: Tensor, dst: number, opts: P2POptions & GroupOptions = {}): Work {
  const g = groupOf('send', opts);
  return g.send(t, groupRank('send', g, dst, 'dst'), opts);
}

/** Receives into t from world rank src; see ProcessGroup.recv. */
export function recv(t: Tensor, src: number, opts: P2POptions & GroupOptions = {}): Work {
  const g = groupOf('recv', opts);
  return g.recv(t, groupRank('recv', g, src, 'src'), opts);
}
