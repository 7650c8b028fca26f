// Every op and its gradient on CUDA against the CPU backend, on random inputs including
// non-contiguous and broadcast operands and sizes that are not multiples of a block. float32
// agrees within 1e-5 (norm-wise relative error); TF32 is off.
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';

type Case = {
  name: string;
  f: (...xs: Tensor[]) => Tensor;
  inputs: () => Tensor[];
  grad?: boolean; // default: true when every input is floating point
  tol?: number;
};

function relErr(a: Tensor, b: Tensor): number {
  const x = Array.from(a.dataSync() as ArrayLike<number | bigint>, Number);
  const y = Array.from(b.dataSync() as ArrayLike<number | bigint>, Number);
  if (x.length !== y.length) return Infinity;
  let num = 0, den = 0;
  for (let i = 0; i < x.length; i++) {
    if (Number.isNaN(x[i]) !== Number.isNaN(y[i])) return Infinity;
    if (Number.isNaN(x[i])) continue;
    if (!Number.isFinite(x[i]) || !Number.isFinite(y[i])) {
      if (x[i] !== y[i]) return Infinity;
      continue;
    }
    num += (x[i] - y[i]) ** 2;
    den += y[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

const rn = (...shape: number[]) => kiln.randn(shape);
const ru = (lo: number, hi: number, ...shape: number[]) => kiln.rand(shape).mul(hi - lo).add(lo);
const ri = (hi: number, ...shape: number[]) => kiln.randint(0, hi, shape);
const tr = (x: Tensor) => x.transpose(0, 1); // non-contiguous operand

const cases: Case[] = [];
const unary: Array<[string, (x: Tensor) => Tensor, () => Tensor]> = [
  ['neg', (x) => x.neg(), () => rn(37, 129)],
  ['exp', (x) => x.exp(), () => rn(37, 129)],
  ['log', (x) => x.log(), () => ru(0.1, 3, 37, 129)],
  ['log1p', (x) => x.log1p(), () => ru(0, 3, 1001)],
  ['sqrt', (x) => x.sqrt(), () => ru(0.1, 4, 1001)],
  ['rsqrt', (x) => x.rsqrt(), () => ru(0.1, 4, 1001)],
  ['square', (x) => x.square(), () => rn(1001)],
  ['reciprocal', (x) => x.reciprocal(), () => ru(0.5, 2, 1001)],
  ['abs', (x) => x.abs(), () => rn(1001)],
  ['sin', (x) => x.sin(), () => rn(1001)],
  ['cos', (x) => x.cos(), () => rn(1001)],
  ['tanh', (x) => x.tanh(), () => rn(33, 65)],
  ['sigmoid', (x) => x.sigmoid(), () => rn(33, 65)],
  ['relu', (x) => x.relu(), () => rn(33, 65)],
  ['gelu', (x) => x.gelu(), () => rn(33, 65)],
  ['gelu tanh', (x) => x.gelu('tanh'), () => rn(33, 65)],
  ['silu', (x) => x.silu(), () => rn(33, 65)],
  ['clamp', (x) => x.clamp(-0.5, 0.7), () => rn(1001)],
  ['pow scalar', (x) => x.pow(3), () => rn(1001)],
  ['scalar pow', (x) => kiln.pow(2, x), () => rn(1001)],
  ['add scalar', (x) => x.add(2.5), () => rn(1001)],
  ['rsub scalar', (x) => kiln.sub(1, x), () => rn(1001)],
  ['mul scalar (transposed)', (x) => tr(x).mul(-3), () => rn(31, 17)],
  ['div scalar', (x) => x.div(7), () => rn(1001)],
  ['floor', (x) => x.floor(), () => rn(1001).mul(5)],
  ['sign', (x) => x.sign(), () => rn(1001)],
];
for (const [name, f, make] of unary) cases.push({ name, f, inputs: () => [make()] });

const binary: Array<[string, (a: Tensor, b: Tensor) => Tensor, () => Tensor[]]> = [
  ['add', (a, b) => a.add(b), () => [rn(37, 129), rn(37, 129)]],
  ['add alpha broadcast', (a, b) => a.add(b, 0.5), () => [rn(5, 37, 129), rn(129)]],
  ['sub broadcast both', (a, b) => a.sub(b), () => [rn(37, 1), rn(1, 129)]],
  ['mul transposed', (a, b) => tr(a).mul(b), () => [rn(129, 37), rn(37, 129)]],
  ['div', (a, b) => a.div(b), () => [rn(37, 129), ru(0.5, 2, 37, 129)]],
  ['pow', (a, b) => a.pow(b), () => [ru(0.5, 2, 999), rn(999)]],
  ['maximum', (a, b) => a.maximum(b), () => [rn(999), rn(999)]],
  ['minimum broadcast', (a, b) => a.minimum(b), () => [rn(7, 999), rn(999)]],
  ['where', (a, b) => kiln.where(a.gt(b), a, b.mul(2)), () => [rn(300, 7), rn(7)]],
  ['maskedFill', (a, b) => a.maskedFill(b.lt(0), -1e4), () => [rn(8, 300), rn(300)]],
];
for (const [name, f, make] of binary) cases.push({ name, f, inputs: make });
const compare: Array<[string, (a: Tensor, b: Tensor) => Tensor]> = [
  ['eq', (a, b) => a.eq(b)], ['ne', (a, b) => a.ne(b)], ['lt', (a, b) => a.lt(b)],
  ['le', (a, b) => a.le(b)], ['gt', (a, b) => a.gt(b)], ['ge', (a, b) => a.ge(b)],
];
for (const [name, f] of compare) {
  cases.push({ name, f, grad: false, inputs: () => { const a = rn(333).round(); return [a, rn(333).round()]; } });
}

const reductions: Array<[string, (x: Tensor) => Tensor, () => Tensor]> = [
  ['sum all', (x) => x.sum(), () => rn(1000, 301)],
  ['sum dim 0', (x) => x.sum(0), () => rn(1000, 301)],
  ['sum dims keepdim', (x) => x.sum([0, 2], true), () => rn(17, 33, 65)],
  ['sum transposed', (x) => tr(x).sum(1), () => rn(129, 37)],
  ['mean', (x) => x.mean(-1), () => rn(65, 1025)],
  ['max', (x) => x.max(1), () => rn(65, 1025)],
  ['min all', (x) => x.min(), () => rn(65, 1025)],
  ['var', (x) => x.var(1), () => rn(65, 1025)],
  ['std', (x) => x.std(0, { correction: 0 }), () => rn(65, 77)],
  ['logsumexp', (x) => x.logsumexp(1), () => rn(65, 1025).mul(10)],
  ['argmax', (x) => x.argmax(1), () => rn(65, 1025)],
  ['argmin', (x) => x.argmin(0), () => rn(65, 1025)],
];
for (const [name, f, make] of reductions) cases.push({ name, f, inputs: () => [make()] });

const nnCases: Case[] = [
  { name: 'matmul 2-D odd sizes', f: (a, b) => a.matmul(b), inputs: () => [rn(127, 65), rn(65, 93)] },
  { name: 'matmul transposed operands', f: (a, b) => tr(a).matmul(tr(b)), inputs: () => [rn(65, 127), rn(93, 65)] },
  { name: 'matmul batched broadcast', f: (a, b) => a.matmul(b), inputs: () => [rn(3, 4, 33, 17), rn(4, 17, 9)] },
  { name: 'matmul vector', f: (a, b) => a.matmul(b), inputs: () => [rn(5, 33, 17), rn(17)] },
  { name: 'linear', f: (x, w, b) => kiln.linear(x, w, b), inputs: () => [rn(4, 31, 64), rn(48, 64), rn(48)] },
  { name: 'softmax last', f: (x) => x.softmax(-1), inputs: () => [rn(64, 1000)] },
  { name: 'softmax middle', f: (x) => x.softmax(1), inputs: () => [rn(4, 33, 17)] },
  { name: 'logSoftmax', f: (x) => x.logSoftmax(-1), inputs: () => [rn(64, 50257).mul(3)] },
  {
    name: 'crossEntropy smoothing+ignore',
    f: (x, y) => kiln.crossEntropy(x, y, { ignoreIndex: 3, labelSmoothing: 0.1 }),
    inputs: () => [rn(257, 1001), ri(1001, 257)],
  },
  { name: 'crossEntropy none', f: (x, y) => kiln.crossEntropy(x, y, { reduction: 'none' }), inputs: () => [rn(64, 7, 5), ri(7, 64, 5)] },
  { name: 'layerNorm affine', f: (x, w, b) => x.layerNorm(768, w, b), inputs: () => [rn(257, 768), rn(768), rn(768)] },
  { name: 'layerNorm 2-D shape, no affine', f: (x) => x.layerNorm([7, 33]), inputs: () => [rn(5, 7, 33)] },
  { name: 'embedding repeated ids', f: (i, w) => kiln.embedding(i, w), inputs: () => [ri(50, 8, 129), rn(50, 96)] },
  { name: 'indexSelect', f: (x, i) => x.indexSelect(1, i), inputs: () => [rn(33, 70), ri(70, 45)] },
  { name: 'gather', f: (x, i) => x.gather(1, i), inputs: () => [rn(33, 70), ri(70, 33, 20)] },
  { name: 'scatterAdd', f: (x, i, s) => x.scatterAdd(1, i, s), inputs: () => [rn(33, 70), ri(70, 33, 20), rn(33, 20)] },
  { name: 'cat/permute/contiguous', f: (a, b) => kiln.cat([a.permute(2, 0, 1), b], 1).contiguous(), inputs: () => [rn(5, 6, 7), rn(7, 3, 6)] },
];
cases.push(...nnCases);

if (!kiln.cuda.isAvailable()) {
  t.plan(0, kiln.buildInfo().cuda ? 'no CUDA device visible' : 'kiln was built without CUDA');
} else {
  kiln.manualSeed(1234);
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const base = c.inputs();
      const wantGrad = c.grad ?? base.every((x) => x.dtype === 'float32');
      const cpuIn = base.map((x) => (wantGrad && x.dtype === 'float32' ? x.clone().requiresGrad_() : x));
      const gpuIn = base.map((x) => (wantGrad && x.dtype === 'float32' ? x.cuda().requiresGrad_() : x.cuda()));
      const yc = c.f(...cpuIn);
      const yg = c.f(...gpuIn);
      t.equal(yg.device, 'cuda:0');
      t.same(yg.shape, yc.shape);
      t.equal(yg.dtype, yc.dtype);
      const err = relErr(yg.cpu(), yc);
      t.ok(err <= (c.tol ?? 1e-5), `forward relative error ${err.toExponential(2)}`);
      if (wantGrad && yc.dtype === 'float32' && yc.requiresGrad) {
        const g = kiln.randn([...yc.shape]);
        yc.backward(g);
        yg.backward(g.cuda());
        cpuIn.forEach((x, i) => {
          if (!x.requiresGrad) return;
          if (x.grad === null) {
            t.equal(gpuIn[i].grad, null, `input ${i} gets no gradient on either device`);
            return;
          }
          const ge = relErr(gpuIn[i].grad!.cpu(), x.grad);
          t.ok(ge <= (c.tol ?? 1e-5), `input ${i} gradient relative error ${ge.toExponential(2)}`);
        });
      }
    });
  }

  t.test('random numbers and dropout masks match the CPU for the same seed', async (t) => {
    for (const make of [
      (dev: string) => kiln.rand([1001, 3], { device: dev }),
      (dev: string) => kiln.randn([777], { device: dev }),
      (dev: string) => kiln.randint(-5, 17, [1001], { device: dev }),
      (dev: string) => kiln.ones([64, 65], { device: dev }).dropout(0.3),
    ]) {
      kiln.manualSeed(99);
      const c = make('cpu');
      kiln.manualSeed(99);
      const g = make('cuda');
      t.ok(relErr(g.cpu(), c) <= 1e-6, `same stream on both devices (${c.dtype} ${c.shape})`);
    }
  });

  t.test('mixing devices in one op is a DeviceError', async (t) => {
    t.throws(() => kiln.ones([2], { device: 'cuda' }).add(kiln.ones([2])), kiln.DeviceError);
    t.throws(() => kiln.ones([2, 2], { device: 'cuda' }).matmul(kiln.ones([2, 2])), kiln.DeviceError);
  });
}

