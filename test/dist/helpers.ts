// Runs a worker script as the ranks of one job on this machine (the environment torchrun sets,
// MASTER_ADDR 127.0.0.1 and a free port), for the multi-process tests; and the one-process
// reference a data-parallel run of workers/ddp_train.js is compared with.
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as net from 'net';
import * as path from 'path';
import * as kiln from '../../lib';

export const WORKERS = path.join(__dirname, 'workers');

/** What one rank printed and how it ended. */
export interface RankResult {
  rank: number;
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** The stdout lines that parse as JSON. */
  json: any[];
}

/** A port nothing listens on now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** How runRanks and runCommandRanks start a job. */
export interface RanksOptions {
  env?: Record<string, string>;
  /** Kills every rank still running after this long (default 120 s). */
  timeoutMs?: number;
  port?: number;
}

/** Starts `world` processes of the worker script with args; resolves when all have exited (or kills them after timeoutMs). */
export async function runRanks(script: string, world: number, args: string[] = [], opts: RanksOptions = {}): Promise<RankResult[]> {
  return runCommandRanks(process.execPath, [path.join(WORKERS, script), ...args], world, opts);
}

/** As runRanks, for any program (the PyTorch reference script, say). */
export async function runCommandRanks(command: string, args: string[], world: number, opts: RanksOptions = {}): Promise<RankResult[]> {
  const port = opts.port ?? (await freePort());
  return Promise.all(Array.from({ length: world }, (_, rank) => spawnRank(command, args, rank, world, port, opts).done));
}

/** One started rank: its process, each stdout line as it comes (onLine), and how it ended. */
export interface StartedRank {
  child: ChildProcess;
  done: Promise<RankResult>;
}

/**
 * Starts one rank of a job on this machine (the environment torchrun sets); onLine sees each stdout
 * line as it arrives (to kill the rank mid-run, say). Killed after opts.timeoutMs (default 120 s).
 */
export function spawnRank(command: string, args: string[], rank: number, world: number, port: number, opts: RanksOptions = {}, onLine?: (line: string) => void): StartedRank {
  const child = spawn(command, args, {
    env: {
      ...process.env, RANK: String(rank), WORLD_SIZE: String(world), LOCAL_RANK: String(rank), LOCAL_WORLD_SIZE: String(world),
      MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), OMP_NUM_THREADS: '1', ...opts.env,
    },
  });
  let stdout = '', stderr = '', partial = '';
  child.stdout!.on('data', (d) => {
    stdout += d;
    if (!onLine) return;
    const lines = (partial + d).split('\n');
    partial = lines.pop()!;
    for (const l of lines) onLine(l);
  });
  child.stderr!.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
  const done = new Promise<RankResult>((resolve) => {
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const json = stdout.split('\n').flatMap((l) => {
        try {
          return l.trim().startsWith('{') ? [JSON.parse(l)] : [];
        } catch {
          return [];
        }
      });
      resolve({ rank, code, signal, stdout, stderr, json });
    });
  });
  return { child, done };
}

/** Trains workers/ddp_train.js with cfg in one process without a process group, writing its parameters to out: the reference. */
export function trainPlain(out: string, cfg: object): string {
  const r = spawnSync(process.execPath, [path.join(WORKERS, 'ddp_train.js'), JSON.stringify({ ...cfg, plain: true, out })], {
    encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' }, timeout: 120_000,
  });
  if (r.status !== 0) throw new Error(`the one-process reference run failed (${r.signal ?? `exit ${r.status}`}): ${r.stderr}`);
  return out;
}

/** The largest absolute difference between the same-named tensors of two safetensors files. */
export function maxAbsDiff(a: string, b: string): number {
  const x = kiln.io.loadSafetensors(a).tensors, y = kiln.io.loadSafetensors(b).tensors;
  let m = 0;
  for (const [k, v] of x) m = Math.max(m, kiln.tidy(() => v.sub(y.get(k)!).abs().max().item()));
  return m;
}
