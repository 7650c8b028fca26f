// nn.RNN, nn.LSTM and nn.GRU against PyTorch: the committed fixtures (test/fixtures/rnn, written by
// make_fixtures.py) load into kiln modules by torch's parameter names and must give torch's outputs,
// final states, loss and gradients (input, initial states, every weight) in float64 and, within
// float32's precision, in float32. Where Python with torch is installed, the generator also runs live
// with another seed. Then what the fixtures do not cover: parameter names and initialization, lengths
// as a tensor, dropout between layers, the module API, and errors.
import t, { Test } from 'tap';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import * as nn from '../../lib/nn';
import { maxAbsDiff, randomTensor, values } from '../helpers/gradcheck';

interface TensorJSON {
  shape: number[];
  data: number[];
}
interface Fixture {
  name: string;
  module: 'RNN' | 'LSTM' | 'GRU';
  options: nn.RNNOptions & { inputSize: number; hiddenSize: number };
  weights: Record<string, TensorJSON>;
  input: TensorJSON;
  h0: TensorJSON | null;
  c0: TensorJSON | null;
  lengths: number[] | null;
  lossWeights: { output: TensorJSON; h_n: TensorJSON; c_n: TensorJSON | null };
  output: TensorJSON;
  h_n: TensorJSON;
  c_n: TensorJSON | null;
  loss: number;
  grads: Record<string, TensorJSON>;
}

const FIXTURES = path.join(__dirname, '..', 'fixtures', 'rnn');

function readFixtures(dir: string): Fixture[] {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort().map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
}

function build(fx: Fixture, dtype: kiln.DType): nn.RNNBase {
  const { inputSize, hiddenSize, ...opts } = fx.options;
  const M = { RNN: nn.RNN, LSTM: nn.LSTM, GRU: nn.GRU }[fx.module];
  return new M(inputSize, hiddenSize, { ...opts, dtype });
}

/** Runs fixture fx through kiln in dtype; fails t on any difference above tol (relative to each tensor's scale). */
function checkFixture(t: Test, fx: Fixture, dtype: kiln.DType, tol: number): void {
  const load = (j: TensorJSON, requiresGrad = false) => kiln.tensor(Float64Array.from(j.data), { shape: j.shape, dtype, requiresGrad });
  const m = build(fx, dtype);
  const sd = new Map(Object.entries(fx.weights).map(([k, v]) => [k, load(v)]));
  m.loadStateDict(sd);
  const x = load(fx.input, true);
  const h0 = fx.h0 ? load(fx.h0, true) : null, c0 = fx.c0 ? load(fx.c0, true) : null;
  const opts = fx.lengths ? { lengths: fx.lengths } : {};
  let out: Tensor, hn: Tensor, cn: Tensor | null = null;
  if (m instanceof nn.LSTM) [out, [hn, cn]] = m.forward(x, h0 && c0 ? [h0, c0] : null, opts);
  else [out, hn] = (m as nn.RNN | nn.GRU).forward(x, h0, opts);
  const close = (what: string, got: Tensor, want: TensorJSON) => {
    t.same(got.shape, want.shape, `${what} shape`);
    const scale = Math.max(1, ...want.data.map(Math.abs));
    const err = maxAbsDiff(values(got), want.data) / scale;
    t.ok(err <= tol, `${what}: ${err.toExponential(2)}`);
  };
  close('output', out, fx.output);
  close('h_n', hn, fx.h_n);
  if (fx.c_n) close('c_n', cn!, fx.c_n);
  const lw = fx.lossWeights;
  let loss = out.mul(load(lw.output)).sum().add(hn.mul(load(lw.h_n)).sum());
  if (cn) loss = loss.add(cn.mul(load(lw.c_n!)).sum());
  t.ok(Math.abs(loss.item() - fx.loss) <= tol * Math.max(1, Math.abs(fx.loss)), `loss ${loss.item()} vs ${fx.loss}`);
  loss.backward();
  close('grad input', x.grad!, fx.grads.input);
  if (h0) close('grad h0', h0.grad!, fx.grads.h0);
  if (c0) close('grad c0', c0.grad!, fx.grads.c0);
  const params = new Map(m.namedParameters());
  for (const name of Object.keys(fx.weights)) close(`grad ${name}`, params.get(name)!.grad!, fx.grads[name]);
  m.dispose();
}

t.test('PyTorch parity: outputs, states, loss and gradients (committed fixtures)', async (t) => {
  const fixtures = readFixtures(FIXTURES);
  t.equal(fixtures.length, 9, 'every config has a fixture');
  for (const fx of fixtures) {
    t.test(`${fx.name} float64`, async (t) => checkFixture(t, fx, 'float64', 1e-10));
    t.test(`${fx.name} float32`, async (t) => checkFixture(t, fx, 'float32', 1e-5));
  }
});

