// What the multi-process benchmarks (bench/dist.mjs, bench/pipeline.mjs) share: a free port, the
// median, and starting one job's ranks on this machine with the environment a launcher sets.
import { spawn } from 'node:child_process';
import * as net from 'node:net';

/** The median of xs. */
export function median(xs) {
  const s = [...xs].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A port nothing listens on now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Runs `command args` as the `world` ranks of one job (RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free
 * MASTER_PORT, one thread each); resolves with each rank's { rank, code, signal, stdout, stderr } once
 * all have exited, killing those still running after timeoutSec.
 */
export async function spawnJob(command, args, world, { timeoutSec, cwd } = {}) {
  const port = await freePort();
  return Promise.all(Array.from({ length: world }, (_, rank) => new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd,
      env: { ...process.env, RANK: String(rank), WORLD_SIZE: String(world), LOCAL_RANK: String(rank), LOCAL_WORLD_SIZE: String(world), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), OMP_NUM_THREADS: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutSec * 1000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ rank, code, signal, stdout, stderr });
    });
  })));
}
