// `kiln launch --nproc-per-node 2 kiln train`: data-parallel training from the command line, rank 0
// printing and writing --out; the checkpoint then resumes in one process.
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
  const r = spawnSync(process.execPath, [main, 'launch', '--nproc-per-node', '2', '--no-gpu-binding', '--master-port', String(await freePort()), 'kiln', 'train', '--steps', '20', ...common], { encoding: 'utf8', env, timeout: 120_000 });
  t.equal(r.status, 0, r.stdout + r.stderr);
  t.match(r.stdout, /\[rank 0\] training: 20 steps .* data parallel on 2 processes \(gloo\)/);
  t.notMatch(r.stdout, /\[rank 1\]/, 'only rank 0 prints');
  t.match(r.stdout, /\[rank 0\] +training throughput .* per process, .* on all 2/);
  t.same(fs.readdirSync(out).filter((f) => !f.endsWith('.tok') && f !== 'corpus.txt').sort(), ['checkpoint.safetensors', 'loss.svg', 'metrics.jsonl']);
  const r2 = spawnSync(process.execPath, [main, 'train', '--steps', '25', '--resume', ...common], { encoding: 'utf8', env, timeout: 120_000 });
  t.equal(r2.status, 0, r2.stdout + r2.stderr);
  t.match(r2.stdout, /resumed from step 20 .*training to step 25/);
  t.match(r2.stdout, /after 25 steps/);
});
