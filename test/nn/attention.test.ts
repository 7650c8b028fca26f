// MultiheadAttention against a direct per-head softmax(QK^T/sqrt(d))V written out in JavaScript:
// self-attention, causal, key padding, explicit bool/float/per-head masks, cross-attention with
// other lengths and feature sizes, layouts, averaged weights, the KV cache, gradients and errors.
import t from 'tap';
import * as kiln from '../../lib/index';
import * as nn from '../../lib/nn';
import { gradcheck, randomTensor, values } from '../helpers/gradcheck';
import { attendRef, blockIf, mats, maxDiff, mhaRef } from './ref';

function mha(E = 8, H = 2, opts: nn.MultiheadAttentionOptions = {}) {
  return new nn.MultiheadAttention(E, H, { dtype: 'float64', ...opts });
}

t.test('self-attention without masks matches the reference, with averaged weights', async (t) => {
  kiln.manualSeed(0);
  const m = mha();
  const x = randomTensor([2, 5, 8], 1);
  const { output, weights } = m.forward(x, x, x, { needWeights: true });
  const ref = mhaRef(m, x, x, x);
  t.same(output.shape, [2, 5, 8]);
  t.ok(maxDiff(mats(output), ref.out) < 1e-12);
  t.same(weights!.shape, [2, 5, 5]);
  t.ok(maxDiff(mats(weights!), ref.avg) < 1e-12);
  const perHead = m.forward(x, x, x, { needWeights: true, averageAttnWeights: false }).weights!;
  t.same(perHead.shape, [2, 2, 5, 5]);
  t.ok(maxDiff(mats(perHead), ref.perHead.flat()) < 1e-12);
  t.equal(m.forward(x, x, x).weights, undefined, 'weights only on request');
});

t.test('causal, key-padding and combined masks', async (t) => {
  kiln.manualSeed(1);
  const m = mha(8, 4);
  const x = randomTensor([2, 6, 8], 2);
  const causal = m.forward(x, x, x, { isCausal: true }).output;
  t.ok(maxDiff(mats(causal), mhaRef(m, x, x, x, blockIf((_b, _h, i, j) => j > i)).out) < 1e-12);
  const pad = [[false, false, false, false, true, true], [false, false, false, false, false, false]];
  const kpm = kiln.tensor(pad);
  const padded = m.forward(x, x, x, { keyPaddingMask: kpm }).output;
  t.ok(maxDiff(mats(padded), mhaRef(m, x, x, x, blockIf((b, _h, _i, j) => pad[b][j])).out) < 1e-12);
  const both = m.forward(x, x, x, { keyPaddingMask: kpm, isCausal: true }).output;
  t.ok(maxDiff(mats(both), mhaRef(m, x, x, x, blockIf((b, _h, i, j) => pad[b][j] || j > i)).out) < 1e-12);
  // A float mask with -Infinity is the same as a bool mask, also for key padding.
  const floatPad = kiln.tensor(pad.map((r) => r.map((p) => (p ? -Infinity : 0))), { dtype: 'float64' });
  t.ok(maxDiff(mats(m.forward(x, x, x, { keyPaddingMask: floatPad }).output), mats(padded)) < 1e-12);
  // The causal mask buffer is built once and reused (non-persistent: not in the state dict).
  const buf = m.getBuffer('causalMask');
  m.forward(x, x, x, { isCausal: true });
  t.equal(m.getBuffer('causalMask'), buf);
  t.notOk(m.stateDict().has('causalMask'));
});

