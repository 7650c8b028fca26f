// GPT: forward against an explicit composition of its parts in JavaScript, loss, tied head,
// parameter count and GPT-2 init statistics, KV-cache decoding equal to full recomputation (logits
// and greedy tokens, also past blockSize), seeded sampling, and steady memory over training steps;
// the fused MLP and residual-norm ops give the same loss and gradients as the unfused layers.
import t from 'tap';
import * as kiln from '../../lib/index';
import * as nn from '../../lib/nn';
import { values } from '../helpers/gradcheck';
import { Mat, add, blockIf, geluTanh, layerNormRows, linear, mapMat, mat, maxDiff, mhaRef, stats } from './ref';

const small: nn.GPTConfig = { vocabSize: 11, blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 8 };

function gptRef(m: nn.GPT, ids: number[][]): Mat[] {
  const ln = (l: nn.LayerNorm, x: Mat) => layerNormRows(x, values(l.weight!), l.bias ? values(l.bias) : null, l.eps);
  const wte = mat(m.wte.weight), wpe = mat(m.wpe.weight);
  return ids.map((row) => {
    let x: Mat = row.map((tok, p) => wte[tok].map((v, c) => v + wpe[p][c]));
    for (const b of m.blocks) {
      const h = kiln.tensor([ln(b.ln1, x)], { dtype: 'float64' });
      x = add(x, mhaRef(b.attn, h, h, h, blockIf((_b, _h, i, j) => j > i)).out[0]);
      const f = mapMat(linear(ln(b.ln2, x), mat(b.mlp.fc.weight), values(b.mlp.fc.bias!)), geluTanh);
      x = add(x, linear(f, mat(b.mlp.proj.weight), values(b.mlp.proj.bias!)));
    }
    return linear(ln(m.lnF, x), wte);
  });
}

t.test('forward equals the explicit composition; loss is the mean cross-entropy', async (t) => {
  kiln.manualSeed(0);
  const m = new nn.GPT(small).double();
  // Larger weights than GPT-2's init so that every part visibly matters.
  kiln.noGrad(() => {
    for (const p of m.parameters()) p.copy_(kiln.randn(p.shape, { dtype: 'float64' }).mul(0.3));
  });
  const ids = [[1, 5, 2, 9, 0], [3, 3, 10, 4, 7]];
  const idx = kiln.tensor(ids);
  const targets = kiln.tensor([[5, 2, 9, 0, 1], [3, 10, 4, 7, -100]]);
  const { logits, loss } = m.forward(idx, targets);
  t.same(logits.shape, [2, 5, 11]);
  const ref = gptRef(m, ids);
  t.ok(maxDiff([mat(logits.select(0, 0)), mat(logits.select(0, 1))], ref) < 1e-10);
  const tg = [[5, 2, 9, 0, 1], [3, 10, 4, 7, -100]];
  let sum = 0, n = 0;
  ref.forEach((rows, b) => rows.forEach((r, p) => {
    if (tg[b][p] < 0) return;
    sum += Math.log(r.reduce((s, v) => s + Math.exp(v), 0)) - r[tg[b][p]];
    n++;
  }));
  t.ok(Math.abs(loss!.item() - sum / n) < 1e-10, 'mean over non-ignored targets');
  t.equal(m.forward(idx).loss, undefined);
  const last = m.forward(idx, null, { lastOnly: true }).logits;
  t.same(last.shape, [2, 1, 11]);
  t.ok(maxDiff(values(last), values(logits.narrow(1, 4, 1).contiguous())) < 1e-12);
});

t.test('structure: tied head, names, parameter count, errors', async (t) => {
  const m = new nn.GPT(small);
  t.equal(m.lmHead.weight, m.wte.weight, 'output head tied to the token embedding');
  const names = m.namedParameters().map(([n]) => n);
  t.ok(names.includes('blocks.1.attn.inProjWeight') && names.includes('blocks.0.mlp.proj.bias') && names.includes('lnF.weight'));
  t.notOk(names.includes('lmHead.weight'), 'the tied weight is listed once');
  t.ok(m.stateDict().has('lmHead.weight'), 'but saved under both names, like PyTorch');
  t.notOk(m.stateDict().has('causalMask'));
  const C = 8;
  t.equal(m.numParameters(), 11 * C + 8 * C + 2 * (12 * C * C + 13 * C) + 2 * C);
  const nb = new nn.GPT({ ...small, bias: false });
  t.equal(nb.numParameters(), 11 * C + 8 * C + 2 * 12 * C * C + 2 * 2 * C + C);
  t.throws(() => m.forward(kiln.zeros([1, 3])), kiln.DTypeError);
  t.throws(() => m.forward(kiln.tensor([1, 2])), kiln.ShapeError);
  t.throws(() => m.forward(kiln.zeros([1, 9], { dtype: 'int64' })), { name: 'ValueError', message: /longer than blockSize 8/ });
  t.throws(() => m.forward(kiln.tensor([[1, 2]]), kiln.tensor([[1]])), kiln.ShapeError);
  t.throws(() => new nn.GPT({ ...small, nHead: 3 }), kiln.ValueError);
  t.throws(() => new nn.GPT({ ...small, nLayer: 0 }), kiln.ValueError);
});

