// The addon's TCPStore and process-group functions (native/binding/dist.cc), typed. They sit in
// lib/ops because only lib/ops and lib/tensor.ts reach the addon; lib/dist/store.ts and
// lib/dist/process_group.ts validate arguments and call these.
import { native, nativeExports } from '../native';
import { nativeError } from '../errors';

/** An opaque native TCPStore server: its thread stops when storeServerStop runs or it is collected. */
export type StoreServerHandle = { readonly __kilnStoreServer: unique symbol };
/** An opaque native TCPStore client: its sockets close when storeClientClose runs or it is collected. */
export type StoreClientHandle = { readonly __kilnStoreClient: unique symbol };

/** An opaque native process group: shut down by pgShutdown or when collected. */
export type GroupHandle = { readonly __kilnGroup: unique symbol };
/** An opaque native op in flight (or finished). */
export type WorkHandle = { readonly __kilnWork: unique symbol };
/** A native tensor handle (Tensor._h). */
type H = unknown;

/** The addon's store and process-group functions; errors are DistError (ValueError for malformed arguments). */
export interface DistNative {
  /** Listens on host:port (0: any free port) and starts the serving thread. */
  storeServerStart(host: string, port: number): StoreServerHandle;
  /** The port the server listens on. */
  storeServerPort(s: StoreServerHandle): number;
  /** Stops the thread and closes every socket (idempotent). */
  storeServerStop(s: StoreServerHandle): void;
  /** Connects, retrying refused connections until timeoutMs passes. */
  storeConnect(host: string, port: number, timeoutMs: number): Promise<StoreClientHandle>;
  /** Closes the client's idle connections; later calls throw DistError. */
  storeClientClose(c: StoreClientHandle): void;
  storeSet(c: StoreClientHandle, key: string, value: Uint8Array): void;
  /** Resolves with key's value once it is set, rejects with DistError after timeoutMs. */
  storeGet(c: StoreClientHandle, key: string, timeoutMs: number): Promise<Uint8Array>;
  /** Adds delta to the counter at key and returns the new value. */
  storeAdd(c: StoreClientHandle, key: string, delta: number): number;
  storeCheck(c: StoreClientHandle, keys: string[]): boolean;
  /** Resolves once every key is set, rejects with DistError after timeoutMs. */
  storeWait(c: StoreClientHandle, keys: string[], timeoutMs: number): Promise<void>;
  storeDeleteKey(c: StoreClientHandle, key: string): boolean;
  storeNumKeys(c: StoreClientHandle): number;
  /** Which process-group backends this build has. */
  distBackends(): { gloo: boolean; nccl: boolean };
  /** Joins a group through the store (keys under prefix); resolves once every rank has. */
  pgCreate(backend: 'gloo' | 'nccl', c: StoreClientHandle, prefix: string, rank: number, size: number, timeoutMs: number,
    hostname: string, iface: string, device: number): Promise<GroupHandle>;
  pgShutdown(g: GroupHandle): void;
  /** Reduce ops by code: 0 sum, 1 avg, 2 max, 3 min. */
  pgAllReduce(g: GroupHandle, t: H, op: number): WorkHandle;
  pgBroadcast(g: GroupHandle, t: H, src: number): WorkHandle;
  pgAllGather(g: GroupHandle, output: H, input: H): WorkHandle;
  pgReduceScatter(g: GroupHandle, output: H, input: H, op: number): WorkHandle;
  pgBarrier(g: GroupHandle): WorkHandle;
  pgSend(g: GroupHandle, t: H, dst: number, tag: number): WorkHandle;
  pgRecv(g: GroupHandle, t: H, src: number, tag: number): WorkHandle;
  pgWorkDone(w: WorkHandle): boolean;
  /** Settles when the op has finished (rejecting with its DistError). */
  pgWorkWait(w: WorkHandle): Promise<void>;
  /** Blocks until the op has finished (a device op: the current stream waits for it); throws its DistError. */
  pgWorkWaitSync(w: WorkHandle): void;
}

const NAMES: Array<keyof DistNative> = [
  'storeServerStart', 'storeServerPort', 'storeServerStop', 'storeConnect', 'storeClientClose', 'storeSet',
  'storeGet', 'storeAdd', 'storeCheck', 'storeWait', 'storeDeleteKey', 'storeNumKeys', 'distBackends', 'pgCreate',
  'pgShutdown', 'pgAllReduce', 'pgBroadcast', 'pgAllGather', 'pgReduceScatter', 'pgBarrier', 'pgSend', 'pgRecv',
  'pgWorkDone', 'pgWorkWait', 'pgWorkWaitSync',
];

function load(): DistNative {
  const missing = NAMES.filter((n) => typeof nativeExports[n] !== 'function');
  if (missing.length) {
    throw new Error(`kiln: the native addon lacks ${missing.join(', ')}; rebuild it with \`npm run build:native\``);
  }
  // Checked just above, name by name; the addon's exports are untyped.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const exportsAny: any = nativeExports;
  return exportsAny;
}

// The store is used by worker processes that may never load lib/index.ts, which otherwise installs
// the factory: without it a native failure would arrive as a plain Error rather than DistError.
native.setErrorFactory(nativeError);

/** @internal The addon's TCPStore and process-group functions (lib/dist/store.ts and process_group.ts call them). */
export const distNative: DistNative = load();
