// Data-parallel training on the CPU (issue #10), kiln against torch.distributed over Gloo, each as 2
// processes on this machine (RANK/WORLD_SIZE/MASTER_ADDR=127.0.0.1/MASTER_PORT, one thread each,
// OMP_NUM_THREADS=1):
//   1. All-reduce (sum) of float32 tensors from 4 KiB to 64 MiB: bench/dist_worker.mjs
//      allreduce-bench against scripts/torch_dist_ref.py allreduce-bench (each call timed on its own
//      after a barrier; the median of --iters calls after --warmup, the slower rank's). Seconds per
//      op, algbw (bytes / seconds / 1e9) and kiln/torch (the algbw ratio, torch's seconds over kiln's).
//      Target: kiln/torch >= 0.9 from 1 MiB up.
//   2. DDP step time: an MLP of --depth Linear layers of --width (--in-dim -> ... -> --out-dim, tanh
//      between), float32, --batch rows per process, SGD, gradient buckets of --bucket-cap-mb:
//      bench/dist_worker.mjs ddp-bench against torch_dist_ref.py ddp-bench (see that script's header
//      for the definitions): step_ddp_s (2 processes under DDP), step_local_s (the same step without
//      DDP in both processes at once: the compute alone under the same contention for cores),
//      comm_alone_s (an all-reduce of all gradients as one buffer), scaling_efficiency = local / ddp,
//      overlap_fraction = clamp((local + comm - ddp) / comm, 0, 1). Target: kiln's efficiency >= torch's.
// Each of --rounds rounds runs every job once for kiln and once for torch (fresh processes; which
// goes first alternates between rounds), so that load from other processes hits both alike. Figures
// are medians over the rounds; kiln/torch is the median of the per-round ratios, with their range.
// Without torch (/usr/bin/python3, or $PYTHON, cannot import it; or --no-torch) the torch columns are
// left out with a note. Prints the tables last and writes bench/results/dist.json.
//   node bench/dist.mjs [--rounds 4] [--sizes 4096,16384,...,67108864] [--iters 20] [--warmup 3]
//                       [--width 1024] [--depth 6] [--batch 32] [--in-dim 1024] [--out-dim 1024]
//                       [--steps 20] [--ddp-warmup 3] [--bucket-cap-mb 4] [--timeout 180] [--no-torch]
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as kiln from '../dist/index.mjs';
import { median, spawnJob } from './jobs.mjs';

const spec = {
  rounds: 4, iters: 20, warmup: 3, width: 1024, depth: 6, batch: 32, 'in-dim': 1024, 'out-dim': 1024,
  steps: 20, 'ddp-warmup': 3, 'bucket-cap-mb': 4, timeout: 180,
};
const { values } = parseArgs({
  options: {
    ...Object.fromEntries(Object.keys(spec).map((k) => [k, { type: 'string' }])),
    sizes: { type: 'string' }, 'no-torch': { type: 'boolean' },
  },
});
const a = Object.fromEntries(Object.entries(spec).map(([k, d]) => [k, values[k] === undefined ? d : Number(values[k])]));
for (const [k, v] of Object.entries(a)) {
  if (!(v >= (k.endsWith('warmup') ? 0 : 1)) || (k !== 'bucket-cap-mb' && !Number.isInteger(v))) throw new Error(`bench/dist: --${k} must be a positive ${k === 'bucket-cap-mb' ? 'number' : 'integer'}, got ${values[k]}`);
}
const sizes = (values.sizes ?? [12, 14, 16, 18, 20, 22, 24, 26].map((p) => 2 ** p).join(',')).split(',').map(Number);
for (const b of sizes) if (!(Number.isInteger(b) && b >= 4 && b % 4 === 0)) throw new Error(`bench/dist: --sizes must be byte counts, multiples of 4; got ${b}`);
const WORLD = 2;

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..');
const python = process.env.PYTHON || '/usr/bin/python3';
let torchSkipped = null;
if (values['no-torch']) torchSkipped = '--no-torch';
else if (spawnSync(python, ['-c', 'import torch'], { stdio: 'ignore' }).status !== 0) torchSkipped = `${python} cannot import torch`;
const torchVersion = torchSkipped ? undefined : spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' }).stdout.trim();

/**
 * Runs `command args` as the WORLD ranks of one job; resolves with rank 0's JSON lines once all have
 * exited, or rejects (with their stderr) when one fails or outlives --timeout seconds.
 */