const torchOk = (() => {
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import torch'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

t.test('PyTorch parity, generated live with another seed', { skip: torchOk ? false : 'no /usr/bin/python3 with torch' }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-rnn-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  execFileSync('/usr/bin/python3', [path.join(FIXTURES, 'make_fixtures.py'), '--out', dir, '--seed', '7'], { stdio: 'ignore' });
  for (const fx of readFixtures(dir)) t.test(fx.name, async (t) => checkFixture(t, fx, 'float64', 1e-10));
});

t.test('parameters have torch names, shapes, order and initialization', async (t) => {
  kiln.manualSeed(0);
  const lstm = new nn.LSTM(3, 5, { numLayers: 2, bidirectional: true });
  const names = lstm.namedParameters().map(([n, p]) => `${n} ${p.shape.join('x')}`);
  const layer = (l: number, s: string, inF: number) => [
    `weight_ih_l${l}${s} 20x${inF}`, `weight_hh_l${l}${s} 20x5`, `bias_ih_l${l}${s} 20`, `bias_hh_l${l}${s} 20`,
  ];
  t.same(names, [...layer(0, '', 3), ...layer(0, '_reverse', 3), ...layer(1, '', 10), ...layer(1, '_reverse', 10)]);
  t.same([...lstm.stateDict().keys()], lstm.namedParameters().map(([n]) => n), 'stateDict uses the same names');
  t.equal(lstm.allWeights.length, 4);
  t.equal(lstm.allWeights[3][1], lstm.namedParameters()[13][1], 'allWeights: layer 1 reverse weight_hh');
  const bound = 1 / Math.sqrt(5);
  for (const p of lstm.parameters()) t.ok(values(p).every((v) => Math.abs(v) <= bound), 'U(-1/sqrt(H), 1/sqrt(H))');
  t.ok(values(lstm.parameters()[0]).some((v) => Math.abs(v) > bound / 2), 'spread over the range');

  t.same(new nn.GRU(2, 3, { bias: false }).namedParameters().map(([n, p]) => `${n} ${p.shape.join('x')}`), ['weight_ih_l0 9x2', 'weight_hh_l0 9x3']);
  t.same(new nn.RNN(2, 3).parameters().map((p) => p.shape), [[3, 2], [3, 3], [3], [3]]);
  t.equal(new nn.RNN(2, 3, { dtype: 'float64' }).parameters()[0].dtype, 'float64');
  t.equal(lstm.numParameters(), 4 * 20 * 5 + 2 * 20 * 3 + 2 * 20 * 10 + 4 * 2 * 20);
});

t.test('toString shows the options', async (t) => {
  t.equal(new nn.LSTM(3, 5).toString(), 'LSTM(3, 5)');
  t.equal(
    new nn.GRU(3, 5, { numLayers: 2, bias: false, batchFirst: true, dropout: 0.1, bidirectional: true }).toString(),
    'GRU(3, 5, numLayers=2, bias=false, batchFirst=true, dropout=0.1, bidirectional=true)',
  );
  t.equal(new nn.RNN(1, 2, { nonlinearity: 'relu' }).toString(), "RNN(1, 2, nonlinearity='relu')");
});

t.test('lengths: a tensor equals the array; sorted lengths need no reordering; outputs past a length are zero', async (t) => {
  kiln.manualSeed(1);
  const gru = new nn.GRU(2, 3, { dtype: 'float64', bidirectional: true, batchFirst: true });
  const x = randomTensor([3, 4, 2], 5);
  const [a, ha] = gru.forward(x, null, { lengths: [2, 4, 1] });
  const [b, hb] = gru.forward(x, null, { lengths: kiln.tensor([2, 4, 1], { dtype: 'int32' }) });
  t.same(values(a), values(b));
  t.same(values(ha), values(hb));
  t.same(values(a.select(0, 0).narrow(0, 2, 2)), new Array(12).fill(0), 'batch 0 past its length 2');
  t.same(values(a.select(0, 2).narrow(0, 1, 3)), new Array(18).fill(0), 'batch 2 past its length 1');
  // Each sequence alone, cut to its length, gives the same output and state.
  for (const [i, len] of [[0, 2], [1, 4], [2, 1]]) {
    const [o, h] = gru.forward(x.narrow(0, i, 1).narrow(1, 0, len));
    t.ok(maxAbsDiff(values(o), values(a.narrow(0, i, 1).narrow(1, 0, len))) < 1e-12, `sequence ${i} output`);
    t.ok(maxAbsDiff(values(h), values(ha.narrow(1, i, 1))) < 1e-12, `sequence ${i} h_n`);
  }
  // Already sorted (decreasing): no reordering, same results as a full batch where all lengths are full.
  const [full] = gru.forward(x);
  const [sorted] = gru.forward(x, null, { lengths: [4, 4, 4] });
  t.same(values(sorted), values(full));
});

t.test('dropout applies between layers in training mode only', async (t) => {
  kiln.manualSeed(2);
  const lstm = new nn.LSTM(3, 4, { numLayers: 2, dropout: 0.5 });
  const x = kiln.randn([5, 2, 3]);
  lstm.eval();
  const [e1] = lstm.forward(x);
  const [e2] = lstm.forward(x);
  t.same(values(e1), values(e2), 'eval: deterministic');
  lstm.train();
  const [tr] = lstm.forward(x);
  t.ok(maxAbsDiff(values(tr), values(e1)) > 1e-3, 'training: dropout changes the output');
  // One layer: no layer follows, so no dropout (as torch, which warns).
  const one = new nn.GRU(3, 4, { dropout: 0.5 });
  const [o1] = one.forward(x);
  const [o2] = one.eval().forward(x);
  t.same(values(o1), values(o2));
});

t.test('training an LSTM lowers its loss; gradients reach every parameter; memory is steady', async (t) => {
  kiln.manualSeed(3);
  const lstm = new nn.LSTM(2, 8, { batchFirst: true });
  const head = new nn.Linear(8, 1);
  const params = [...lstm.parameters(), ...head.parameters()];
  const opt = new kiln.optim.Adam(params, { lr: 0.02 });
  // Task: the sum of the first feature over the sequence.
  const x = kiln.randn([16, 6, 2]);
  const y = kiln.tidy(() => x.select(2, 0).sum(1, true));
  const losses: number[] = [];
  let tensors = 0;
  for (let step = 0; step < 60; step++) {
    const loss = kiln.tidy(() => {
      const [out] = lstm.forward(x);
      return head.forward(out.select(1, 5)).sub(y).square().mean();
    });
    loss.backward();
    if (step === 0) t.ok(params.every((p) => p.grad && values(p.grad).some((v) => v !== 0)), 'every parameter has a gradient');
    opt.step();
    opt.zeroGrad();
    losses.push(loss.item());
    loss.dispose();
    if (step === 10) tensors = kiln.memory().tensors;
  }
  t.ok(losses[59] < losses[0] * 0.3, `loss ${losses[0].toFixed(3)} -> ${losses[59].toFixed(3)}`);
  t.equal(kiln.memory().tensors, tensors, 'no tensors leak per step');
});

t.test('unbatched input and initial states', async (t) => {
  kiln.manualSeed(4);
  const rnn = new nn.RNN(3, 2, { numLayers: 2, dtype: 'float64' });
  const x = randomTensor([4, 3], 9), h0 = randomTensor([2, 2], 10);
  const [o, h] = rnn.forward(x, h0);
  t.same(o.shape, [4, 2]);
  t.same(h.shape, [2, 2]);
  const [ob, hb] = rnn.forward(x.unsqueeze(1), h0.unsqueeze(1));
  t.same(values(o), values(ob));
  t.same(values(h), values(hb));
});

t.test('bad arguments are errors naming the module and shapes', async (t) => {
  const lstm = new nn.LSTM(3, 4, { numLayers: 2 });
  t.throws(() => lstm.forward(kiln.zeros([5, 2, 4])), { name: 'ShapeError', message: /LSTM: expects input \[seq, batch, 3\].*got \[5, 2, 4\]/ });
  t.throws(() => lstm.forward(kiln.zeros([5, 2, 3]), [kiln.zeros([1, 2, 4]), kiln.zeros([2, 2, 4])]), { name: 'ShapeError', message: /h0 must have shape \[2, 2, 4\], got \[1, 2, 4\]/ });
  t.throws(() => lstm.forward(kiln.zeros([5, 2, 3]), null, { lengths: [5, 6] }), { name: 'ValueError', message: /integer in \[1, 5\].*got 6/ });
  t.throws(() => lstm.forward(kiln.zeros([5, 2, 3]), null, { lengths: [5, 0] }), { name: 'ValueError' });
  t.throws(() => lstm.forward(kiln.zeros([5, 2, 3]), null, { lengths: [5] }), { name: 'ValueError', message: /1 entries for a batch of 2/ });
  t.throws(() => lstm.forward(kiln.zeros([5, 3]), null, { lengths: [5] }), { name: 'ValueError', message: /batched/ });
  t.throws(() => lstm.forward(kiln.zeros([5, 2, 3]), null, { lengths: kiln.zeros([2]) }), { name: 'ValueError', message: /int32 or int64/ });
  t.throws(() => new nn.GRU(0, 4), { name: 'ValueError', message: /GRU: inputSize must be an integer >= 1/ });
  t.throws(() => new nn.RNN(2, 4, { dropout: 2 }), { name: 'ValueError', message: /dropout/ });
  t.throws(() => new nn.RNN(2, 4, { nonlinearity: 'gelu' as 'relu' }), { name: 'ValueError', message: /nonlinearity/ });
  t.throws(() => new nn.GRU(2, 4, { numLayers: 0 }), { name: 'ValueError' });
});
