// Parameter server training: server ranks hold the model's parameters, sharded into contiguous
// slices of the flattened parameter vector, and the optimizer over their slice; worker ranks pull
// the parameters, compute gradients on their own data and push them. Synchronous mode averages one
// gradient from every live worker per step (data-parallel SGD on the concatenated batch);
// asynchronous mode applies each gradient as it comes, unless it was computed on parameters more than
// maxStaleness versions old, which is rejected (the worker pulls again and recomputes).
//
// Transport: each server hosts a TCPStore (server 0's at MASTER_ADDR:MASTER_PORT; the others on a
// free port published in server 0's store) and every message is a store value. A Gloo group would
// not do: it fails for good when one member dies, and a new member cannot join it. The store has no
// per-peer state: a dead worker is just one that stops writing, and a restarted one connects a new
// client and writes on. The cost is a copy through the store's server thread and a value cap of
// 64 MiB per shard (create() says how many servers a larger model needs). Every message carries the
// dtype of its numbers, checked against the receiver's. Keys on server k's store:
//   ps/params               the latest parameters of the shard, with their version (the server sets it)
//   ps/next                 a counter: a worker takes slot n = add(ps/next, 1) of the queue ...
//   ps/q/<n>                ... and writes its message there (join, gradient, leave); the server reads
//                           the slots in order, each once, and deletes them. A slot taken but not yet
//                           written (a large value on its way, or a writer that died in between) does
//                           not hold up the later ones: a worker writes each slot before it takes the
//                           next, so they are other processes' and are read meanwhile; the slot itself
//                           is given up after workerTimeoutMs
//   ps/ack/<worker>.<inc>/<seq>   the server's answer to a gradient (applied or rejected, the version)
// and on server 0's only: ps/addr/<k> (server k's address) and ps/inc/<worker> (a counter giving each
// start of a worker process a new incarnation, so a restarted worker's messages are told from its
// dead predecessor's).
//
// Liveness: silence alone never drops a worker (it may be evaluating, loading data or just slow; a
// store client gives no sign of a closed connection). In synchronous mode a step waits for a
// gradient from every live worker (and, at the start, for every expected worker to join); when some
// have not sent one workerTimeoutMs after the step's first gradient arrived, they are dropped and the
// step goes on with the others. A dropped or restarted worker rejoins by sending a message: it is live
// again and counts from the next step. In asynchronous mode nothing waits on a worker, so none is
// dropped. A server ends serve() once every worker rank has closed, or once no worker has sent
// anything for idleTimeoutMs (a worker that died and was not restarted, one that never started), and
// writes its shard back into its model's parameters. Each server decides for its own shard: a worker
// that dies halfway through pushing to several servers can count in one shard's step and not in
// another's.
import * as os from 'os';
import { noGrad } from '../autograd/grad_mode';
import { DistError, ValueError } from '../errors';
import { keep, tidy } from '../memory';
import { Module, Parameter } from '../nn/module';
import { tensor } from '../ops/creation';
import { BaseOptions, Optimizer } from '../optim/optimizer';
import type { Tensor } from '../tensor';
import { readDistEnv } from './env';
import { TCPStore } from './store';
import type { OptimizerClass } from './zero';

/** 'sync': one averaged step per round of every live worker's gradient; 'async': each gradient applied as it comes. */
export type ParameterServerMode = 'sync' | 'async';