async function runJob(name, command, args) {
  const done = await spawnJob(command, args, WORLD, { timeoutSec: a.timeout, cwd: root });
  const bad = done.filter((r) => r.code !== 0);
  if (bad.length) {
    const why = bad.map((r) => `rank ${r.rank} ${r.signal ? `killed by ${r.signal}${r.signal === 'SIGKILL' ? ` (over --timeout ${a.timeout} s)` : ''}` : `exited with ${r.code}`}:\n${r.stderr.trim()}`).join('\n');
    throw new Error(`bench/dist: ${name} failed\n${why}`);
  }
  return done[0].stdout.split('\n').filter((l) => l.trim().startsWith('{')).map((l) => JSON.parse(l));
}

const common = ['--threads', '1', '--timeout', String(a.timeout)];
const arArgs = ['allreduce-bench', '--sizes', sizes.join(','), '--iters', String(a.iters), '--warmup', String(a.warmup), ...common];
const ddpArgs = [
  'ddp-bench', '--width', String(a.width), '--depth', String(a.depth), '--batch', String(a.batch), '--in-dim', String(a['in-dim']),
  '--out-dim', String(a['out-dim']), '--steps', String(a.steps), '--warmup', String(a['ddp-warmup']), '--bucket-cap-mb', String(a['bucket-cap-mb']), ...common,
];
const sides = {
  kiln: (args) => [process.execPath, [path.join(here, 'dist_worker.mjs'), ...args]],
  torch: (args) => [python, [path.join(root, 'scripts', 'torch_dist_ref.py'), ...args]],
};
const contenders = torchSkipped ? ['kiln'] : ['kiln', 'torch'];

