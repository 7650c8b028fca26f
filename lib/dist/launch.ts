// The process launcher behind `kiln launch` (torchrun's job): starts one worker process per local
// rank with the environment a process group reads (RANK, WORLD_SIZE, MASTER_ADDR, ...), prefixes
// their output lines with the rank, forwards signals, and stops every worker when one fails, so a
// crashed rank never leaves the others waiting forever on a collective.
import { ChildProcess, spawn } from 'child_process';
import * as os from 'os';
import { StringDecoder } from 'string_decoder';

/** What to start: the same command on every rank, with the rank in its environment. */
export interface LaunchOptions {
  /** Worker processes on this node (local world size); >= 1. */
  nprocPerNode: number;
  /** The script each worker runs with this node binary (process.execPath). */
  script: string;
  /** Arguments after the script. */
  args?: string[];
  /** Nodes taking part (default 1). */
  nnodes?: number;
  /** This node's index, 0 <= nodeRank < nnodes (default 0). */
  nodeRank?: number;
  /** Address of rank 0's node (default 127.0.0.1). */
  masterAddr?: string;
  /** Port rank 0 listens on, 1..65535 (default 29500). */
  masterPort?: number;
  /**
   * Give each local rank one GPU through CUDA_VISIBLE_DEVICES (default true): the local rank's
   * number when the parent environment has no CUDA_VISIBLE_DEVICES, else the local-rank-th entry
   * of the parent's list. False leaves CUDA_VISIBLE_DEVICES as the parent has it.
   */
  gpuBinding?: boolean;
  /** Milliseconds between SIGTERM (or a forwarded signal) and SIGKILL of survivors (default 10000). */
  gracePeriodMs?: number;
  /** Environment the workers' variables are added to (default process.env). */
  env?: Record<string, string | undefined>;
  /** Where worker stdout lines go, prefixed (default process.stdout). */
  stdout?: LineSink;
  /** Where worker stderr lines go, prefixed, and the launcher's own messages (default process.stderr). */
  stderr?: LineSink;
  /** Forward SIGINT, SIGTERM and SIGHUP received by this process to the workers (default true). */
  forwardSignals?: boolean;
}

/** Where the launcher writes lines (a Node.js writable stream, or anything with write). */
export interface LineSink {
  /** Writes text (whole lines ending in "\n"); the return value is ignored. */
  write(text: string): unknown;
}

/** A signal's name ('SIGTERM', 'SIGKILL', ...). */
export type SignalName = `SIG${string}`;

/** One worker's place in the job. */
export interface WorkerPlan {
  /** Its rank in the whole job. */
  rank: number;
  /** Its rank on this node. */
  localRank: number;
  /** The variables set for this worker (added to the base environment). */
  env: Record<string, string>;
}

/** How one worker ended. */
export interface WorkerExit {
  /** Its rank in the whole job. */
  rank: number;
  /** Its rank on this node. */
  localRank: number;
  /** Its process id (undefined when it could not start). */
  pid: number | undefined;
  /** Exit code, or null when ended by a signal. */
  code: number | null;
  /** Signal that ended it, or null. */
  signal: SignalName | null;
}

/** How the whole launch ended. */
export interface LaunchResult {
  /**
   * The launcher's exit code: 0 when every worker exited 0; 1 when a worker failed (exited
   * non-zero or by a signal the launcher did not send); 128 + the signal's number when the
   * launcher itself received SIGINT, SIGTERM or SIGHUP and stopped the workers.
   */
  exitCode: number;
  /** Every worker, by local rank. */
  workers: WorkerExit[];
  /** The first worker that failed, if any. */
  failed: WorkerExit | null;
  /** The signal the launcher received and forwarded, if any. */
  interrupted: SignalName | null;
  /** One line saying how it ended. */
  message: string;
}

const DEFAULT_PORT = 29500;
const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function checkInt(name: string, v: number, min: number, max = Infinity): void {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(`${name} must be an integer ${max === Infinity ? `>= ${min}` : `in ${min}..${max}`}, got ${v}`);
  }
}

