// Starts the ranks of one job on this machine for the distributed benchmarks (bench/dist.mjs,
// bench/tp.mjs): the environment torchrun sets (MASTER_ADDR 127.0.0.1 and a free port), one thread
// per process (OMP_NUM_THREADS=1).
import { spawn } from 'node:child_process';
import * as net from 'node:net';

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
 * Runs `command args` as `world` ranks (from cwd); resolves with rank 0's JSON lines once all have
 * exited, or rejects (with their stderr) when one fails or outlives timeoutS seconds. `bench` and
 * `name` label the error.
 */
export async function runRanks({ bench, name, command, args, world, timeoutS, cwd }) {
  const port = await freePort();
  const ranks = Array.from({ length: world }, (_, rank) => new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd,
      env: { ...process.env, RANK: String(rank), WORLD_SIZE: String(world), LOCAL_RANK: String(rank), LOCAL_WORLD_SIZE: String(world), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), OMP_NUM_THREADS: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutS * 1000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ rank, code, signal, stdout, stderr });
    });
  }));
  const done = await Promise.all(ranks);
  const bad = done.filter((r) => r.code !== 0);
  if (bad.length) {
    const why = bad.map((r) => `rank ${r.rank} ${r.signal ? `killed by ${r.signal}${r.signal === 'SIGKILL' ? ` (over --timeout ${timeoutS} s)` : ''}` : `exited with ${r.code}`}:\n${r.stderr.trim()}`).join('\n');
    throw new Error(`${bench}: ${name} failed\n${why}`);
  }
  return done[0].stdout.split('\n').filter((l) => l.trim().startsWith('{')).map((l) => JSON.parse(l));
}