t.test('explicit attnMask: bool [L, S], float additive, per-head [B*H, L, S]', async (t) => {
  kiln.manualSeed(2);
  const m = mha(6, 2);
  const x = randomTensor([2, 4, 6], 3);
  const pattern = [[false, true, false, true], [true, false, false, false], [false, false, true, true], [false, true, true, false]];
  const bool = m.forward(x, x, x, { attnMask: kiln.tensor(pattern) }).output;
  t.ok(maxDiff(mats(bool), mhaRef(m, x, x, x, blockIf((_b, _h, i, j) => pattern[i][j])).out) < 1e-12);
  const additive = randomTensor([4, 4], 4, -2, 2);
  const add = values(additive);
  const viaFloat = m.forward(x, x, x, { attnMask: additive }).output;
  t.ok(maxDiff(mats(viaFloat), mhaRef(m, x, x, x, (_b, _h, i, j) => add[i * 4 + j]).out) < 1e-12);
  const perHead = Array.from({ length: 4 }, (_, bh) => pattern.map((r, i) => r.map((p, j) => (bh % 2 ? p : !p) && !(i === j))));
  const ph = m.forward(x, x, x, { attnMask: kiln.tensor(perHead) }).output;
  t.ok(maxDiff(mats(ph), mhaRef(m, x, x, x, blockIf((b, h, i, j) => perHead[b * 2 + h][i][j])).out) < 1e-12);
  t.throws(() => m.forward(x, x, x, { attnMask: kiln.zeros([4, 5], { dtype: 'bool' }) }), { name: 'ShapeError', message: /attnMask must be \[4, 4\]/ });
  t.throws(() => m.forward(x, x, x, { keyPaddingMask: kiln.zeros([2, 3], { dtype: 'bool' }) }), { name: 'ShapeError', message: /keyPaddingMask must be \[2, 4\]/ });
});

t.test('cross-attention: query and keys of different lengths, packed and separate projections', async (t) => {
  kiln.manualSeed(3);
  const m = mha(8, 2);
  const q = randomTensor([2, 3, 8], 5), mem = randomTensor([2, 7, 8], 6);
  const pad = [[false, false, false, false, false, true, true], [false, false, false, false, false, false, false]];
  const { output, weights } = m.forward(q, mem, mem, { keyPaddingMask: kiln.tensor(pad), needWeights: true });
  const ref = mhaRef(m, q, mem, mem, blockIf((b, _h, _i, j) => pad[b][j]));
  t.same(output.shape, [2, 3, 8]);
  t.same(weights!.shape, [2, 3, 7]);
  t.ok(maxDiff(mats(output), ref.out) < 1e-12);
  t.ok(maxDiff(mats(weights!), ref.avg) < 1e-12);

  const sep = mha(8, 4, { kdim: 5, vdim: 3 });
  t.same(sep.namedParameters().map(([n]) => n), ['qProjWeight', 'kProjWeight', 'vProjWeight', 'inProjBias', 'outProj.weight', 'outProj.bias']);
  const k = randomTensor([2, 6, 5], 7), v = randomTensor([2, 6, 3], 8);
  t.ok(maxDiff(mats(sep.forward(q, k, v).output), mhaRef(sep, q, k, v).out) < 1e-12);
  t.throws(() => sep.forward(q, v, v), { name: 'ShapeError', message: /kdim=5/ });
  const noBias = mha(8, 2, { bias: false });
  t.same(noBias.namedParameters().map(([n]) => n), ['inProjWeight', 'outProj.weight']);
  t.ok(maxDiff(mats(noBias.forward(q, mem, mem).output), mhaRef(noBias, q, mem, mem).out) < 1e-12);
});

t.test('layouts: batchFirst false and unbatched inputs give the same numbers', async (t) => {
  kiln.manualSeed(4);
  const m = mha(8, 2);
  const seqFirst = mha(8, 2, { batchFirst: false });
  seqFirst.loadStateDict(m.stateDict());
  const x = randomTensor([2, 5, 8], 9);
  const ref = m.forward(x, x, x, { isCausal: true, needWeights: true });
  const xs = x.transpose(0, 1);
  const alt = seqFirst.forward(xs, xs, xs, { isCausal: true, needWeights: true });
  t.same(alt.output.shape, [5, 2, 8]);
  t.ok(maxDiff(values(alt.output.transpose(0, 1).contiguous()), values(ref.output)) < 1e-12);
  t.ok(maxDiff(values(alt.weights!), values(ref.weights!)) < 1e-12, 'weights stay [B, L, S]');
  const x0 = x.select(0, 0);
  const un = m.forward(x0, x0, x0, { isCausal: true, needWeights: true });
  t.same(un.output.shape, [5, 8]);
  t.same(un.weights!.shape, [5, 5]);
  t.ok(maxDiff(values(un.output), values(ref.output.select(0, 0))) < 1e-12);
});