/** Options of ParameterServer.create: the servers' optimizer class and its options, the mode, the job. */
export type ParameterServerOptions<O extends BaseOptions> = Partial<O> & {
  /** The optimizer each server runs over its shard (e.g. optim.SGD); the other fields are its options. */
  optimizer: OptimizerClass<O>;
  /** How many ranks serve: ranks 0 .. servers-1 (default 1); the others are workers. */
  servers?: number;
  /** 'sync' (default) or 'async'. */
  mode?: ParameterServerMode;
  /** Async: the oldest parameters a gradient may have been computed on, in versions behind the server's (default 8). */
  maxStaleness?: number;
  /**
   * Sync: how long a step waits, from its first gradient, for the other live workers' gradients before
   * it goes on without the missing ones; also how long a queue slot taken but not written is waited
   * for (default 60000 ms).
   */
  workerTimeoutMs?: number;
  /**
   * How long serve() goes on with no message from any worker while some worker has not closed (one
   * that died and was not restarted, one that never started) before it ends (default 600000 ms).
   */
  idleTimeoutMs?: number;
  /** How long connecting and each wait for a server may take, in milliseconds (default 300000). */
  timeoutMs?: number;
  /** This process's rank (default: from the environment, as initProcessGroup reads it). */
  rank?: number;
  /** Processes in the job (default: from the environment). */
  worldSize?: number;
  /** Server 0's address (default MASTER_ADDR). */
  masterAddr?: string;
  /** Server 0's store port (default MASTER_PORT); a job with a process group too must give another port. */
  masterPort?: number;
};

/** What a worker's push did. */
export interface PushResult {
  /** Whether every server applied the gradient (false: some shard rejected it as too stale, or sync, as late for its step). */
  applied: boolean;
  /** Each shard's parameter version after the server handled the gradient. */
  versions: number[];
}

/** One worker as a server saw it. */
export interface ParameterServerWorkerReport {
  /** 'live', 'left' (closed), 'dropped' (sync: left out of a step, not heard from since) or 'expected' (never joined). */
  state: 'expected' | 'live' | 'left' | 'dropped';
  /** How many times it joined (a restarted worker joins again). */
  joins: number;
  /** Gradients applied. */
  applied: number;
  /** Gradients rejected (stale, or sync, computed on the parameters before a step that went on without it). */
  rejected: number;
}

/** What serve() reports when it ends. */
export interface ParameterServerReport {
  /** This server's index (its rank). */
  server: number;
  /** The shard's final version (optimizer steps taken). */
  version: number;
  /** Each worker rank's record. */
  workers: Record<number, ParameterServerWorkerReport>;
  /** Times a worker was dropped: a synchronous step went on without it. */
  dropped: number;
}

interface Message {
  type: 'join' | 'grad' | 'leave';
  worker: number;
  inc: number;
  seq?: number;
  version?: number;
  /** The dtype of the numbers after the header (a gradient). */
  dtype?: string;
}

interface WorkerState extends ParameterServerWorkerReport {
  inc: number;
}

const Q_NEXT = 'ps/next';
const PARAMS = 'ps/params';
/** The store's cap on a value (native/dist/store.h kMaxValue), and what a message's header may take of it. */
const STORE_VALUE_MAX = 64 * 2 ** 20;
const HEADER_ROOM = 4096;

/** A message as bytes: u32 JSON length, the JSON, zero padding to 8 bytes, then the raw numbers. */
function encode(header: object, data?: Float32Array | Float64Array): Uint8Array {
  const h = Buffer.from(JSON.stringify(header), 'utf8');
  const at = Math.ceil((4 + h.length) / 8) * 8;
  const out = new Uint8Array(at + (data ? data.byteLength : 0));
  new DataView(out.buffer).setUint32(0, h.length, true);
  out.set(h, 4);
  if (data) out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
  return out;
}

/** A message's header and its numbers, in the dtype the header names (none: no numbers). */
function decode<H extends { dtype?: string }>(bytes: Uint8Array): { header: H; data: Float32Array | Float64Array } {
  const op = 'ParameterServer';
  if (bytes.byteLength < 4) throw new ValueError(op, `a message of ${bytes.byteLength} bytes has no header`);
  const n = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
  if (4 + n > bytes.byteLength) throw new ValueError(op, `a message of ${bytes.byteLength} bytes claims a ${n}-byte header`);
  const header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 4, n).toString('utf8')) as H;
  if (typeof header !== 'object' || header === null) throw new ValueError(op, 'a message header is not an object');
  const at = Math.min(bytes.byteLength, Math.ceil((4 + n) / 8) * 8);
  const dtype = header.dtype ?? 'float32';
  if (dtype !== 'float32' && dtype !== 'float64') throw new ValueError(op, `a message holds numbers of dtype ${String(dtype)}`);
  const size = dtype === 'float64' ? 8 : 4;
  if ((bytes.byteLength - at) % size) throw new ValueError(op, `a message's ${bytes.byteLength - at} bytes of ${dtype} are not whole numbers`);
  // A copy: the store's bytes (a Buffer, maybe in a shared pool) need not be aligned for a Float64Array.
  const raw = new Uint8Array(bytes.byteLength - at);
  raw.set(bytes.subarray(at));
  return { header, data: dtype === 'float64' ? new Float64Array(raw.buffer) : new Float32Array(raw.buffer) };
}

