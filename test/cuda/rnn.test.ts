// The recurrent cells and layers on CUDA against their CPU twins (skipped without a GPU): each fused
// cell forward and backward in float32 (1e-5 norm-wise relative error) and float64, bfloat16 within
// 1e-2 of float32, and RNN / LSTM / GRU layers (multi-layer, bidirectional, lengths) giving the
// CPU's outputs, states and gradients.
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import * as nn from '../../lib/nn';
import { gruCell, lstmCell, rnnCell } from '../../lib/ops/rnn';
import { cudaSkip as skip, relErr } from '../helpers/cuda';

type Cell = [string, (...xs: Tensor[]) => Tensor, number[][]];
// Odd sizes: rows and units that are not multiples of a block.
const CELLS: Cell[] = [
  ['rnn tanh', (x, g) => rnnCell(x, g), [[37, 65], [37, 65]]],
  ['rnn relu', (x, g) => rnnCell(x, g, 'relu'), [[37, 65], [37, 65]]],
  ['lstm', (x, g, c) => kiln.cat(lstmCell(x, g, c), 1), [[33, 4 * 129], [33, 4 * 129], [33, 129]]],
  ['gru', (x, g, h) => gruCell(x, g, h), [[33, 3 * 129], [33, 3 * 129], [33, 129]]],
];

t.test('fused cells on CUDA match the CPU, forward and backward', { skip }, async (t) => {
  kiln.manualSeed(0);
  for (const dtype of ['float32', 'float64'] as const) {
    for (const [name, f, shapes] of CELLS) {
      const base = shapes.map((s) => kiln.randn(s, { dtype }).mul(1.5));
      const cpu = base.map((x) => x.clone().requiresGrad_());
      const gpu = base.map((x) => x.cuda().requiresGrad_());
      const yc = f(...cpu), yg = f(...gpu);
      t.equal(yg.device, 'cuda:0');
      t.ok(relErr(yg.cpu(), yc) <= 1e-5, `${name} ${dtype} forward ${relErr(yg.cpu(), yc).toExponential(2)}`);
      const g = kiln.randn([...yc.shape], { dtype });
      yc.backward(g);
      yg.backward(g.cuda());
      cpu.forEach((x, i) => t.ok(relErr(gpu[i].grad!.cpu(), x.grad!) <= 1e-5, `${name} ${dtype} gradient ${i}`));
    }
  }
});

t.test('bfloat16 cells on CUDA agree with float32 on the CPU within 1e-2', { skip }, async (t) => {
  kiln.manualSeed(1);
  for (const [name, f, shapes] of CELLS) {
    const base = shapes.map((s) => kiln.randn(s));
    const y = f(...base.map((x) => x.cuda().to('bfloat16')));
    t.equal(y.dtype, 'bfloat16');
    const err = relErr(y.to('float32').cpu(), f(...base));
    t.ok(err <= 1e-2, `${name}: ${err.toExponential(2)}`);
  }
});

t.test('RNN, LSTM and GRU layers on CUDA match the CPU: outputs, states, gradients', { skip }, async (t) => {
  kiln.manualSeed(2);
  const layers: Array<[string, () => nn.RNNBase]> = [
    ['RNN relu 2 layers', () => new nn.RNN(5, 33, { numLayers: 2, nonlinearity: 'relu' })],
    ['LSTM bidirectional batchFirst', () => new nn.LSTM(5, 33, { bidirectional: true, batchFirst: true, numLayers: 2 })],
    ['GRU bidirectional', () => new nn.GRU(5, 33, { bidirectional: true })],
  ];
  for (const [name, make] of layers) {
    for (const lengths of [undefined, [7, 3, 9, 1]]) {
      const cpu = make(), gpu = make().cuda();
      gpu.loadStateDict(cpu.stateDict());
      const x = kiln.randn(cpu.batchFirst ? [4, 9, 5] : [9, 4, 5]);
      const run = (m: nn.RNNBase, input: Tensor): Tensor[] => {
        const out = m instanceof nn.LSTM ? m.forward(input, null, { lengths }).flat() : (m as nn.GRU).forward(input, null, { lengths });
        return out as Tensor[];
      };
      const xc = x.clone().requiresGrad_(), xg = x.cuda().requiresGrad_();
      const oc = run(cpu, xc), og = run(gpu, xg);
      const what = `${name}${lengths ? ' with lengths' : ''}`;
      oc.forEach((o, i) => t.ok(relErr(og[i].cpu(), o) <= 1e-5, `${what}: output ${i}`));
      const ks = oc.map((o) => kiln.randn([...o.shape]));
      oc.reduce((s, o, i) => s.add(o.mul(ks[i]).sum()), kiln.zeros([])).backward();
      og.reduce((s, o, i) => s.add(o.mul(ks[i].cuda()).sum()), kiln.zeros([], { device: 'cuda' })).backward();
      t.ok(relErr(xg.grad!.cpu(), xc.grad!) <= 1e-5, `${what}: input gradient`);
      const pg = new Map(gpu.namedParameters());
      for (const [n, p] of cpu.namedParameters()) t.ok(relErr(pg.get(n)!.grad!.cpu(), p.grad!) <= 1e-5, `${what}: ${n} gradient`);
    }
  }
});
