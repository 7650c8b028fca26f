// bf16 autocast on the CPU: which ops compute in which dtype, gradients reaching float32 masters, and
// a small GPT trained under autocast tracking the float32 run's loss over 200 steps.
import t from 'tap';
import * as kiln from '../lib/index';
import { autocast, isAutocastEnabled } from '../lib/autocast';

const f32 = (shape: number[]) => kiln.randn(shape).requiresGrad_();

t.test('op lists: products in bf16, softmax, norms, losses and reductions in float32', async (t) => {
  kiln.manualSeed(1);
  const a = f32([4, 8]), b = f32([8, 3]), w = f32([5, 8]);
  autocast({ dtype: 'bfloat16' }, () => {
    t.ok(isAutocastEnabled());
    t.equal(kiln.matmul(a, b).dtype, 'bfloat16', 'matmul');
    const y = kiln.linear(a, w);
    t.equal(y.dtype, 'bfloat16', 'linear');
    t.equal(kiln.softmax(y, -1).dtype, 'float32', 'softmax of a bf16 input');
    t.equal(kiln.logSoftmax(y, -1).dtype, 'float32', 'logSoftmax');
    t.equal(kiln.layerNorm(y, [5]).dtype, 'float32', 'layerNorm');
    t.equal(kiln.sum(y).dtype, 'float32', 'sum');
    t.equal(kiln.crossEntropy(y, kiln.tensor([0, 1, 2, 3])).dtype, 'float32', 'crossEntropy');
    t.equal(kiln.add(y, a.narrow(1, 0, 5)).dtype, 'float32', 'add promotes bf16 + float32 to float32');
    t.equal(kiln.relu(y).dtype, 'bfloat16', 'relu follows its input');
  });
  t.notOk(isAutocastEnabled(), 'off after the scope');
  t.equal(kiln.matmul(a, b).dtype, 'float32', 'matmul outside the scope');
  t.equal(autocast({ dtype: 'bfloat16', enabled: false }, () => kiln.matmul(a, b).dtype), 'float32', 'enabled: false');
  t.equal(autocast({ dtype: 'bfloat16', deviceType: 'cuda' }, () => kiln.matmul(a, b).dtype), 'float32', 'another device type');
  t.throws(() => autocast({ dtype: 'int8' as 'bfloat16' }, () => 0), /autocast.*dtype/);
  t.throws(() => autocast({}, () => Promise.resolve(1)), /synchronous/);
});

t.test('gradients reach float32 leaves in float32 and match the float32 gradients to bf16 precision', async (t) => {
  kiln.manualSeed(2);
  const x = f32([6, 16]), w = f32([12, 16]), bias = f32([12]);
  const run = (on: boolean) => {
    x.grad = null;
    w.grad = null;
    bias.grad = null;
    const loss = autocast({ dtype: 'bfloat16', enabled: on }, () => kiln.linear(x, w, bias).relu().sum());
    t.equal(loss.dtype, 'float32');
    loss.backward();
    return [x, w, bias].map((p) => {
      t.equal(p.grad!.dtype, 'float32', 'the gradient is float32');
      return Array.from(p.grad!.toArray() as number[]).flat(2) as number[];
    });
  };
  const mixed = run(true), full = run(false);
  for (let k = 0; k < 3; k++) {
    const scale = Math.max(...full[k].map(Math.abs));
    const err = Math.max(...full[k].map((v, i) => Math.abs(v - mixed[k][i])));
    t.ok(err <= 0.05 * scale, `parameter ${k}: max error ${err.toExponential(2)} against scale ${scale.toFixed(2)}`);
  }
});

// Next token = (3 * token + 1) mod V with some positions reset at random: learnable, not trivial.
function batch(step: number, B: number, T: number, V: number): [kiln.Tensor, kiln.Tensor] {
  const ids: number[][] = [], tg: number[][] = [];
  let s = step * 7919 + 1;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let b = 0; b < B; b++) {
    const row = [Math.floor(rnd() * V)];
    for (let i = 1; i <= T; i++) row.push(rnd() < 0.1 ? Math.floor(rnd() * V) : (3 * row[i - 1] + 1) % V);
    ids.push(row.slice(0, T));
    tg.push(row.slice(1));
  }
  return [kiln.tensor(ids), kiln.tensor(tg)];
}

function trainGPT(mixed: boolean, steps: number): number[] {
  kiln.manualSeed(0);
  const model = new kiln.nn.GPT({ vocabSize: 16, blockSize: 16, nLayer: 2, nHead: 2, nEmbd: 32 });
  const opt = new kiln.optim.AdamW(model.parameters(), { lr: 3e-3, weightDecay: 0 });
  const losses: number[] = [];
  for (let step = 0; step < steps; step++) {
    kiln.tidy(() => {
      const [x, y] = batch(step, 4, 16, 16);
      const loss = autocast({ dtype: 'bfloat16', enabled: mixed }, () => model.forward(x, y).loss!);
      loss.backward();
      opt.step();
      opt.zeroGrad();
      losses.push(loss.item());
    });
  }
  for (const p of model.parameters()) t.equal(p.dtype, 'float32', 'master weights stay float32');
  return losses;
}

t.test('a GPT trained under bf16 autocast tracks the float32 run within 2% over 200 steps', async (t) => {
  const steps = 200;
  const full = trainGPT(false, steps);
  const mixed = trainGPT(true, steps);
  // Losses compared over windows of 10 steps (single steps carry batch noise both runs share).
  let worst = 0;
  for (let i = 0; i < steps; i += 10) {
    const mean = (xs: number[]) => xs.slice(i, i + 10).reduce((a, b) => a + b, 0) / 10;
    worst = Math.max(worst, Math.abs(mean(mixed) - mean(full)) / mean(full));
  }
  t.ok(full[steps - 1] < 0.6 * full[0], `the float32 run learns (${full[0].toFixed(3)} -> ${full[steps - 1].toFixed(3)})`);
  t.ok(worst < 0.02, `worst windowed relative difference ${(100 * worst).toFixed(2)}%`);
});

t.test("autocast casts floating inputs only: an integer operand still meets the op's own dtype check", async (t) => {
  const a = kiln.randn([2, 3]), i = kiln.tensor([[1, 2], [3, 4], [5, 6]], { dtype: 'int32' });
  t.throws(() => kiln.matmul(a, i), kiln.DTypeError, 'without autocast');
  t.throws(() => autocast({ dtype: 'bfloat16' }, () => kiln.matmul(a, i)), kiln.DTypeError, 'under autocast');
});

t.test('autocast leaves float64 alone, as torch.autocast does', async (t) => {
  const a = kiln.randn([3, 3], { dtype: 'float64' });
  autocast({ dtype: 'bfloat16' }, () => {
    t.equal(kiln.matmul(a, a).dtype, 'float64', 'matmul');
    t.equal(kiln.softmax(a, -1).dtype, 'float64', 'softmax');
    t.equal(kiln.sum(a).dtype, 'float64', 'sum');
  });
});

t.test('cat and stack join mixed dtypes in their promoted dtype (as autocast produces them)', async (t) => {
  const p = kiln.randn([2, 3]).requiresGrad_(), q = kiln.randn([2, 3]).to('bfloat16').detach().requiresGrad_();
  const c = kiln.cat([p, q], 0);
  t.equal(c.dtype, 'float32');
  t.same(c.shape, [4, 3]);
  t.equal(kiln.stack([q, p]).dtype, 'float32');
  c.sum().backward();
  t.equal(p.grad!.dtype, 'float32');
  t.equal(q.grad!.dtype, 'bfloat16', 'each input gets its gradient in its own dtype');
});