/** Whether m is a well-formed message (the fields each type needs, as integers). */
function wellFormed(m: Message): boolean {
  const ints = m.type === 'grad' ? [m.worker, m.inc, m.seq, m.version] : [m.worker, m.inc];
  return (m.type === 'join' || m.type === 'grad' || m.type === 'leave') && ints.every((v) => Number.isSafeInteger(v));
}

function isTimeout(e: unknown): boolean {
  return e instanceof DistError && /timed out/.test(e.message);
}

function loopback(addr: string): boolean {
  return addr === 'localhost' || addr.startsWith('127.') || addr === '::1';
}

/**
 * A parameter server job (the architecture of DistBelief and MXNet's kvstore): ranks 0 .. servers-1
 * serve, each holding a contiguous slice of the model's flattened parameters and the optimizer over
 * it; the other ranks work, pulling the parameters and pushing gradients. Needs no process group
 * (the servers' TCPStores carry everything), so a worker that dies stops nothing: a synchronous step
 * goes on without it workerTimeoutMs after the step's first gradient, and a worker started again with
 * its rank rejoins. The trained model: a worker's last pull(), or after serve() the server's model
 * (each server writes its own shard back, so with one server all of it).
 *
 * ```ts
 * const ps = await kiln.dist.ParameterServer.create(model, { optimizer: kiln.optim.SGD, lr: 0.1, servers: 1, mode: 'sync' });
 * if (ps.isServer) await ps.serve();           // until every worker has closed; then the model holds this shard's trained values
 * else {
 *   for (const [x, y] of myBatches) {
 *     await ps.pull();                         // the servers' parameters into the model
 *     model.forward(x, y).loss.backward();
 *     await ps.push();                         // the gradients to the servers (sync: after the step)
 *     model.zeroGrad();
 *   }
 *   await ps.close();
 * }
 * ```
 */
export class ParameterServer<O extends BaseOptions = BaseOptions> {
  /** This process's rank. */
  readonly rank: number;
  /** Processes in the job. */
  readonly worldSize: number;
  /** Number of servers (ranks 0 .. servers-1). */
  readonly servers: number;
  /** The mode. */
  readonly mode: ParameterServerMode;
  /** Async: how many versions old a gradient's parameters may be. */
  readonly maxStaleness: number;
  /** Sync: how long a step waits for the missing workers after its first gradient, in milliseconds. */
  readonly workerTimeoutMs: number;
  /** How long serve() waits with no message from any worker before it ends, in milliseconds. */
  readonly idleTimeoutMs: number;
  /** Elements of the flattened parameter vector. */
  readonly numel: number;
  /** Where each server's shard starts in the flattened parameters (and, last, numel). */
  readonly shardStarts: readonly number[];
  readonly #params: Parameter[];
  readonly #dtype: 'float32' | 'float64';
  readonly #timeoutMs: number;
  /** Server: its own store; worker: every server's, by index. */
  readonly #stores: TCPStore[];
  /** Server k >= 1: its client of server 0's store (used at start only). */
  readonly #master: TCPStore | null;
  // Server state.
  #shard: Parameter | null = null;
  #optimizer: Optimizer<O> | null = null;
  #version = 0;
  // Worker state.
  #inc = 0;
  #seq = 0;
  #versions: number[] = [];
  #closed = false;

