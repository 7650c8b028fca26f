// Parity with PyTorch's DistributedDataParallel (issue #10): an MLP trained 10 steps on 2 processes
// by `scripts/torch_dist_ref.py parity` (torch DDP over Gloo) and by kiln's DDP
// (workers/mlp_train.js) from the same safetensors weights and data, with AdamW and SGD with
// momentum, with and without gradient accumulation under no_sync / noSync, ends with the same
// parameters: float64 within 1e-10, float32 within 1e-5; each rank's loss at each step agrees too.
// float64 runs every combination; float32 (the same float64 files rounded, as the script's --dtype
// does) two that between them cover both optimizers and both ways of syncing: each torch job costs
// two Python processes importing torch, the bulk of this file's time.
// Needs /usr/bin/python3 with torch (Debian's python3-torch); skipped without it.
import t, { Test } from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import * as kiln from '../../lib';
import { RankResult, runCommandRanks, runRanks } from './helpers';

const PYTHON = '/usr/bin/python3';
const SCRIPT = path.join(__dirname, '..', '..', 'scripts', 'torch_dist_ref.py');
const WORLD = 2, STEPS = 10, BATCH = 8, LR = 0.01;
const TOLERANCE = { float64: 1e-10, float32: 1e-5 };

function skipReason(): string | false {
  if (!kiln.dist.isBackendAvailable('gloo')) return 'kiln was built without Gloo';
  const probe = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8', timeout: 60_000 });
  if (probe.status !== 0) return `${PYTHON} cannot import torch (install python3-torch for the PyTorch reference)`;
  return false;
}

function expectClean(t: Test, what: string, ranks: RankResult[]): void {
  for (const r of ranks) t.equal(r.code, 0, `${what}: rank ${r.rank} exits 0${r.code === 0 ? '' : `\n${r.stderr}`}`);
}

function load(file: string): Map<string, kiln.Tensor> {
  return kiln.io.loadSafetensors(file).tensors;
}

// Over b's tensors rounded to a's dtype (the float64 initial weights against a float32 run).
function maxAbsDiff(a: Map<string, kiln.Tensor>, b: Map<string, kiln.Tensor>): number {
  let m = 0;
  for (const [k, v] of a) m = Math.max(m, kiln.tidy(() => v.sub(b.get(k)!.to(v.dtype)).abs().max().item()));
  return m;
}

const skip = skipReason();

t.test('kiln DDP ends where torch DDP does (2 processes, 10 steps)', { skip }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-torch-parity-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = (name: string) => path.join(dir, `${name}.safetensors`);

  const weights = file('weights'), data = file('data');
  const made = spawnSync(PYTHON, [SCRIPT, 'make-parity-inputs', '--layers', '8,32,32,4', '--steps', String(STEPS), '--batch', String(BATCH),
    '--seed', '0', '--dtype', 'float64', '--weights', weights, '--data', data], { encoding: 'utf8', timeout: 60_000 });
  if (made.status !== 0) throw new Error(`make-parity-inputs failed: ${made.stderr}`);
  const config = (dtype: 'float64' | 'float32', optimizer: 'adamw' | 'sgd', accumulate: number) => ({ name: `${dtype} ${optimizer} accumulate ${accumulate}`, dtype, optimizer, accumulate });
  const configs = [
    config('float64', 'adamw', 1), config('float64', 'adamw', 2), config('float64', 'sgd', 1), config('float64', 'sgd', 2),
    config('float32', 'adamw', 1), config('float32', 'sgd', 2),
  ];

  // torch: one 2-process job per configuration.
  const torchLosses = new Map<string, number[][]>();
  for (const c of configs) {
    const ranks = await runCommandRanks(PYTHON, [SCRIPT, 'parity', '--weights', weights, '--data', data, '--dtype', c.dtype, '--steps', String(STEPS),
      '--lr', String(LR), '--optimizer', c.optimizer, '--accumulate', String(c.accumulate), '--out', file(`torch ${c.name}`), '--timeout', '60'],
    WORLD, { timeoutMs: 60_000 });
    expectClean(t, `torch ${c.name}`, ranks);
    torchLosses.set(c.name, ranks.map((r) => r.json[0]?.losses));
  }

  // kiln: every configuration in one 2-process job.
  const runs = configs.map((c) => ({ ...c, weights, data, steps: STEPS, lr: LR, out: file(`kiln ${c.name}`) }));
  const ranks = await runRanks('mlp_train.js', WORLD, [JSON.stringify({ runs })], { timeoutMs: 60_000 });
  expectClean(t, 'kiln', ranks);

  const initial = load(weights);
  t.teardown(() => initial.forEach((v) => v.dispose()));
  for (const c of configs) {
    const tol = TOLERANCE[c.dtype];
    const torchOut = load(file(`torch ${c.name}`)), kilnOut = load(file(`kiln ${c.name}`));
    t.same([...kilnOut.keys()].sort(), [...torchOut.keys()].sort(), `${c.name}: the same parameter names`);
    const d = maxAbsDiff(kilnOut, torchOut);
    t.ok(d < tol, `${c.name}: final parameters, max abs difference ${d.toExponential(2)} < ${tol}`);
    const moved = maxAbsDiff(kilnOut, initial);
    t.ok(moved > 1e3 * tol, `${c.name}: training moved the parameters (by up to ${moved.toExponential(2)})`);

    const kilnLosses = ranks.map((r) => r.json.find((j) => j.name === c.name)?.losses);
    const torchL = torchLosses.get(c.name)!;
    let lossDiff = 0;
    for (let r = 0; r < WORLD; r++) {
      t.equal(kilnLosses[r]?.length, STEPS, `${c.name}: rank ${r} reports a loss per step`);
      for (let s = 0; s < STEPS; s++) lossDiff = Math.max(lossDiff, Math.abs(kilnLosses[r][s] - torchL[r][s]) / Math.abs(torchL[r][s]));
    }
    t.ok(lossDiff < tol, `${c.name}: per-rank losses, max relative difference ${lossDiff.toExponential(2)} < ${tol}`);
    t.notSame(kilnLosses[0], kilnLosses[1], `${c.name}: the ranks trained on different rows`);
    for (const m of [torchOut, kilnOut]) for (const v of m.values()) v.dispose();
  }
});