t.test('GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 nLayer), zero biases, repeatable', async (t) => {
  kiln.manualSeed(7);
  const cfg = { vocabSize: 300, blockSize: 64, nLayer: 4, nHead: 4, nEmbd: 64 };
  const m = new nn.GPT(cfg);
  const std = (p: kiln.Tensor) => stats(values(p)).std;
  t.ok(Math.abs(std(m.wte.weight) - 0.02) < 1e-3, `wte std ${std(m.wte.weight)}`);
  t.ok(Math.abs(std(m.wpe.weight) - 0.02) < 1.5e-3);
  const b0 = m.blocks.at(0);
  t.ok(Math.abs(std(b0.attn.inProjWeight!) - 0.02) < 1e-3);
  t.ok(Math.abs(std(b0.mlp.fc.weight) - 0.02) < 1e-3);
  const scaled = 0.02 / Math.sqrt(8);
  t.ok(Math.abs(std(b0.mlp.proj.weight) - scaled) < 5e-4, `mlp.proj std ${std(b0.mlp.proj.weight)} vs ${scaled}`);
  t.ok(Math.abs(std(b0.attn.outProj.weight) - scaled) < 5e-4);
  t.ok(values(b0.attn.inProjBias!).every((v) => v === 0) && values(b0.mlp.fc.bias!).every((v) => v === 0));
  t.ok(values(m.lnF.weight!).every((v) => v === 1));
  kiln.manualSeed(7);
  const again = new nn.GPT(cfg);
  t.same(values(again.blocks.at(3).mlp.proj.weight), values(m.blocks.at(3).mlp.proj.weight), 'same seed, same model');
  // With small weights the first loss is close to log(vocab).
  const idx = kiln.randint(0, 300, [2, 16]);
  const loss = m.forward(idx, kiln.randint(0, 300, [2, 16])).loss!.item();
  t.ok(Math.abs(loss - Math.log(300)) < 0.1, `initial loss ${loss} vs ln(300) = ${Math.log(300)}`);
  m.dispose();
  again.dispose();
});

t.test('KV cache: incremental logits equal full recomputation; greedy tokens identical', async (t) => {
  for (const dtype of ['float64', 'float32'] as const) {
    kiln.manualSeed(1);
    const m = new nn.GPT(small).to(dtype);
    kiln.noGrad(() => {
      for (const p of m.parameters()) p.copy_(kiln.randn(p.shape).mul(0.5));
    });
    const tol = dtype === 'float64' ? 1e-10 : 1e-4;
    const idx = kiln.tensor([[4, 1, 7, 7, 2, 9, 3], [0, 10, 5, 6, 1, 1, 8]]);
    const full = kiln.noGrad(() => m.forward(idx).logits);
    const cache = m.createCache();
    kiln.noGrad(() => {
      const prompt = m.forward(idx.narrow(1, 0, 3), null, { kvCache: cache }).logits;
      t.ok(maxDiff(values(prompt), values(full.narrow(1, 0, 3).contiguous())) < tol, `${dtype}: prompt logits`);
      for (let p = 3; p < 7; p++) {
        const step = m.forward(idx.narrow(1, p, 1), null, { kvCache: cache }).logits;
        t.ok(maxDiff(values(step), values(full.narrow(1, p, 1).contiguous())) < tol, `${dtype}: position ${p}`);
      }
    });
    t.equal(cache[0].length, 7);
    cache.forEach((c) => c.dispose());

    const seen: Record<string, number[][]> = { cached: [], uncached: [] };
    const run = (useCache: boolean) =>
      m.generate(idx.narrow(1, 0, 2), 12, { greedy: true, useCache, onLogits: (l) => seen[useCache ? 'cached' : 'uncached'].push(values(l)) });
    const a = run(true), b = run(false);
    t.same(a.shape, [2, 14]);
    t.same(a.toArray(), b.toArray(), `${dtype}: greedy tokens identical with and without the cache (12 steps, past blockSize 8)`);
    t.same(a.narrow(1, 0, 2).toArray(), idx.narrow(1, 0, 2).toArray(), 'the prompt is kept');
    t.ok(maxDiff(seen.cached, seen.uncached) < tol, `${dtype}: per-step logits identical`);
    t.ok(new Set(values(a)).size > 2, 'the model generates varied tokens');
  }
});