  private constructor(o: {
    rank: number; worldSize: number; servers: number; mode: ParameterServerMode; maxStaleness: number; workerTimeoutMs: number;
    idleTimeoutMs: number; timeoutMs: number; params: Parameter[]; dtype: 'float32' | 'float64'; stores: TCPStore[]; master: TCPStore | null;
  }) {
    this.rank = o.rank;
    this.worldSize = o.worldSize;
    this.servers = o.servers;
    this.mode = o.mode;
    this.maxStaleness = o.maxStaleness;
    this.workerTimeoutMs = o.workerTimeoutMs;
    this.idleTimeoutMs = o.idleTimeoutMs;
    this.#timeoutMs = o.timeoutMs;
    this.#params = o.params;
    this.#dtype = o.dtype;
    this.#stores = o.stores;
    this.#master = o.master;
    this.numel = o.params.reduce((n, p) => n + p.numel, 0);
    this.shardStarts = Array.from({ length: o.servers + 1 }, (_, k) => Math.floor((k * this.numel) / o.servers));
  }

  /**
   * Joins the job: a server starts its store (server 0 at masterAddr:masterPort) and takes its
   * shard's initial values and optimizer from model; a worker connects to every server and joins.
   * Every rank passes the same architecture (a worker's initial values do not matter: it pulls). All
   * parameters must share one dtype, float32 or float64, and each server's shard must fit in one
   * store value (64 MiB; the ValueError says how many servers the model needs).
   */
  static async create<O extends BaseOptions>(model: Module, opts: ParameterServerOptions<O>): Promise<ParameterServer<O>> {
    const op = 'ParameterServer.create';
    if (!(model instanceof Module)) throw new ValueError(op, 'model must be a Module');
    const { optimizer: Ctor, servers: nServers, mode: givenMode, maxStaleness: givenStale, workerTimeoutMs: givenWorkerTimeout,
      idleTimeoutMs: givenIdleTimeout, timeoutMs: givenTimeout, rank: givenRank, worldSize: givenWorld, masterAddr, masterPort, ...optimizerOptions } = opts ?? ({} as ParameterServerOptions<O>);
    if (typeof Ctor !== 'function') throw new ValueError(op, 'options.optimizer must be an optimizer class, e.g. optim.SGD');
    const env = readDistEnv();
    const rank = givenRank ?? env.rank;
    const worldSize = givenWorld ?? env.worldSize;
    const servers = nServers ?? 1;
    const mode = givenMode ?? 'sync';
    const maxStaleness = givenStale ?? 8;
    const workerTimeoutMs = givenWorkerTimeout ?? 60_000;
    const idleTimeoutMs = givenIdleTimeout ?? 600_000;
    const timeoutMs = givenTimeout ?? 300_000;
    const addr = masterAddr ?? env.masterAddr;
    const port = masterPort ?? env.masterPort;
    if (mode !== 'sync' && mode !== 'async') throw new ValueError(op, `mode must be 'sync' or 'async', got ${String(mode)}`);
    if (!Number.isInteger(servers) || servers < 1 || servers >= worldSize) {
      throw new ValueError(op, `servers must be an integer in [1, ${worldSize - 1}] (world of ${worldSize}: at least one worker), got ${servers}`);
    }
    if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw new ValueError(op, `rank ${rank} is not in [0, ${worldSize})`);
    if (!Number.isInteger(maxStaleness) || maxStaleness < 0) throw new ValueError(op, `maxStaleness must be a non-negative integer, got ${maxStaleness}`);
    for (const [name, v] of [['workerTimeoutMs', workerTimeoutMs], ['idleTimeoutMs', idleTimeoutMs], ['timeoutMs', timeoutMs]] as const) {
      if (!Number.isSafeInteger(v) || v <= 0) throw new ValueError(op, `${name} must be a positive integer, got ${v}`);
    }
    const params = model.parameters();
    if (!params.length) throw new ValueError(op, 'the model has no parameters');
    const dtype = params[0].dtype;
    if ((dtype !== 'float32' && dtype !== 'float64') || params.some((p) => p.dtype !== dtype)) {
      throw new ValueError(op, `every parameter must be float32, or every one float64; got ${[...new Set(params.map((p) => p.dtype))].join(', ')}`);
    }
    const numel = params.reduce((n, p) => n + p.numel, 0);
    const perShard = Math.floor((STORE_VALUE_MAX - HEADER_ROOM) / (dtype === 'float64' ? 8 : 4));
    if (Math.ceil(numel / servers) > perShard) {
      const need = Math.ceil(numel / perShard);
      throw new ValueError(op, `${servers} server(s) for ${numel} ${dtype} parameters: a shard of ${Math.ceil(numel / servers)} elements does not fit in one store value (64 MiB, ${perShard} elements); use at least ${need} servers (and a world of more than ${need} ranks)`);
    }
    const isServer = rank < servers;
    const local = loopback(addr);
    const connect = (host: string, p: number) => TCPStore.create({ host, port: p, isServer: false, timeoutMs });
    const stores: TCPStore[] = [];
    let master: TCPStore | null = null;
    try {
      if (isServer) {
        // Server 0's store is where everyone meets; the others listen anywhere and say where.
        const host = local ? addr : os.hostname();
        stores.push(await TCPStore.create({ host: rank === 0 ? addr : host, port: rank === 0 ? port : 0, isServer: true, timeoutMs, listenHost: local ? addr : '0.0.0.0' }));
        if (rank > 0) {
          master = await connect(addr, port);
          master.set(`ps/addr/${rank}`, `${host}:${stores[0].port}`);
        }
      } else {
        stores.push(await connect(addr, port));
        for (let k = 1; k < servers; k++) {
          const where = Buffer.from(await stores[0].get(`ps/addr/${k}`, timeoutMs)).toString('utf8');
          const i = where.lastIndexOf(':');
          stores.push(await connect(where.slice(0, i), Number(where.slice(i + 1))));
        }
      }
    } catch (e) {
      for (const s of stores) s.close();
      master?.close();
      throw e;
    }
    const ps = new ParameterServer<O>({ rank, worldSize, servers, mode, maxStaleness, workerTimeoutMs, idleTimeoutMs, timeoutMs, params, dtype, stores, master });
    if (isServer) ps.startServer(Ctor, optimizerOptions as unknown as Partial<O>);
    else await ps.join();
    return ps;
  }