t.test('KV cache: step-by-step and chunked decoding equal the full causal pass', async (t) => {
  kiln.manualSeed(5);
  const m = mha(8, 2);
  const x = randomTensor([2, 7, 8], 10);
  const full = m.forward(x, x, x, { isCausal: true }).output;
  kiln.noGrad(() => {
    const cache = new nn.KVCache(2);
    const steps: kiln.Tensor[] = [];
    for (let i = 0; i < 7; i++) {
      const xi = x.narrow(1, i, 1);
      steps.push(m.forward(xi, xi, xi, { isCausal: true, kvCache: cache }).output);
    }
    t.equal(cache.length, 7);
    t.ok(maxDiff(values(kiln.cat(steps, 1)), values(full)) < 1e-12, 'one token at a time (the cache grew from capacity 2)');
    cache.reset();
    const a = x.narrow(1, 0, 3), b = x.narrow(1, 3, 4);
    const outA = m.forward(a, a, a, { isCausal: true, kvCache: cache }).output;
    const outB = m.forward(b, b, b, { isCausal: true, kvCache: cache }).output;
    t.ok(maxDiff(values(kiln.cat([outA, outB], 1)), values(full)) < 1e-12, 'a prompt chunk then a continuation chunk');
    t.throws(() => cache.append(kiln.zeros([2, 3, 1, 4], { dtype: 'float64' }), kiln.zeros([2, 3, 1, 4], { dtype: 'float64' })), kiln.ShapeError);
    cache.dispose();
    t.equal(cache.length, 0);
  });
  const cache = new nn.KVCache();
  t.throws(() => m.forward(x, x, x, { kvCache: cache }), { name: 'ValueError', message: /noGrad/ });
});

t.test('gradients flow through projections, heads and masks (float64 finite differences)', async (t) => {
  kiln.manualSeed(6);
  const m = mha(4, 2);
  const kpm = kiln.tensor([[false, false, true], [false, false, false]]);
  const self = gradcheck((x) => m.forward(x, x, x, { isCausal: true }).output, [randomTensor([2, 3, 4], 11)]);
  t.ok(self.ok, self.detail);
  const cross = gradcheck((q, kv) => m.forward(q, kv, kv, { keyPaddingMask: kpm }).output, [randomTensor([2, 2, 4], 12), randomTensor([2, 3, 4], 13)]);
  t.ok(cross.ok, cross.detail);
  // Parameter gradients: d(sum of outputs)/d(outProj.bias) is the number of output rows.
  m.zeroGrad();
  const x = randomTensor([2, 3, 4], 14);
  m.forward(x, x, x).output.sum().backward();
  t.same(values(m.outProj.bias!.grad!), [6, 6, 6, 6]);
  t.ok(values(m.inProjWeight!.grad!).some((g) => g !== 0));
});

t.test('scaledDotProductAttention and causalMask', async (t) => {
  const q = randomTensor([2, 3, 4], 15), k = randomTensor([2, 5, 4], 16), v = randomTensor([2, 5, 2], 17);
  const out = nn.scaledDotProductAttention(q, k, v, { isCausal: true });
  // End-aligned causal mask: query i sits at position 2 + i of 5.
  t.same(nn.causalMask(3, 5).toArray(), [[false, false, false, true, true], [false, false, false, false, true], [false, false, false, false, false]]);
  const ref = mats(q).map((qb, b) => attendRef(qb, mats(k)[b], mats(v)[b], (i, j) => (j > i + 2 ? -Infinity : 0)).out);
  t.ok(maxDiff(mats(out), ref) < 1e-12);
  const scaled = nn.scaledDotProductAttention(q, k, v, { scale: 1 / Math.sqrt(4) });
  t.ok(maxDiff(mats(scaled), mats(q).map((qb, b) => attendRef(qb, mats(k)[b], mats(v)[b]).out)) < 1e-12);
  t.throws(() => nn.causalMask(4, 3), kiln.ValueError);
  t.throws(() => nn.scaledDotProductAttention(q, v, v), kiln.ShapeError);
});

t.test('constructor checks', async (t) => {
  t.throws(() => new nn.MultiheadAttention(10, 3), { name: 'ValueError', message: /multiple of numHeads/ });
  t.throws(() => new nn.MultiheadAttention(8, 2, { dropout: 2 }), kiln.ValueError);
  const m = new nn.MultiheadAttention(8, 2);
  const x = kiln.zeros([2, 3, 6]);
  t.throws(() => m.forward(x, x, x), { name: 'ShapeError', message: /MultiheadAttention: query \[2, 3, 6\]/ });
});
