// The optim family on CUDA against its CPU twin: bfloat16 and float16 parameters step like the CPU
// (float32 state, the same rounding), the multi-tensor (foreach) kernels over more parameters and
// chunks than one launch's table holds (odd sizes, unaligned views, every dtype), capturable steps
// (device lr and step counts) without a host wait, gradNormPartial / scaleGrads_ / clipGradNorm agree
// and never synchronize, a flat state group steps like per-parameter state, and the Trainer reads its
// losses once per logging interval.
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { nn, optim } from '../../lib/index';
import { Trainer } from '../../lib/train/index';

const vals = (x: Tensor): number[] => Array.from(x.cpu().to('float64').dataSync() as Float64Array);

function maxRel(a: number[], b: number[]): number {
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]) / Math.max(1, Math.abs(b[i]))), 0);
}

if (!kiln.cuda.isAvailable()) {
  t.plan(0, kiln.buildInfo().cuda ? 'no CUDA device visible' : 'kiln was built without CUDA');
} else {
  t.test('half-precision parameters step on CUDA as on the CPU', async (t) => {
    for (const dtype of ['bfloat16', 'float16'] as const) {
      for (const make of [
        (p: Tensor[]) => new optim.AdamW(p, { lr: 1e-2, weightDecay: 0.1 }),
        (p: Tensor[]) => new optim.Adam(p, { lr: 1e-2, amsgrad: true, weightDecay: 0.01 }),
        (p: Tensor[]) => new optim.SGD(p, { lr: 1e-1, momentum: 0.9, dampening: 0.1 }),
      ]) {
        kiln.manualSeed(4);
        const init = [kiln.randn([1001]), kiln.randn([33, 7])].map((x) => x.to(dtype));
        const pc = init.map((x) => x.clone().requiresGrad_());
        const pg = init.map((x) => x.cuda().requiresGrad_());
        const oc = make(pc), og = make(pg);
        for (let s = 0; s < 3; s++) {
          const g = init.map((x) => kiln.randn([...x.shape]).to(dtype));
          pc.forEach((p, i) => (p.grad = g[i].clone()));
          pg.forEach((p, i) => (p.grad = g[i].cuda()));
          oc.step();
          og.step();
        }
        // Same float32 arithmetic; an FMA or a different sqrt may move a value by one half-dtype ulp.
        const ulp = dtype === 'bfloat16' ? 2 ** -7 : 2 ** -10;
        pc.forEach((p, i) => t.ok(maxRel(vals(pg[i]), vals(p)) <= ulp, `${dtype} ${oc.constructor.name} parameter ${i}`));
        const state = Object.values(og.state.get(pg[0])!).filter((v): v is Tensor => v instanceof kiln.Tensor);
        t.ok(state.length > 0 && state.every((v) => v.dtype === 'float32'), 'float32 state');
      }
    }
  });

  // 70 parameters (three launch tables of 32) of odd sizes: empty, one element, a chunk (65536) and one
  // more, several chunks; every fifth one an unaligned view (offset 1) that takes the scalar path.
  const SIZES = Array.from({ length: 70 }, (_, i) => [0, 1, 3, 17, 65_537, 200_003, 1000, 31][i % 8] + (i % 3));
  function oddParams(dtype: kiln.DType, device: string, seed: number): Tensor[] {
    kiln.manualSeed(seed);
    return SIZES.map((n, i) => {
      const cpu = kiln.randn([n + 1]).to(dtype);
      const base = device === 'cuda' ? cpu.cuda() : cpu;
      return (i % 5 === 0 ? base.narrow(0, 1, n) : base.narrow(0, 0, n).clone()).requiresGrad_();
    });
  }
  const MAKERS: Array<[string, (ps: Tensor[], x?: object) => optim.Optimizer<any>]> = [
    ['SGD (Nesterov, weight decay)', (ps, x) => new optim.SGD(ps, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01, ...x })],
    ['SGD (dampening, maximize)', (ps, x) => new optim.SGD(ps, { lr: 0.1, momentum: 0.5, dampening: 0.3, maximize: true, ...x })],
    ['Adam (AMSGrad, L2)', (ps, x) => new optim.Adam(ps, { lr: 1e-2, amsgrad: true, weightDecay: 0.01, ...x })],
    ['AdamW', (ps, x) => new optim.AdamW(ps, { lr: 1e-2, weightDecay: 0.1, ...x })],
  ];
  const ULP: Record<string, number> = { float64: 1e-12, float32: 1e-5, bfloat16: 2 ** -7, float16: 2 ** -10 };

  t.test('multi-tensor steps on CUDA match the CPU over many odd-sized parameters', async (t) => {
    for (const dtype of ['float32', 'float64', 'bfloat16', 'float16'] as const) {
      for (const [name, make] of MAKERS) {
        for (const capturable of [false, true]) {
          const pc = oddParams(dtype, 'cpu', 8), pg = oddParams(dtype, 'cuda', 8);
          const oc = make(pc, { capturable }), og = make(pg, { capturable });
          for (let s = 0; s < 3; s++) {
            kiln.manualSeed(100 + s);
            const g = SIZES.map((n) => kiln.randn([n]).to(dtype));
            pc.forEach((p, i) => (p.grad = g[i].clone()));
            pg.forEach((p, i) => (p.grad = g[i].cuda()));
            oc.step();
            og.step();
            // A later step with a new lr: syncLr writes it on the device.
            for (const o of [oc, og]) o.paramGroups[0].lr *= 0.5;
          }
          // Same arithmetic but for FMAs and sqrt: a value may move by a rounding of its dtype.
          const worst = pc.reduce((m, p, i) => Math.max(m, maxRel(vals(pg[i]), vals(p))), 0);
          t.ok(worst <= ULP[dtype], `${dtype} ${name}${capturable ? ' capturable' : ''}: ${SIZES.length} parameters (max relative difference ${worst.toExponential(2)})`);
          if (capturable && name.startsWith('Adam')) {
            const step = og.paramState(pg[7])!.step as Tensor;
            t.ok(step.device === 'cuda:0' && step.item() === 3, 'the step count is on the device and the kernel advanced it');
          }
          oc.dispose();
          og.dispose();
        }
      }
    }
  });

  t.test('foreach on CUDA steps like one launch per parameter', async (t) => {
    for (const [name, make] of MAKERS) {
      const a = oddParams('float32', 'cuda', 9), b = oddParams('float32', 'cuda', 9);
      const per = make(a, { foreach: false }), multi = make(b);
      for (let s = 0; s < 3; s++) {
        kiln.manualSeed(200 + s);
        const g = SIZES.map((n) => kiln.randn([n], { device: 'cuda' }));
        a.forEach((p, i) => (p.grad = g[i].clone()));
        b.forEach((p, i) => (p.grad = g[i].clone()));
        per.step();
        multi.step();
      }
      const worst = a.reduce((m, p, i) => Math.max(m, maxRel(vals(b[i]), vals(p))), 0);
      t.ok(worst <= 1e-6, `${name}: the same kernels' arithmetic (max relative difference ${worst.toExponential(2)})`);
      per.dispose();
      multi.dispose();
    }
  });

  t.test('a capturable step on CUDA never waits for the device, also when the lr changes', async (t) => {
    const ps = oddParams('bfloat16', 'cuda', 10);
    const opt = new optim.AdamW(ps, { lr: 1e-3, capturable: true });
    const sched = new optim.WarmupCosineLR(opt, { warmupSteps: 3, totalSteps: 10 });
    const grads = SIZES.map((n) => kiln.randn([n], { device: 'cuda' }).to('bfloat16'));
    ps.forEach((p, i) => (p.grad = grads[i]));
    opt.step(); // the first step creates the state
    const s0 = kiln.cuda.syncCount();
    for (let s = 0; s < 5; s++) {
      sched.step();
      opt.syncLr();
      opt.step();
    }
    t.equal(kiln.cuda.syncCount(), s0, 'no host wait in 5 steps with a schedule');
    t.equal(opt.stateDict().state[1].step, 6, 'stateDict reads the count back');
    opt.dispose();
  });

  t.test('gradNormPartial, scaleGrads_ and clipGradNorm agree with the CPU and do not synchronize', async (t) => {
    kiln.manualSeed(5);
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const grads = [kiln.randn([70_001]), kiln.randn([5]), kiln.randn([40, 3])].map((g) => g.to(dtype));
      const pc = grads.map((g) => {
        const p = kiln.zeros([...g.shape], { dtype, requiresGrad: true });
        p.grad = g.clone();
        return p;
      });
      const pg = grads.map((g) => {
        const p = kiln.zeros([...g.shape], { dtype, device: 'cuda', requiresGrad: true });
        p.grad = g.cuda();
        return p;
      });
      for (const p of [2, 1, 3, Infinity]) {
        const c = optim.gradNormPartial(pc, p).item();
        const s0 = kiln.cuda.syncCount();
        const part = optim.gradNormPartial(pg, p);
        t.equal(kiln.cuda.syncCount(), s0, `${dtype} p = ${p}: the partial stays on the device`);
        t.ok(Math.abs(part.item() - c) <= 1e-5 * Math.abs(c), `${dtype} p = ${p}: partial ${c}`);
      }
      const half = kiln.tensor(0.5, { dtype: 'float64', device: 'cuda' });
      const s0 = kiln.cuda.syncCount();
      optim.scaleGrads_(pg, half);
      const ng = optim.clipGradNorm(pg, 3);
      t.equal(kiln.cuda.syncCount(), s0, `${dtype}: scaling and clipping enqueue without waiting`);
      optim.scaleGrads_(pc, 0.5);
      const nc = optim.clipGradNorm(pc, 3);
      t.ok(Math.abs(ng.item() - nc.item()) <= 1e-5 * nc.item(), `${dtype}: the norm before clipping`);
      pc.forEach((p, i) => t.ok(maxRel(vals(pg[i].grad!), vals(p.grad!)) <= (dtype === 'float32' ? 1e-6 : 2 ** -7), `${dtype}: clipped gradient ${i}`));
    }
  });

  t.test('a flat state group on CUDA steps exactly like per-parameter state', async (t) => {
    kiln.manualSeed(6);
    const init = [kiln.randn([37]), kiln.randn([5, 3]), kiln.randn([1])].map((x) => x.cuda());
    const a = init.map((x) => x.clone().requiresGrad_());
    const b = init.map((x) => x.clone().requiresGrad_());
    const oa = new optim.AdamW(a, { lr: 1e-2 }), ob = new optim.AdamW(b, { lr: 1e-2 });
    ob.useFlatState();
    for (let s = 0; s < 3; s++) {
      const g = init.map((x) => kiln.randnLike(x));
      a.forEach((p, i) => (p.grad = g[i].clone()));
      b.forEach((p, i) => (p.grad = g[i].clone()));
      oa.step();
      ob.step();
    }
    t.same(b.map(vals), a.map(vals));
    t.equal(ob.flatState(0)!.buffers.expAvg.device, 'cuda:0');
  });

  t.test('the Trainer on CUDA synchronizes once per logging interval', async (t) => {
    kiln.manualSeed(7);
    const model = new nn.Linear(16, 1).to('cuda');
    const x = kiln.randn([8, 16]).cuda(), y = kiln.randn([8, 1]).cuda();
    const syncs: number[] = [];
    const trainer = new Trainer({
      model, optimizer: new optim.AdamW(model.parameters(), { lr: 1e-2 }), gradAccumulation: 4, clipGradNorm: 1, logInterval: 5,
      progress: 'none', callbacks: [{ onStepEnd: () => void syncs.push(kiln.cuda.syncCount()) }],
    });
    await trainer.fit({ train: [[x, y]], loss: (m, [a, b]) => nn.mseLoss(m.forward(a), b), steps: 10 });
    const perStep = syncs.slice(1).map((s, i) => s - syncs[i]);
    t.same(perStep, [0, 0, 0, 0, 1, 0, 0, 0, 0], `host waits per step (the read lands after step 5's callbacks): ${perStep}`);
  });
}