  /** Whether this rank is a server. */
  get isServer(): boolean {
    return this.rank < this.servers;
  }

  private host(): Float32Array | Float64Array {
    return this.#dtype === 'float64' ? new Float64Array(this.numel) : new Float32Array(this.numel);
  }

  // ---- server ----

  private startServer(Ctor: OptimizerClass<O>, optimizerOptions: Partial<O>): void {
    const k = this.rank;
    const flat = this.host();
    let at = 0;
    for (const p of this.#params) {
      flat.set(p.dataSync() as Float32Array | Float64Array, at);
      at += p.numel;
    }
    const slice = flat.subarray(this.shardStarts[k], this.shardStarts[k + 1]);
    this.#shard = Parameter.own(tensor(slice, { dtype: this.#dtype }));
    this.#optimizer = new Ctor([this.#shard], optimizerOptions);
    this.publish();
  }

  private publish(): void {
    const k = this.rank;
    const header = { version: this.#version, start: this.shardStarts[k], end: this.shardStarts[k + 1], numel: this.numel, dtype: this.#dtype };
    this.#stores[0].set(PARAMS, encode(header, this.#shard!.dataSync() as Float32Array | Float64Array));
  }

  /** Applies grad (the shard's gradient) with the server's optimizer and publishes the new version. */
  private apply(grad: Tensor): void {
    const shard = this.#shard!;
    shard.grad = keep(grad);
    this.#optimizer!.step();
    shard.grad.dispose();
    shard.grad = null;
    this.#version++;
    this.publish();
  }

  /**
   * Serves the workers until every worker rank has closed, or until none has sent anything for
   * idleTimeoutMs; then writes this server's shard back into its model's parameters (with one server,
   * the whole trained model), closes its store and reports. A malformed message is answered with an
   * error (its push throws) and serving goes on. Server ranks only.
   */
  async serve(): Promise<ParameterServerReport> {
    const op = 'ParameterServer.serve';
    if (!this.isServer) throw new ValueError(op, `rank ${this.rank} is a worker (the servers are ranks 0..${this.servers - 1})`);
    if (!this.#shard) throw new ValueError(op, 'this server has already served');
    const store = this.#stores[0];
    const now = () => Date.now();
    const workers = new Map<number, WorkerState>();
    for (let w = this.servers; w < this.worldSize; w++) workers.set(w, { state: 'expected', joins: 0, applied: 0, rejected: 0, inc: 0 });
    // Sync: the gradients of the current step, by worker, and when the first arrived.
    const pending = new Map<number, { grad: Tensor; inc: number; seq: number }>();
    let firstPending = 0;
    let dropped = 0;
    let lastMessage = now();
    const pollMs = Math.max(20, Math.min(1000, Math.floor(this.workerTimeoutMs / 10)));
    const slot = (n: number) => `ps/q/${n}`;
    // The lowest slot not read yet, the slots above it read already, and since when it has been taken but unwritten.
    let next = 1;
    const early = new Set<number>();
    let stuckSince = 0;
    const advance = () => {
      next++;
      stuckSince = 0;
      while (early.delete(next)) next++;
    };

    const ack = (w: number, inc: number, seq: number, applied: boolean, error?: string) => {
      store.set(`ps/ack/${w}.${inc}/${seq}`, JSON.stringify({ applied, version: this.#version, error }));
    };
    const drop = (w: number, s: WorkerState) => {
      s.state = 'dropped';
      dropped++;
      const p = pending.get(w);
      if (p) {
        p.grad.dispose();
        pending.delete(w);
      }
    };
    // Sync: steps once every live worker has a gradient in (and none is still expected), or once
    // workerTimeoutMs has passed since the step's first gradient, dropping the missing workers.
    const maybeStep = () => {
      if (this.mode !== 'sync' || pending.size === 0) return;
      const missing = [...workers].filter(([w, s]) => (s.state === 'live' || s.state === 'expected') && !pending.has(w));
      if (missing.length) {
        if (now() - firstPending < this.workerTimeoutMs) return;
        for (const [w, s] of missing) drop(w, s);
      }
      const ids = [...pending.keys()].sort((a, b) => a - b);
      const mean = tidy(() => ids.map((w) => pending.get(w)!.grad).reduce((a, g) => a.add(g)).div(ids.length));
      for (const w of ids) pending.get(w)!.grad.dispose();
      this.apply(mean);
      for (const w of ids) {
        const p = pending.get(w)!;
        workers.get(w)!.applied++;
        ack(w, p.inc, p.seq, true);
      }
      pending.clear();
    };

    const handleMessage = (m: Message, data: Float32Array | Float64Array) => {
      const s = workers.get(m.worker);
      if (!s) return;   // not a worker rank of this job: nothing to answer
      if (m.inc < s.inc) {
        // A message of a worker process that has since been restarted.
        if (m.type === 'grad') ack(m.worker, m.inc, m.seq!, false, 'a newer process of this worker rank has joined');
        return;
      }
      if (m.inc > s.inc) {
        s.inc = m.inc;
        const old = pending.get(m.worker);
        if (old) {
          old.grad.dispose();
          pending.delete(m.worker);
        }
      }
      if (m.type === 'leave') {
        s.state = 'left';
        return;
      }
      if (m.type === 'join') s.joins++;
      s.state = 'live';
      if (m.type !== 'grad') return;
      if (m.dtype !== this.#dtype) {
        ack(m.worker, m.inc, m.seq!, false, `the gradient is ${m.dtype}, this server's parameters ${this.#dtype}: every rank must build the model in one dtype`);
        return;
      }
      const want = this.shardStarts[this.rank + 1] - this.shardStarts[this.rank];
      if (data.length !== want) {
        ack(m.worker, m.inc, m.seq!, false, `the gradient has ${data.length} elements, this server's shard ${want}: the worker's model differs from the server's`);
        return;
      }
      const behind = this.#version - m.version!;
      const fresh = this.mode === 'sync' ? behind === 0 && !pending.has(m.worker) : behind <= this.maxStaleness;
      if (!fresh) {
        s.rejected++;
        ack(m.worker, m.inc, m.seq!, false);
        return;
      }
      const grad = keep(tensor(data, { dtype: this.#dtype }));
      if (this.mode === 'async') {
        this.apply(grad);
        s.applied++;
        ack(m.worker, m.inc, m.seq!, true);
        return;
      }
      if (pending.size === 0) firstPending = now();
      pending.set(m.worker, { grad, inc: m.inc, seq: m.seq! });
    };
    // One bad message must not end serving for every worker: its sender, where it can be told, gets the error.
    const handle = (n: number, bytes: Uint8Array) => {
      store.deleteKey(slot(n));
      lastMessage = now();
      let m: Message | null = null;
      try {
        const got = decode<Message>(bytes);
        m = got.header;
        if (!wellFormed(m)) throw new ValueError(op, `a malformed message header: ${JSON.stringify(m).slice(0, 200)}`);
        handleMessage(m, got.data);
      } catch (e) {
        if (m?.type === 'grad' && workers.has(m.worker) && Number.isSafeInteger(m.inc) && Number.isSafeInteger(m.seq)) {
          ack(m.worker, m.inc, m.seq!, false, `server ${this.rank} could not handle the gradient: ${(e as Error).message}`);
        }
      }
    };

    try {
      for (;;) {
        let bytes: Uint8Array | null = null;
        try {
          bytes = await store.get(slot(next), pollMs);
        } catch (e) {
          if (!isTimeout(e)) throw e;
        }
        if (bytes) {
          handle(next, bytes);
          advance();
        } else {
          const top = store.add(Q_NEXT, 0);
          if (top >= next) {
            // Slot next is taken but not written: the later ones are other processes' (see the file header).
            for (let n = next + 1; n <= top; n++) {
              if (early.has(n) || !store.check([slot(n)])) continue;
              handle(n, await store.get(slot(n)));
              early.add(n);
            }
            if (!stuckSince) stuckSince = now();
            else if (now() - stuckSince > this.workerTimeoutMs) advance();
          }
        }
        maybeStep();
        if ([...workers.values()].every((s) => s.state === 'left')) break;
        if (pending.size === 0 && now() - lastMessage > this.idleTimeoutMs) break;
      }
    } finally {
      for (const p of pending.values()) p.grad.dispose();
      this.setParams(this.#shard!.dataSync() as Float32Array | Float64Array, this.shardStarts[this.rank]);
      this.#optimizer!.dispose();
      this.#shard!.dispose();
      this.#shard = null;
      store.close();
      this.#master?.close();
    }
    const report: ParameterServerReport = { server: this.rank, version: this.#version, workers: {}, dropped };
    for (const [w, { state, joins, applied, rejected }] of workers) report.workers[w] = { state, joins, applied, rejected };
    return report;
  }

  /** Writes values, the elements start .. start + values.length of the flattened parameters, into the model's parameters. */
  private setParams(values: Float32Array | Float64Array, start: number): void {
    const end = start + values.length;
    let at = 0;
    noGrad(() => {
      for (const p of this.#params) {
        const lo = Math.max(start, at), hi = Math.min(end, at + p.numel);
        if (lo < hi) {
          let v = values.subarray(lo - start, hi - start);
          if (hi - lo < p.numel) {
            // Partly covered (a shard's edge): keep the rest of the parameter as it is.
            const whole = (p.dataSync() as Float32Array | Float64Array).slice();
            whole.set(v, lo - at);
            v = whole;
          }
          tidy(() => p.copy_(tensor(v, { shape: p.shape, dtype: this.#dtype, device: p.device })));
        }
        at += p.numel;
      }
    });
  }

  // ---- worker ----

  private worker(op: string): void {
    if (this.isServer) throw new ValueError(op, `rank ${this.rank} is a server; pull, push and close are for workers`);
    if (this.#closed) throw new DistError(op, 'this worker has closed');
  }

  /** Writes a message into server k's queue. */
  private send(k: number, m: Message, data?: Float32Array | Float64Array): void {
    const store = this.#stores[k];
    const slot = store.add(Q_NEXT, 1);
    store.set(`ps/q/${slot}`, encode(m, data));
  }

  private async join(): Promise<void> {
    this.#inc = this.#stores[0].add(`ps/inc/${this.rank}`, 1);
    for (let k = 0; k < this.servers; k++) this.send(k, { type: 'join', worker: this.rank, inc: this.#inc });
    this.#versions = new Array(this.servers).fill(-1);
  }

  /**
   * Copies the servers' latest parameters into the model's parameters and returns each shard's
   * version (what the next push's gradient is computed on).
   */
  async pull(): Promise<number[]> {
    const op = 'ParameterServer.pull';
    this.worker(op);
    const flat = this.host();
    const got = await Promise.all(this.#stores.map((s) => s.get(PARAMS, this.#timeoutMs)));
    got.forEach((bytes, k) => {
      const { header, data } = decode<{ version: number; start: number; end: number; numel: number; dtype: string }>(bytes);
      if (header.dtype !== this.#dtype) {
        throw new ValueError(op, `server ${k}'s parameters are ${header.dtype}, this worker's ${this.#dtype}: every rank must build the model in one dtype`);
      }
      if (header.numel !== this.numel || header.start !== this.shardStarts[k] || header.end !== this.shardStarts[k + 1]) {
        throw new ValueError(op, `server ${k} holds elements ${header.start}..${header.end} of ${header.numel}, this worker expects ${this.shardStarts[k]}..${this.shardStarts[k + 1]} of ${this.numel}: the models differ`);
      }
      flat.set(data, header.start);
      this.#versions[k] = header.version;
    });
    this.setParams(flat, 0);
    return [...this.#versions];
  }

  /**
   * Sends the model's gradients (.grad; none counts as zeros) to the servers, computed on the
   * parameters of the last pull, and waits for their answers (sync: until the step is taken). The
   * gradients stay in .grad (zero them before the next backward).
   */
  async push(): Promise<PushResult> {
    const op = 'ParameterServer.push';
    this.worker(op);
    if (this.#versions.some((v) => v < 0)) throw new ValueError(op, 'pull() the parameters before pushing gradients computed on them');
    const flat = this.host();
    let at = 0;
    for (const p of this.#params) {
      if (p.grad) flat.set(p.grad.dataSync() as Float32Array | Float64Array, at);
      at += p.numel;
    }
    const seq = ++this.#seq;
    for (let k = 0; k < this.servers; k++) {
      const m: Message = { type: 'grad', worker: this.rank, inc: this.#inc, seq, version: this.#versions[k], dtype: this.#dtype };
      this.send(k, m, flat.subarray(this.shardStarts[k], this.shardStarts[k + 1]));
    }
    const key = `ps/ack/${this.rank}.${this.#inc}/${seq}`;
    const acks = await Promise.all(this.#stores.map(async (s) => {
      const a = JSON.parse(Buffer.from(await s.get(key, this.#timeoutMs)).toString('utf8')) as { applied: boolean; version: number; error?: string };
      s.deleteKey(key);
      return a;
    }));
    const failed = acks.find((a) => a.error);
    if (failed) throw new DistError(op, failed.error!);
    return { applied: acks.every((a) => a.applied), versions: acks.map((a) => a.version) };
  }

  /** Leaves the job: the servers stop counting on this worker. Idempotent. */
  async close(): Promise<void> {
    if (this.isServer || this.#closed) return;
    this.#closed = true;
    for (let k = 0; k < this.servers; k++) this.send(k, { type: 'leave', worker: this.rank, inc: this.#inc });
    for (const s of this.#stores) s.close();
  }
}