if (kiln.cuda.isAvailable()) {
  t.test('bfloat16 on CUDA agrees with float32 on the CPU within 1e-2', async (t) => {
    kiln.manualSeed(5);
    const a = kiln.randn([65, 96]), b = kiln.randn([96, 33]), w = kiln.randn([40, 96]), bias = kiln.randn([40]);
    const bf = (x: Tensor) => x.cuda().to('bfloat16');
    const pairs: Array<[string, Tensor, Tensor]> = [
      ['matmul', bf(a).matmul(bf(b)), a.matmul(b)],
      ['linear with bias', kiln.linear(bf(a), bf(w), bf(bias)), kiln.linear(a, w, bias)],
      ['layerNorm', bf(a).layerNorm(96, bf(kiln.ones([96])), bf(kiln.zeros([96]))), a.layerNorm(96)],
      ['softmax', bf(a).softmax(-1), a.softmax(-1)],
      ['gelu', bf(a).gelu('tanh'), a.gelu('tanh')],
      ['sum', bf(a).sum(1), a.sum(1)],
    ];
    for (const [name, g, c] of pairs) {
      const err = relErr(g.to('float32').cpu(), c);
      t.ok(err <= 1e-2, `${name}: ${err.toExponential(2)}`);
    }
  });

  t.test('TF32 is off by default and changes results only within its precision when on', async (t) => {
    const a = kiln.randn([512, 512]), b = kiln.randn([512, 512]);
    const ref = a.matmul(b);
    t.ok(relErr(a.cuda().matmul(b.cuda()).cpu(), ref) <= 1e-5, 'float32 exact path');
    kiln.cuda.setAllowTF32(true);
    const e = relErr(a.cuda().matmul(b.cuda()).cpu(), ref);
    kiln.cuda.setAllowTF32(false);
    t.ok(e > 0 && e < 5e-3, `TF32 error ${e.toExponential(2)}`);
  });

  t.test('optimizer steps and clipGradNorm on CUDA match the CPU', async (t) => {
    for (const make of [
      (p: Tensor[]) => new kiln.optim.AdamW(p, { lr: 1e-2, weightDecay: 0.1 }),
      (p: Tensor[]) => new kiln.optim.Adam(p, { lr: 1e-2, amsgrad: true }),
      (p: Tensor[]) => new kiln.optim.SGD(p, { lr: 1e-1, momentum: 0.9, nesterov: true }),
    ]) {
      kiln.manualSeed(3);
      const init = [kiln.randn([1001]), kiln.randn([33, 7])];
      const pc = init.map((x) => x.clone().requiresGrad_());
      const pg = init.map((x) => x.cuda().requiresGrad_());
      const oc = make(pc), og = make(pg);
      for (let s = 0; s < 3; s++) {
        const g = init.map((x) => kiln.randnLike(x));
        pc.forEach((p, i) => (p.grad = g[i].clone()));
        pg.forEach((p, i) => (p.grad = g[i].cuda()));
        const nc = kiln.optim.clipGradNorm(pc, 5), ng = kiln.optim.clipGradNorm(pg, 5);
        t.ok(relErr(ng.cpu(), nc) <= 1e-5, 'clipGradNorm total norm');
        oc.step();
        og.step();
      }
      pc.forEach((p, i) => t.ok(relErr(pg[i].cpu(), p) <= 1e-5, `${oc.constructor.name} parameter ${i}`));
    }
  });

  t.test('an out-of-range CUDA index is never read, and surfaces as IndexError at the next read', async (t) => {
    const w = kiln.randn([10, 8], { device: 'cuda' });
    const ids = kiln.tensor([1, 12, 3], { device: 'cuda' });
    const s0 = kiln.cuda.syncCount();
    const out = kiln.embedding(ids, w);
    t.equal(kiln.cuda.syncCount(), s0, 'the index op itself does not synchronize');
    t.throws(() => out.cpu(), { name: 'IndexError', message: /12/ });
    const ok = kiln.embedding(kiln.tensor([0, 9], { device: 'cuda' }), w);
    t.same(ok.cpu().shape, [2, 8], 'the next op and read succeed');
  });

  t.test('an out-of-range crossEntropy target on CUDA surfaces as IndexError at the next read', async (t) => {
    const logits = kiln.randn([4, 5], { device: 'cuda' }).requiresGrad_();
    const s0 = kiln.cuda.syncCount();
    const loss = kiln.crossEntropy(logits, kiln.tensor([0, 7, 2, -100], { device: 'cuda' }));
    t.equal(kiln.cuda.syncCount(), s0, 'the loss itself does not synchronize');
    t.throws(() => loss.item(), { name: 'IndexError', message: /crossEntropy: index 7 is out of range for dim 1 of size 5.*element 1/ });
    // Backward records the same target again (with its own op name).
    loss.backward();
    t.throws(() => logits.grad!.cpu(), { name: 'IndexError', message: /crossEntropy backward: index 7/ });
    // A strided class dim (the column kernels) and a negative target.
    const cols = kiln.randn([5, 3], { device: 'cuda' }).t();
    t.throws(() => kiln.crossEntropy(cols, kiln.tensor([4, -2, 1], { device: 'cuda' })).item(), { name: 'IndexError', message: /index -2/ });
    const ok = kiln.crossEntropy(logits.detach(), kiln.tensor([0, 4, 2, 1], { device: 'cuda' }));
    t.ok(Number.isFinite(ok.item()), 'the next loss reads back fine');
  });

  t.test('crossEntropy with -Infinity logits matches the CPU on both kernel layouts', async (t) => {
    const x = kiln.tensor([[0.5, -Infinity, 2, -1], [-Infinity, 1, 0, -Infinity]]);
    const tg = kiln.tensor([2, 1]);
    const want = kiln.crossEntropy(x, tg).item();
    t.ok(Number.isFinite(want));
    t.ok(Math.abs(kiln.crossEntropy(x.cuda(), tg.cuda()).item() - want) < 1e-6, 'classes last');
    const x3 = x.unsqueeze(2).expand(2, 4, 3).contiguous();
    const t3 = kiln.tensor([[2, 2, 2], [1, 1, 1]]);
    t.ok(Math.abs(kiln.crossEntropy(x3.cuda(), t3.cuda()).item() - want) < 1e-6, 'classes along dim 1');
  });

  t.test('embedding backward on CUDA is deterministic with long runs of repeated ids', async (t) => {
    const w = kiln.randn([3, 64], { device: 'cuda' }).requiresGrad_();
    const ids = kiln.randint(0, 3, [4096], { device: 'cuda' });
    const g = kiln.randn([4096, 64], { device: 'cuda' });
    kiln.embedding(ids, w).backward(g);
    const first = w.grad!.cpu();
    w.grad = null;
    kiln.embedding(ids, w).backward(g);
    t.same(Array.from(w.grad!.cpu().dataSync()), Array.from(first.dataSync()), 'bitwise equal');
    const wc = w.detach().cpu().requiresGrad_();
    kiln.embedding(ids.cpu(), wc).backward(g.cpu());
    t.ok(relErr(first, wc.grad!) <= 1e-5, 'matches the CPU');
  });
}