// ---- the rounds ----
const loadavg = os.loadavg();
const t0 = performance.now();
const rounds = [];
for (let r = 0; r < a.rounds; r++) {
  const order = r % 2 ? [...contenders].reverse() : contenders;
  const round = { order, allreduce: {}, ddp: {} };
  for (const [job, args] of [['allreduce', arArgs], ['ddp', ddpArgs]]) {
    for (const side of order) {
      const out = await runJob(`${side} ${args[0]} (round ${r + 1})`, ...sides[side](args));
      round[job][side] = job === 'ddp' ? out[0] : out;
    }
  }
  rounds.push(round);
  console.log(`round ${r + 1}/${a.rounds} done (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
}

// ---- figures ----
const range = (xs) => [Math.min(...xs), Math.max(...xs)];
const allreduce = sizes.map((bytes) => {
  const per = (side) => rounds.map((rd) => rd.allreduce[side].find((x) => x.bytes === bytes).seconds_per_op);
  const k = per('kiln');
  const row = { bytes, kiln_s: median(k), kiln_s_rounds: k, kiln_algbw_GBps: bytes / median(k) / 1e9 };
  if (!torchSkipped) {
    const t = per('torch');
    const ratios = t.map((v, i) => v / k[i]);
    Object.assign(row, { torch_s: median(t), torch_s_rounds: t, torch_algbw_GBps: bytes / median(t) / 1e9, kiln_over_torch: median(ratios), kiln_over_torch_range: range(ratios) });
  }
  return row;
});
const DDP_FIELDS = ['step_ddp_s', 'step_local_s', 'comm_alone_s', 'scaling_efficiency', 'overlap_fraction'];
const ddp = {};
for (const side of contenders) {
  ddp[side] = Object.fromEntries(DDP_FIELDS.map((f) => [f, median(rounds.map((rd) => rd.ddp[side][f]))]));
  ddp[side].rounds = rounds.map((rd) => rd.ddp[side]);
}
if (!torchSkipped) {
  const ratios = rounds.map((rd) => rd.ddp.kiln.scaling_efficiency / rd.ddp.torch.scaling_efficiency);
  ddp.efficiency_kiln_over_torch = median(ratios);
  ddp.efficiency_kiln_over_torch_range = range(ratios);
}

const info = kiln.buildInfo();
const widths = [a['in-dim'], ...Array(a.depth - 1).fill(a.width), a['out-dim']];
const mlpParams = widths.slice(1).reduce((n, w, i) => n + widths[i] * w + w, 0);
const result = {
  config: {
    world: WORLD, threads_per_process: 1, dtype: 'float32', backend: 'gloo', master_addr: '127.0.0.1',
    allreduce: { sizes_bytes: sizes, iters: a.iters, warmup: a.warmup, op: 'sum' },
    ddp: { width: a.width, depth: a.depth, batch_per_process: a.batch, in_dim: a['in-dim'], out_dim: a['out-dim'], parameters: mlpParams, steps: a.steps, warmup: a['ddp-warmup'], bucket_cap_mb: a['bucket-cap-mb'], optimizer: 'SGD lr 1e-3', zero_grad: 'in place' },
  },
  method: {
    rounds: a.rounds, alternation: 'each round runs every job for kiln and for torch in fresh processes; the order alternates between rounds',
    figures: 'medians over the rounds; kiln_over_torch: median of the per-round ratios (all-reduce: torch seconds / kiln seconds; DDP: kiln efficiency / torch efficiency)',
    allreduce: 'each call timed alone after a barrier; median of iters calls; the slower rank',
    ddp: 'scripts/torch_dist_ref.py ddp-bench definitions (its header); the slower rank\'s mean step',
  },
  machine: { cpu: os.cpus()[0]?.model, cpus: os.cpus().length, node: process.version, blas: info.blas, torch: torchVersion, loadavg_at_start: loadavg, loadavg_at_end: os.loadavg() },
  date: new Date().toISOString(),
  seconds: (performance.now() - t0) / 1000,
  torch_skipped: torchSkipped ?? undefined,
  allreduce,
  ddp,
  rounds,
};

// ---- report ----
const fmt = (v, d = 2) => (v === undefined ? '-' : v.toFixed(d));
const size = (b) => (b >= 2 ** 20 ? `${b / 2 ** 20} MiB` : `${b / 2 ** 10} KiB`);
const ms = (s) => fmt(s * 1e3, s < 1e-2 ? 3 : 2);
console.log(
  `\nkiln.dist vs torch.distributed (Gloo), ${WORLD} processes on this machine, 1 thread each; ${result.machine.cpu}, ${result.machine.cpus} cores` +
    (torchSkipped ? `; no PyTorch columns (${torchSkipped})` : `; torch ${torchVersion}`) +
    `; load average ${loadavg.map((l) => l.toFixed(1)).join(' ')} at start, ${result.machine.loadavg_at_end.map((l) => l.toFixed(1)).join(' ')} at end`,
);
console.log(`\nall-reduce (sum, float32): median over ${a.rounds} rounds of each round's median of ${a.iters} calls; kiln/torch: algbw ratio (median of rounds, [range]); target >= 0.9 from 1 MiB`);
console.log('    size   kiln ms  kiln GB/s  torch ms  torch GB/s  kiln/torch  [range]');
for (const r of allreduce) {
  console.log(
    `${size(r.bytes).padStart(8)}  ${ms(r.kiln_s).padStart(8)}  ${fmt(r.kiln_algbw_GBps, 3).padStart(9)}  ${(r.torch_s === undefined ? '-' : ms(r.torch_s)).padStart(8)}  ` +
      `${fmt(r.torch_algbw_GBps, 3).padStart(10)}  ${fmt(r.kiln_over_torch).padStart(10)}  ${r.kiln_over_torch_range ? `[${fmt(r.kiln_over_torch_range[0])}, ${fmt(r.kiln_over_torch_range[1])}]` : ''}`,
  );
}
console.log(
  `\nDDP step: MLP ${a['in-dim']} -> ${a.width} x ${a.depth - 1} -> ${a['out-dim']} (${(mlpParams / 1e6).toFixed(2)}M parameters), batch ${a.batch} per process, SGD, ` +
    `buckets of ${a['bucket-cap-mb']} MiB; mean of ${a.steps} steps, median over ${a.rounds} rounds; target: kiln efficiency >= torch's`,
);
console.log('         step DDP ms  step local ms  comm alone ms  efficiency  overlap');
for (const side of contenders) {
  const d = ddp[side];
  console.log(`${side.padEnd(7)}  ${ms(d.step_ddp_s).padStart(11)}  ${ms(d.step_local_s).padStart(13)}  ${ms(d.comm_alone_s).padStart(13)}  ${fmt(d.scaling_efficiency).padStart(10)}  ${fmt(d.overlap_fraction).padStart(7)}`);
}
if (!torchSkipped) {
  console.log(`efficiency kiln/torch: ${fmt(ddp.efficiency_kiln_over_torch)} [${fmt(ddp.efficiency_kiln_over_torch_range[0])}, ${fmt(ddp.efficiency_kiln_over_torch_range[1])}]`);
}
const out = path.join(here, 'results', 'dist.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${path.relative(process.cwd(), out)}`);
