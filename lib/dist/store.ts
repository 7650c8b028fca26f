// TCPStore: the rendezvous key-value store process groups use to exchange addresses and NCCL unique
// ids (torch.distributed.TCPStore). The server and client are native (native/dist/store.cc) so Gloo's
// rendezvous can call them from its own threads; this class validates arguments and keeps waiting
// calls (create, get, wait) off the event loop as Promises. Not exported from lib/index.ts yet: it
// joins a public kiln.dist namespace with the process groups.
import { distNative as N, StoreClientHandle, StoreServerHandle } from '../ops/dist_runtime';
import { DistError, ValueError } from '../errors';

/** How to reach (or host) a store. */
export interface TCPStoreOptions {
  /** The master's address; the server listens on it ('0.0.0.0': every interface) unless listenHost says otherwise. */
  host: string;
  /**
   * With isServer, the address the server listens on when it is not host ('0.0.0.0': every
   * interface, as torch's master does); this process's client still connects to host.
   */
  listenHost?: string;
  /** The master's port, 0..65535; 0 with isServer picks a free port (read it back from `store.port`). */
  port: number;
  /** Whether this process runs the server (rank 0 in torch's convention); it is also a client. */
  isServer: boolean;
  /**
   * Processes taking part. When given, create() resolves only once worldSize stores (server's
   * included) have joined, or rejects with DistError after timeoutMs; this adds two keys under
   * `__kiln_store/` that numKeys() counts.
   */
  worldSize?: number;
  /**
   * Milliseconds for connecting (refused connections are retried: the master may start later), for
   * each call's reply and the default for get/wait (default 300000, torch's 5 minutes).
   */
  timeoutMs?: number;
}

const JOINED = '__kiln_store/joined';
const READY = '__kiln_store/ready';

function checkKey(op: string, key: unknown): asserts key is string {
  if (typeof key !== 'string') throw new ValueError(op, `key must be a string, got ${typeof key}`);
}

function checkKeys(op: string, keys: unknown): asserts keys is string[] {
  if (!Array.isArray(keys)) throw new ValueError(op, 'keys must be an array of strings');
  keys.forEach((k, i) => {
    if (typeof k !== 'string') throw new ValueError(op, `keys[${i}] must be a string, got ${typeof k}`);
  });
}

function checkTimeout(op: string, ms: unknown): asserts ms is number {
  if (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms <= 0) {
    throw new ValueError(op, `timeoutMs must be a positive integer, got ${String(ms)}`);
  }
}

/**
 * A key-value store over TCP for rendezvous: values are bytes, `add` keeps atomic int64 counters
 * (barriers), `get` and `wait` block until keys appear. Every failure (refused connection, timeout,
 * closed peer) is a DistError naming the operation, the address and the key.
 *
 * ```ts
 * const store = await TCPStore.create({ host: '127.0.0.1', port: 29500, isServer: rank === 0, worldSize });
 * if (rank === 0) store.set('ncclId', id);
 * const id0 = await store.get('ncclId');
 * ```
 */
export class TCPStore {
  /** The master's address as given. */
  readonly host: string;
  /** The port the server listens on (the one picked when port 0 was asked). */
  readonly port: number;
  /** Whether this store runs the server. */
  readonly isServer: boolean;
  /** Default timeout of every call, in milliseconds. */
  readonly timeoutMs: number;
  private server: StoreServerHandle | null;
  private client: StoreClientHandle | null;

  private constructor(o: { host: string; port: number; isServer: boolean; timeoutMs: number }, server: StoreServerHandle | null, client: StoreClientHandle) {
    this.host = o.host;
    this.port = o.port;
    this.isServer = o.isServer;
    this.timeoutMs = o.timeoutMs;
    this.server = server;
    this.client = client;
  }