/**
 * The ranks and environment variables of this node's workers, as torchrun sets them: RANK =
 * nodeRank * nprocPerNode + localRank, LOCAL_RANK, WORLD_SIZE = nnodes * nprocPerNode,
 * LOCAL_WORLD_SIZE, GROUP_RANK (the node rank), MASTER_ADDR, MASTER_PORT, and CUDA_VISIBLE_DEVICES
 * (see {@link LaunchOptions.gpuBinding}). Throws RangeError on invalid options.
 */
export function planWorkers(o: LaunchOptions): WorkerPlan[] {
  const n = o.nprocPerNode;
  const nnodes = o.nnodes ?? 1;
  const nodeRank = o.nodeRank ?? 0;
  const port = o.masterPort ?? DEFAULT_PORT;
  const addr = o.masterAddr ?? '127.0.0.1';
  checkInt('nproc-per-node', n, 1);
  checkInt('nnodes', nnodes, 1);
  if (!Number.isInteger(nodeRank) || nodeRank < 0 || nodeRank >= nnodes) {
    throw new RangeError(`node-rank must be an integer in 0..${nnodes - 1} (with nnodes ${nnodes}), got ${nodeRank}`);
  }
  checkInt('master-port', port, 1, 65535);
  if (addr === '') throw new RangeError('master-addr must not be empty');
  if (!o.script) throw new RangeError('a script to run is required');
  const parentEnv = o.env ?? process.env;
  let gpus: string[] | null = null;
  if (o.gpuBinding ?? true) {
    const visible = parentEnv.CUDA_VISIBLE_DEVICES;
    if (visible === undefined) gpus = Array.from({ length: n }, (_, i) => String(i));
    else {
      gpus = visible.split(',').map((s) => s.trim()).filter((s) => s !== '');
      if (gpus.length < n) {
        throw new RangeError(
          `CUDA_VISIBLE_DEVICES=${JSON.stringify(visible)} lists ${gpus.length} GPU${gpus.length === 1 ? '' : 's'}, fewer than the ${n} workers (one GPU per worker); ` +
            'list more, lower nproc-per-node, or turn GPU binding off (--no-gpu-binding)',
        );
      }
    }
  }
  return Array.from({ length: n }, (_, local) => {
    const env: Record<string, string> = {
      RANK: String(nodeRank * n + local),
      LOCAL_RANK: String(local),
      WORLD_SIZE: String(nnodes * n),
      LOCAL_WORLD_SIZE: String(n),
      GROUP_RANK: String(nodeRank),
      MASTER_ADDR: addr,
      MASTER_PORT: String(port),
    };
    if (gpus) env.CUDA_VISIBLE_DEVICES = gpus[local];
    return { rank: nodeRank * n + local, localRank: local, env };
  });
}

/**
 * Copies a stream's text to out with prefix at the start of every line; a partial line is held
 * until its newline arrives or the stream ends (then it is written with a newline added), so lines
 * of different workers never interleave mid-line.
 */
function prefixLines(from: NodeJS.ReadableStream, out: LineSink, prefix: string): void {
  const decoder = new StringDecoder('utf8');
  let held = '';
  const emit = (text: string): void => {
    held += text;
    const end = held.lastIndexOf('\n');
    if (end < 0) return;
    out.write(held.slice(0, end + 1).split('\n').slice(0, -1).map((l) => `${prefix}${l}\n`).join(''));
    held = held.slice(end + 1);
  };
  from.on('data', (chunk: Buffer) => emit(decoder.write(chunk)));
  from.on('end', () => {
    emit(decoder.end());
    if (held !== '') out.write(`${prefix}${held}\n`);
    held = '';
  });
}

function describe(w: WorkerExit): string {
  return w.signal ? `was killed by ${w.signal}` : `exited with code ${w.code}`;
}

/**
 * Starts this node's workers (see {@link planWorkers}) and resolves when all of them have ended.
 * When one fails (exits non-zero or is killed by a signal the launcher did not send), the others
 * get SIGTERM and, after the grace period, SIGKILL. SIGINT, SIGTERM and SIGHUP received by this
 * process are forwarded to every worker, with SIGKILL after the grace period. Invalid options
 * throw RangeError before anything starts.
 */