t.test('sampling: seeded, temperature / topK / topP behave, generate restores the mode and leaks nothing', async (t) => {
  kiln.manualSeed(2);
  const m = new nn.GPT({ ...small, dropout: 0.1 });
  kiln.noGrad(() => {
    for (const p of m.parameters()) p.copy_(kiln.randn(p.shape).mul(0.5));
  });
  const prompt = kiln.tensor([[1, 2, 3]]);
  const before = kiln.memory().tensors;
  kiln.manualSeed(9);
  const s1 = m.generate(prompt, 6, { temperature: 1.3, topK: 5 });
  kiln.manualSeed(9);
  const s2 = m.generate(prompt, 6, { temperature: 1.3, topK: 5 });
  t.same(s1.toArray(), s2.toArray(), 'same seed, same sample');
  t.equal(kiln.memory().tensors, before + 2, 'only the two results remain');
  t.ok(m.training, 'training mode restored');
  t.same(m.generate(prompt, 5, { topK: 1 }).toArray(), m.generate(prompt, 5, { greedy: true }).toArray(), 'topK 1 is greedy');
  t.same(m.generate(prompt, 5, { temperature: 0 }).toArray(), m.generate(prompt, 5, { greedy: true }).toArray(), 'temperature 0 is greedy');
  t.same(m.generate(prompt, 0).toArray(), prompt.toArray());

  // Frequencies: p = softmax([0, ln 3, -inf-ish]) = [0.25, 0.75, 0].
  const rows = 4000;
  const logits = kiln.tensor(Array.from({ length: rows }, () => [0, Math.log(3), -30]), { dtype: 'float32' });
  const freq = (tok: kiln.Tensor, v: number) => values(tok).filter((x) => x === v).length / rows;
  const plain = nn.sampleLogits(logits);
  t.same(plain.shape, [rows, 1]);
  t.equal(plain.dtype, 'int64');
  t.ok(Math.abs(freq(plain, 1) - 0.75) < 0.03, `P(1) = ${freq(plain, 1)}`);
  const hot = nn.sampleLogits(logits, { temperature: 2 });
  const want = Math.sqrt(3) / (1 + Math.sqrt(3));
  t.ok(Math.abs(freq(hot, 1) - want) < 0.03, `temperature 2 flattens: P(1) = ${freq(hot, 1)} vs ${want}`);
  const three = kiln.tensor(Array.from({ length: rows }, () => [Math.log(0.5), Math.log(0.3), Math.log(0.2)]));
  const nucleus = nn.sampleLogits(three, { topP: 0.6 });
  t.equal(freq(nucleus, 2), 0, 'topP 0.6 keeps {0, 1}');
  t.ok(Math.abs(freq(nucleus, 0) - 0.625) < 0.03, `renormalized: P(0) = ${freq(nucleus, 0)}`);
  const top2 = nn.sampleLogits(three, { topK: 2, dtype: 'int32' });
  t.equal(top2.dtype, 'int32');
  t.equal(freq(top2, 2), 0);
  t.throws(() => nn.sampleLogits(three, { topK: 0 }), kiln.ValueError);
  t.throws(() => nn.sampleLogits(three, { topP: 1.5 }), kiln.ValueError);
  t.throws(() => nn.sampleLogits(three, { temperature: -1 }), kiln.ValueError);
  t.throws(() => nn.sampleLogits(kiln.zeros([3]), {}), kiln.ShapeError);
});