  /**
   * Starts the server (isServer) and connects a client to host:port, retrying until timeoutMs; with
   * worldSize, also waits for that many stores to join. Rejects with DistError when the port cannot
   * be bound, no server answers in time or not enough stores join.
   */
  static async create(options: TCPStoreOptions): Promise<TCPStore> {
    const op = 'TCPStore.create';
    const { host, port, isServer, worldSize } = options;
    const timeoutMs = options.timeoutMs ?? 300_000;
    if (typeof host !== 'string' || host === '') throw new ValueError(op, 'host must be a non-empty string');
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ValueError(op, `port must be an integer in 0..65535, got ${port}`);
    if (!isServer && port === 0) throw new ValueError(op, 'a client needs the server\'s port (port 0 only with isServer)');
    checkTimeout(op, timeoutMs);
    if (worldSize !== undefined && (!Number.isSafeInteger(worldSize) || worldSize < 1)) {
      throw new ValueError(op, `worldSize must be a positive integer, got ${worldSize}`);
    }
    const listenHost = options.listenHost ?? host;
    if (typeof listenHost !== 'string' || listenHost === '') throw new ValueError(op, 'listenHost must be a non-empty string');
    const server = isServer ? N.storeServerStart(listenHost, port) : null;
    try {
      const actualPort = server ? N.storeServerPort(server) : port;
      // A server on every interface is reached through loopback from its own process.
      const connectHost = server && ['0.0.0.0', '::', '[::]'].includes(host) ? '127.0.0.1' : host;
      const client = await N.storeConnect(connectHost, actualPort, timeoutMs);
      const store = new TCPStore({ host, port: actualPort, isServer: !!isServer, timeoutMs }, server, client);
      if (worldSize !== undefined) {
        try {
          if (store.add(JOINED, 1) === worldSize) store.set(READY, '1');
          await store.wait([READY], timeoutMs);
        } catch (e) {
          store.close();
          throw e;
        }
      }
      return store;
    } catch (e) {
      if (server) N.storeServerStop(server);
      throw e;
    }
  }

  /** @internal The native client, for the process groups' rendezvous. */
  _client(op: string): StoreClientHandle {
    return this.live(op);
  }

  private live(op: string): StoreClientHandle {
    if (!this.client) throw new DistError(op, `the store at ${this.host}:${this.port} is closed`);
    return this.client;
  }

  /** Stores value (a string is stored as its UTF-8 bytes) at key, replacing what was there; at most 64 MiB. */
  set(key: string, value: string | Uint8Array): void {
    const op = 'TCPStore.set';
    checkKey(op, key);
    let bytes: Uint8Array;
    if (typeof value === 'string') bytes = Buffer.from(value, 'utf8');
    else if (value instanceof Uint8Array) bytes = value;
    else throw new ValueError(op, 'value must be a string or a Uint8Array');
    N.storeSet(this.live(op), key, bytes);
  }

  /** Resolves with key's value once some store sets it; DistError after timeoutMs (default: the store's). */
  async get(key: string, timeoutMs: number = this.timeoutMs): Promise<Uint8Array> {
    const op = 'TCPStore.get';
    checkKey(op, key);
    checkTimeout(op, timeoutMs);
    return N.storeGet(this.live(op), key, timeoutMs);
  }

  /**
   * Adds n to the integer counter at key (an absent key counts as 0) atomically across every store
   * and returns the new value; exact while it stays within Number.MAX_SAFE_INTEGER. DistError when
   * the key holds a value that is not an integer.
   */
  add(key: string, n: number): number {
    const op = 'TCPStore.add';
    checkKey(op, key);
    if (!Number.isSafeInteger(n)) throw new ValueError(op, `n must be a safe integer, got ${n}`);
    return N.storeAdd(this.live(op), key, n);
  }

  /** Resolves once every key is present; DistError naming the keys after timeoutMs (default: the store's). */
  async wait(keys: string[], timeoutMs: number = this.timeoutMs): Promise<void> {
    const op = 'TCPStore.wait';
    checkKeys(op, keys);
    checkTimeout(op, timeoutMs);
    return N.storeWait(this.live(op), keys, timeoutMs);
  }

  /** Whether every key is present now (does not wait). */
  check(keys: string[]): boolean {
    const op = 'TCPStore.check';
    checkKeys(op, keys);
    return N.storeCheck(this.live(op), keys);
  }

  /** Removes key; whether it was present. */
  deleteKey(key: string): boolean {
    const op = 'TCPStore.deleteKey';
    checkKey(op, key);
    return N.storeDeleteKey(this.live(op), key);
  }

  /** How many keys the store holds (counters and create()'s worldSize keys included). */
  numKeys(): number {
    return N.storeNumKeys(this.live('TCPStore.numKeys'));
  }

  /**
   * Closes this store's connections and, on the server, stops serving and releases the port (other
   * stores' calls then fail with DistError). Idempotent; later calls on this store throw DistError.
   */
  close(): void {
    if (this.client) N.storeClientClose(this.client);
    if (this.server) N.storeServerStop(this.server);
    this.client = null;
    this.server = null;
  }

  /** close(), for `using` declarations. */
  [Symbol.dispose](): void {
    this.close();
  }
}