export function launch(o: LaunchOptions): Promise<LaunchResult> {
  const plans = planWorkers(o);
  const grace = o.gracePeriodMs ?? 10_000;
  if (!(grace >= 0)) throw new RangeError(`grace period must be >= 0, got ${grace}`);
  const out = o.stdout ?? process.stdout;
  const err = o.stderr ?? process.stderr;
  const baseEnv = o.env ?? process.env;
  const n = plans.length;

  return new Promise((resolve) => {
    const children: ChildProcess[] = [];
    const exits: Array<WorkerExit | null> = plans.map(() => null);
    let closed = 0;
    let failed: WorkerExit | null = null;
    let interrupted: NodeJS.Signals | null = null;
    let killTimer: NodeJS.Timeout | null = null;

    const alive = (): ChildProcess[] => children.filter((c, i) => exits[i] === null && c.pid !== undefined);
    const signalAll = (sig: NodeJS.Signals): void => {
      for (const c of alive()) {
        try {
          c.kill(sig);
        } catch {
          // Already gone: its exit event is on its way.
        }
      }
    };
    // Stop the survivors: sig now, SIGKILL once the grace period is over.
    const stop = (sig: NodeJS.Signals): void => {
      signalAll(sig);
      if (!killTimer) {
        killTimer = setTimeout(() => {
          const left = alive();
          if (left.length) err.write(`kiln launch: ${left.length} worker${left.length === 1 ? '' : 's'} still running after ${grace / 1000} s; sending SIGKILL\n`);
          signalAll('SIGKILL');
        }, grace);
      }
    };
    const onSignal = (sig: NodeJS.Signals): void => {
      if (!interrupted && !failed) err.write(`kiln launch: received ${sig}; forwarding it to the workers\n`);
      interrupted ??= sig;
      stop(sig);
    };
    const forward = o.forwardSignals ?? true;
    if (forward) for (const s of FORWARDED) process.on(s, onSignal);

    const finish = (): void => {
      if (killTimer) clearTimeout(killTimer);
      if (forward) for (const s of FORWARDED) process.removeListener(s, onSignal);
      const workers = exits as WorkerExit[];
      let exitCode = 0;
      let message = `kiln launch: all ${n} worker${n === 1 ? '' : 's'} exited with code 0`;
      if (failed) {
        exitCode = 1;
        message = `kiln launch: rank ${failed.rank} (local rank ${failed.localRank}) ${describe(failed)}; the other workers were stopped`;
      } else if (interrupted) {
        exitCode = 128 + (os.constants.signals[interrupted] ?? 0);
        message = `kiln launch: stopped by ${interrupted}`;
      }
      resolve({ exitCode, workers, failed, interrupted, message });
    };

    plans.forEach((p, i) => {
      const child = spawn(process.execPath, [o.script, ...(o.args ?? [])], {
        env: { ...baseEnv, ...p.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      const prefix = `[rank ${p.rank}] `;
      prefixLines(child.stdout!, out, prefix);
      prefixLines(child.stderr!, err, prefix);
      let done = false;
      const ended = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (exits[i] === null) {
          const w: WorkerExit = { rank: p.rank, localRank: p.localRank, pid: child.pid, code, signal };
          exits[i] = w;
          const bad = code !== 0;
          if (bad && !failed && !interrupted) {
            failed = w;
            const others = alive().length;
            err.write(`kiln launch: rank ${p.rank} (local rank ${p.localRank}) ${describe(w)}${others ? `; stopping the other ${others} worker${others === 1 ? '' : 's'}` : ''}\n`);
            stop('SIGTERM');
          }
        }
      };
      child.on('exit', ended);
      child.on('error', (e) => {
        // spawn failed (e.g. the node binary vanished): no exit event follows, only close.
        err.write(`kiln launch: rank ${p.rank} could not start: ${e.message}\n`);
        ended(127, null);
      });
      child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
        ended(code, signal);
        if (done) return;
        done = true;
        if (++closed === n) finish();
      });
    });
  });
}
