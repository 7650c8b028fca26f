// The kiln side of bench/sdpa (run.sh runs it, then bench/sdpa/torch_sdpa.py on what it writes):
// kiln.flashAttention in bfloat16 on a GPU, for the cases below, from seeded inputs rounded to
// bfloat16. Writes <work>/sdpa.safetensors (each case's inputs, output gradient, and kiln's output and
// input gradients, as float32) and <work>/kiln.json (the cases, and the median milliseconds of
// forward + backward per case on inputs already on the device, over --reps calls after one warm-up).
//   node bench/sdpa/kiln.mjs --work DIR [--device cuda] [--reps 20] [--small]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import * as kiln from '../../dist/index.mjs';

const { values } = parseArgs({ options: { work: { type: 'string' }, device: { type: 'string' }, reps: { type: 'string' }, small: { type: 'boolean' } } });
if (!values.work) throw new Error('--work is required');
const device = values.device ?? 'cuda';
const cuda = device.startsWith('cuda');
const sync = () => cuda && kiln.cuda.synchronize();
const reps = Number(values.reps ?? 20);
if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps must be a positive integer, got ${values.reps}`);

// [name, B, H, L, S, D, causal]: GPT-2 124M's attention at context 1024, head dim 128, ragged
// lengths, and an end-aligned causal block (L < S: queries continuing a KV cache).
// --small: the same kinds of case, tiny, to check the scripts on the CPU (float32 there: the CPU
// kernel takes no bfloat16).
const CASES = values.small
  ? [['gpt2', 2, 2, 64, 64, 64, true], ['ragged', 1, 2, 17, 17, 64, false], ['end_aligned', 1, 2, 5, 21, 128, true]]
  : [
    ['gpt2', 16, 12, 1024, 1024, 64, true],
    ['d128', 4, 8, 1024, 1024, 128, true],
    ['ragged', 2, 4, 257, 257, 64, false],
    ['end_aligned', 2, 4, 100, 300, 128, true],
  ];
const dtype = cuda ? 'bfloat16' : 'float32';

const saved = {};
const cases = [];
CASES.forEach(([name, B, H, L, S, D, causal], i) => {
  kiln.manualSeed(100 + i);
  const bf = (shape) => kiln.randn(shape).to('bfloat16').to('float32');
  const q = bf([B, H, L, D]), k = bf([B, H, S, D]), v = bf([B, H, S, D]), g = bf([B, H, L, D]);
  const [q0, k0, v0, g0] = [q, k, v, g].map((x) => x.to({ dtype, device }));
  // Fresh leaves over the device inputs each call (no copies inside the timed region).
  const run = () => {
    const [qd, kd, vd] = [q0, k0, v0].map((x) => {
      const y = x.detach();
      y.requiresGrad = true;
      return y;
    });
    const out = kiln.flashAttention(qd, kd, vd, { causal });
    out.backward(g0);
    return [out, qd.grad, kd.grad, vd.grad];
  };
  const [out, dq, dk, dv] = run();
  Object.assign(saved, Object.fromEntries([['q', q], ['k', k], ['v', v], ['g', g], ['out', out], ['dq', dq], ['dk', dk], ['dv', dv]]
    .map(([n, x]) => [`${name}.${n}`, x.to({ dtype: 'float32', device: 'cpu' })])));
  const times = [];
  for (let r = 0; r < reps; r++) {
    sync();
    const t0 = performance.now();
    kiln.tidy(() => void run());
    sync();
    times.push(performance.now() - t0);
  }
  times.sort((x, y) => x - y);
  cases.push({ name, B, H, L, S, D, causal, ms_fwd_bwd: times[times.length >> 1] });
  console.log(`kiln ${name}: ${times[times.length >> 1].toFixed(3)} ms forward + backward`);
});
fs.mkdirSync(values.work, { recursive: true });
kiln.io.saveSafetensors(path.join(values.work, 'sdpa.safetensors'), saved);
fs.writeFileSync(path.join(values.work, 'kiln.json'), JSON.stringify({ device, dtype, reps, cases }, null, 2) + '\n');