t.test('training steps hold live tensors and bytes flat', async (t) => {
  kiln.manualSeed(3);
  const m = new nn.GPT({ ...small, dropout: 0.1 });
  const idx = kiln.randint(0, 11, [4, 8]), tgt = kiln.randint(0, 11, [4, 8]);
  const samples: Array<{ tensors: number; bytes: number }> = [];
  let first = 0, last = 0;
  for (let step = 0; step < 40; step++) {
    const loss = kiln.tidy(() => m.forward(idx, tgt).loss!);
    loss.backward();
    kiln.noGrad(() => {
      for (const p of m.parameters()) p.sub_(p.grad!, 0.5);
    });
    m.zeroGrad();
    if (step === 0) first = loss.item();
    last = loss.item();
    loss.dispose();
    if (step >= 5) samples.push(kiln.memory());
  }
  t.ok(last < first * 0.7, `loss fell from ${first.toFixed(3)} to ${last.toFixed(3)}`);
  t.equal(new Set(samples.map((s) => s.tensors)).size, 1, 'live tensors flat');
  t.equal(new Set(samples.map((s) => s.bytes)).size, 1, 'native bytes flat');
});

// Subclasses of the plain layers: a block or MLP holding them takes the unfused path.
class UnfusedLayerNorm extends nn.LayerNorm {}
class UnfusedLinear extends nn.Linear {}

/** Names of the nodes of t's graph. */
function graphOps(t: kiln.Tensor): Set<string> {
  const seen = new Set<unknown>(), names = new Set<string>();
  const stack = t.gradFn ? [t.gradFn] : [];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    names.add(n.name);
    for (const e of n.next) if (e?.node) stack.push(e.node);
  }
  return names;
}

/** A copy of m whose fc and ln2 layers are subclasses (same weights): GPT's unfused path. */
function unfusedCopy(m: nn.GPT, cfg: nn.GPTConfig, dtype: kiln.DType): nn.GPT {
  const u = new nn.GPT(cfg).to(dtype);
  for (const b of u.blocks) {
    b.ln2 = new UnfusedLayerNorm(cfg.nEmbd, { eps: 1e-5, dtype });
    b.mlp.fc = new UnfusedLinear(cfg.nEmbd, 4 * cfg.nEmbd, { dtype });
  }
  u.loadStateDict(m.stateDict());
  return u;
}

t.test('the fused MLP and residual norm give the unfused loss and gradients', async (t) => {
  const cfg: nn.GPTConfig = { vocabSize: 13, blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 16 };
  for (const dtype of ['float64', 'float32'] as const) {
    kiln.manualSeed(11);
    const m = new nn.GPT(cfg).to(dtype);
    kiln.noGrad(() => {
      for (const p of m.parameters()) p.copy_(kiln.randn(p.shape, { dtype }).mul(0.3));
    });
    const u = unfusedCopy(m, cfg, dtype);
    const idx = kiln.randint(0, 13, [3, 7]), tgt = kiln.randint(0, 13, [3, 7]);
    const lf = m.forward(idx, tgt).loss!, lu = u.forward(idx, tgt).loss!;
    const ops = graphOps(lf), uops = graphOps(lu);
    t.ok(ops.has('linearGelu') && ops.has('addLayerNorm'), `${dtype}: the plain GPT records the fused ops`);
    t.ok(!uops.has('linearGelu') && !uops.has('addLayerNorm'), `${dtype}: subclassed layers take the unfused path`);
    // The CPU runs the same arithmetic either way: equal bit for bit.
    t.equal(lf.item(), lu.item(), `${dtype}: loss ${lf.item()}`);
    lf.backward();
    lu.backward();
    const gu = new Map(u.namedParameters());
    let worst = 0;
    for (const [name, p] of m.namedParameters()) {
      const q = gu.get(name)!;
      const a = values(p.grad!), b = values(q.grad!);
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    }
    t.equal(worst, 0, `${dtype}: every parameter gradient equal`);
  }
});

t.test('a LoRA adapter on mlp.fc takes the unfused path; with B = 0 the loss is the base model\'s', async (t) => {
  kiln.manualSeed(12);
  const m = new nn.GPT(small).double();
  const idx = kiln.randint(0, 11, [2, 6]), tgt = kiln.randint(0, 11, [2, 6]);
  const base = m.forward(idx, tgt).loss!;
  nn.lora.apply(m, { targets: ['mlp.fc'], rank: 2, alpha: 4 });
  const adapted = m.forward(idx, tgt).loss!;
  t.notOk(graphOps(adapted).has('linearGelu'), 'no fused fc under an adapter');
  t.ok(graphOps(adapted).has('addLayerNorm'), 'the residual norm stays fused');
  t.equal(adapted.item(), base.item());
});
