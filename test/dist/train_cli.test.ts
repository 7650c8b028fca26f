// `kiln launch --nproc-per-node 2 kiln train --zero`: data-parallel training from the command line
// with the AdamW state sharded, rank 0 printing and writing --out; the checkpoint then resumes in one
// process with a plain AdamW.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import * as kiln from '../../lib';
import { freePort } from './helpers';

const main = path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js');

t.test('kiln launch ... kiln train, then resume on one process', { skip: !kiln.dist.isBackendAvailable('gloo') && 'built without Gloo' }, async (t) => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-ddp-train-'));
  t.teardown(() => fs.rmSync(out, { recursive: true, force: true }));
  const env = { ...process.env, OMP_NUM_THREADS: '1' };
  delete env.CUDA_VISIBLE_DEVICES;
  const common = ['--n-layer', '1', '--n-embd', '16', '--n-head', '2', '--batch-size', '4', '--sample-tokens', '0', '--progress', 'log', '--eval-batches', '2', '--out', out];
  const r = spawnSync(process.execPath, [main, 'launch', '--nproc-per-node', '2', '--no-gpu-binding', '--master-port', String(await freePort()), 'kiln', 'train', '--steps', '20', '--zero', ...common], { encoding: 'utf8', env, timeout: 120_000 });
  t.equal(r.status, 0, r.stdout + r.stderr);
  t.match(r.stdout, /\[rank 0\] training: 20 steps .* data parallel on 2 processes \(gloo\)/);
  t.notMatch(r.stdout, /\[rank 1\]/, 'only rank 0 prints');
  t.match(r.stdout, /\[rank 0\] +training throughput .* per process, .* on all 2/);
  t.match(r.stdout, /\[rank 0\] +optimizer state \(ZeRO-1\): \S+B, \S+B on ranks 0-1; \S+B unsharded/);
  t.same(fs.readdirSync(out).filter((f) => !f.endsWith('.tok') && f !== 'corpus.txt').sort(), ['checkpoint.safetensors', 'loss.svg', 'metrics.jsonl']);
  const r2 = spawnSync(process.execPath, [main, 'train', '--steps', '25', '--resume', ...common], { encoding: 'utf8', env, timeout: 120_000 });
  t.equal(r2.status, 0, r2.stdout + r2.stderr);
  t.match(r2.stdout, /resumed from step 20 .*training to step 25/);
  t.match(r2.stdout, /after 25 steps/);
  const r3 = spawnSync(process.execPath, [main, 'train', '--zero', '--out', out], { encoding: 'utf8', env });
  t.equal(r3.status, 2, 'a usage error');
  t.match(r3.stderr, /--zero shards the optimizer across processes: run under kiln launch/);
});
