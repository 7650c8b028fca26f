// The addon's TCPStore functions (native/binding/dist.cc), typed. They sit in lib/ops because only
// lib/ops and lib/tensor.ts reach the addon; lib/dist/store.ts validates arguments and calls these.
import { native, nativeExports } from '../native';
import { nativeError } from '../errors';

/** An opaque native TCPStore server: its thread stops when storeServerStop runs or it is collected. */
export type StoreServerHandle = { readonly __kilnStoreServer: unique symbol };
/** An opaque native TCPStore client: its sockets close when storeClientClose runs or it is collected. */
export type StoreClientHandle = { readonly __kilnStoreClient: unique symbol };

/** The addon's store functions; errors are DistError (ValueError for malformed arguments). */
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
}

const NAMES: Array<keyof DistNative> = [
  'storeServerStart', 'storeServerPort', 'storeServerStop', 'storeConnect', 'storeClientClose', 'storeSet',
  'storeGet', 'storeAdd', 'storeCheck', 'storeWait', 'storeDeleteKey', 'storeNumKeys',
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

/** @internal The addon's TCPStore functions (lib/dist/store.ts is their one caller). */
export const distNative: DistNative = load();
