// Prompt tuning and GPT.forward's embedding inputs: prefixEmbeds equal to token embeddings give the
// logits of those tokens placed before the input; inputsEmbeds equal wte(idx) give forward(idx); a
// soft prompt trained on a frozen GPT recovers a task the model was trained to do only after a task
// token, while every weight of the model stays bit-identical; generation works with a soft prompt,
// with and without the KV cache; bad shapes are errors.
import t from 'tap';
import * as kiln from '../../lib';
import { nn, optim, data } from '../../lib';
import { gradcheckParams, maxAbsDiff, randomTensor, values } from '../helpers/gradcheck';

const CFG = { vocabSize: 16, blockSize: 16, nLayer: 2, nHead: 2, nEmbd: 16 };

t.test('prefixEmbeds and inputsEmbeds', async (t) => {
  kiln.manualSeed(1);
  const g = new nn.GPT(CFG);
  const head = kiln.randint(0, 16, [2, 3]), ids = kiln.randint(0, 16, [2, 5]);
  const whole = g.forward(kiln.cat([head, ids], 1)).logits.narrow(1, 3, 5);
  const prefixed = g.forward(ids, null, { prefixEmbeds: g.wte.forward(head) }).logits;
  t.same(prefixed.shape, [2, 5, 16], 'logits for the tokens only');
  t.ok(kiln.allclose(prefixed, whole, 0, 1e-6), 'the same logits as the tokens in front');
  t.ok(kiln.allclose(g.forward(null, null, { inputsEmbeds: g.wte.forward(ids) }).logits, g.forward(ids).logits, 0, 0));
  t.throws(() => g.forward(ids, null, { inputsEmbeds: g.wte.forward(ids) }), /not both/);
  t.throws(() => g.forward(ids, null, { prefixEmbeds: kiln.zeros([3, 2, 16]) }), { name: 'ShapeError', message: /prefixEmbeds must be \[1 or 2, P, 16\]/ });
  t.throws(() => g.forward(ids, null, { prefixEmbeds: kiln.zeros([1, 12, 16]) }), { name: 'ValueError', message: /17 positions \(a prefix of 12\) is longer than blockSize 16/ });
});

t.test('a soft prompt learns a task for a frozen model; the model stays bit-identical', async (t) => {
  kiln.manualSeed(2);
  const g = new nn.GPT(CFG);
  // "Pretraining": after task token 14 the model copies its input, after 15 it writes 5s.
  const batch = (task: number, n: number) => {
    const x = kiln.cat([kiln.full([n, 1], task, { dtype: 'int64' }), kiln.randint(0, 14, [n, 7])], 1);
    return [x, task === 14 ? x : kiln.full([n, 8], 5, { dtype: 'int64' })];
  };
  const o = new optim.AdamW(g.parameters(), { lr: 1e-2 });
  for (let i = 0; i < 150; i++) {
    const [x, y] = batch(i % 2 ? 14 : 15, 16);
    g.forward(x, y).loss!.backward();
    o.step();
    o.zeroGrad();
  }
  const frozen = new Map([...g.stateDict()].map(([k, v]) => [k, Float32Array.from(v.dataSync() as Float32Array)]));
  // The new task: copy, with no task token. Without one the model writes 5s.
  const tuning = new nn.PromptTuning(g, { numVirtualTokens: 2 });
  t.same(g.parameters().filter((p) => p.requiresGrad), [], 'the model is frozen');
  const body = kiln.randint(0, 14, [16, 7]);
  const opt = new optim.AdamW([tuning.prompt], { lr: 0.1 });
  const first = tuning.forward(body, body).loss!.item();
  for (let i = 0; i < 40; i++) {
    tuning.forward(body, body).loss!.backward();
    opt.step();
    opt.zeroGrad();
  }
  const last = tuning.forward(body, body).loss!.item();
  t.ok(last < first / 10, `the soft prompt lowers the loss: ${first.toFixed(3)} -> ${last.toFixed(4)}`);
  for (const [k, v] of g.stateDict()) t.same(v.dataSync(), frozen.get(k), `${k} bit-identical`);

  // Generation with the soft prompt copies the prompt's input, with and without the KV cache.
  const start = kiln.tensor([[3, 7, 9]], { dtype: 'int64' });
  const cached = tuning.generate(start, 4, { greedy: true });
  const uncached = tuning.generate(start, 4, { greedy: true, useCache: false });
  t.same(cached.shape, [1, 7]);
  t.same(Array.from(cached.dataSync()), Array.from(uncached.dataSync()), 'the cache gives the same tokens');
  t.throws(() => new nn.PromptTuning(g, { numVirtualTokens: 16 }), /numVirtualTokens must be an integer in \[1, 15\]/);
  t.throws(() => new nn.PromptTuning(g, { initTokens: [99] }), /initTokens must be token ids/);
  const fromText = new nn.PromptTuning(g, { initTokens: [14] , numVirtualTokens: 2 });
  t.ok(kiln.allclose(fromText.prompt.narrow(0, 1, 1), g.wte.weight.narrow(0, 14, 1), 0, 0), 'initialized from the token embeddings, cycled');
});

t.test('PromptTuning over a GPTForSequenceClassification: the prompt goes before idx; body frozen, head trainable', async (t) => {
  kiln.manualSeed(3);
  const clf = new nn.GPT(CFG).withHead({ numLabels: 3, padTokenId: 0 });
  const head = kiln.tensor([[3, 4, 5]], { dtype: 'int64' }).expand(2, 3);
  const ids = kiln.tensor([[6, 7, 8, 0, 0], [9, 10, 11, 12, 13]], { dtype: 'int64' });
  const prefixed = clf.forward(ids, null, { prefixEmbeds: clf.transformer.wte.forward(head) }).logits;
  const whole = clf.forward(kiln.cat([head, ids], 1), null, { lengths: [6, 8] }).logits;
  t.ok(kiln.allclose(prefixed, whole, 0, 1e-6), "read at idx's last real token, as with the tokens in front");
  t.ok(kiln.allclose(clf.forward(ids, null, { lengths: [3, 5], prefixEmbeds: clf.transformer.wte.forward(head) }).logits, whole, 0, 1e-6), 'with lengths too');

  const tuning = new nn.PromptTuning(clf, { numVirtualTokens: 2 });
  t.same(tuning.trainableParameters(), [tuning.prompt, clf.score.weight], 'the prompt and the score head train');
  t.same(tuning.parameters().filter((p) => p.requiresGrad), tuning.trainableParameters());
  t.equal(tuning.numVirtualTokens, 2);
  const keys = [...tuning.stateDict().keys()];
  t.same([keys[0], keys[1], keys.at(-1)], ['prompt', 'model.transformer.wte.weight', 'model.score.weight'], 'keys: prompt, then model.<the classifier\'s keys>');
  t.same(tuning.forward(ids).logits.shape, [2, 3]);
  const withLengths = tuning.forward(ids, kiln.tensor([0, 2], { dtype: 'int64' }), { lengths: [3, 5] });
  t.ok(kiln.allclose(withLengths.logits, tuning.forward(ids).logits, 0, 0), 'lengths pass through');
  t.ok(withLengths.loss, 'a loss with labels');
  t.throws(() => tuning.generate(ids, 1), { name: 'ValueError', message: /PromptTuning.generate: needs an nn.GPT model, got GPTForSequenceClassification/ });
  t.throws(() => new nn.PromptTuning(clf, { numVirtualTokens: 16 }), /numVirtualTokens must be an integer in \[1, 15\]/);
});

t.test('prompt and head gradients by finite differences (float64)', async (t) => {
  kiln.manualSeed(4);
  const clf = new nn.GPT({ ...CFG, nEmbd: 8 }).withHead({ numLabels: 2, padTokenId: 0 }).to('float64');
  const tuning = new nn.PromptTuning(clf, { numVirtualTokens: 2 });
  const ids = kiln.tensor([[5, 6, 7, 0], [8, 9, 10, 11]], { dtype: 'int64' });
  const r = gradcheckParams(() => tuning.forward(ids).logits, [tuning.prompt, clf.score.weight]);
  t.ok(r.ok, `classifier: max error ${r.maxError.toExponential(1)} ${r.detail}`);
  const g = new nn.GPT({ ...CFG, nEmbd: 8 }).to('float64');
  const lm = new nn.PromptTuning(g, { numVirtualTokens: 2 });
  const r2 = gradcheckParams(() => lm.forward(ids, ids).loss!, [lm.prompt]);
  t.ok(r2.ok, `GPT loss: max error ${r2.maxError.toExponential(1)} ${r2.detail}`);
});

/**
 * Rows of tokens 1..13 (lengths 3..10) padded with 0, labelled by their last token: `odd` (is it
 * odd?) or `above7` (is it above 7?); with task, a task token in front (14: odd, 15: above7).
 */
function rows(rng: data.Rng, n: number, question: 'odd' | 'above7', task: boolean): { ids: kiln.Tensor; labels: kiln.Tensor } {
  const W = 10 + (task ? 1 : 0), o = task ? 1 : 0;
  const ids = new Int32Array(n * W), labels = new Int32Array(n);
  for (let b = 0; b < n; b++) {
    const len = 3 + Math.floor(rng.next() * 8);
    if (task) ids[b * W] = question === 'odd' ? 14 : 15;
    let tok = 0;
    for (let i = 0; i < len; i++) ids[b * W + o + i] = tok = 1 + Math.floor(rng.next() * 13);
    labels[b] = question === 'odd' ? tok % 2 : Number(tok > 7);
  }
  return { ids: kiln.tensor(ids, { shape: [n, W], dtype: 'int64' }), labels: kiln.tensor(labels, { dtype: 'int64' }) };
}

t.test('a soft prompt and the head learn a classification task on a frozen body better than the head alone', async (t) => {
  kiln.manualSeed(5);
  const clf = new nn.GPT({ ...CFG, nEmbd: 32 }).withHead({ numLabels: 2, padTokenId: 0 });
  // "Pretraining": the task token says which question to answer about the last token.
  const pre = new optim.AdamW(clf.parameters(), { lr: 5e-3 });
  const rng = new data.Rng(1);
  for (let s = 0; s < 300; s++) {
    kiln.tidy(() => {
      const { ids, labels } = rows(rng, 32, s % 2 ? 'odd' : 'above7', true);
      clf.forward(ids, labels).loss!.backward();
      pre.step();
      pre.zeroGrad();
    });
  }
  const pretrained = new Map([...clf.stateDict()].map(([k, v]) => [k, v.clone()]));
  const bodyKeys = [...pretrained.keys()].filter((k) => k.startsWith('transformer.'));
  // The new task: above7 without a task token; 60 steps of the head alone, then of prompt + head.
  const test = rows(new data.Rng(99), 256, 'above7', false);
  const tune = (params: nn.Parameter[], forward: (ids: kiln.Tensor, labels?: kiln.Tensor) => { logits: kiln.Tensor; loss?: kiln.Tensor }) => {
    const opt = new optim.AdamW(params, { lr: 3e-2 });
    const r = new data.Rng(3);
    for (let s = 0; s < 60; s++) {
      kiln.tidy(() => {
        const { ids, labels } = rows(r, 32, 'above7', false);
        forward(ids, labels).loss!.backward();
        opt.step();
        opt.zeroGrad();
      });
    }
    return kiln.tidy(() => kiln.noGrad(() => {
      const out = forward(test.ids, test.labels);
      return { loss: out.loss!.item(), acc: out.logits.argmax(-1).eq(test.labels).to('float32').mean().item() };
    }));
  };
  clf.transformer.freeze();
  const headAlone = tune([clf.score.weight], (ids, labels) => clf.forward(ids, labels));
  clf.loadStateDict(pretrained);
  const tuning = new nn.PromptTuning(clf, { numVirtualTokens: 1 });
  const prompted = tune(tuning.trainableParameters(), (ids, labels) => tuning.forward(ids, labels));
  t.ok(prompted.acc >= 0.95, `prompt + head: held-out accuracy ${(prompted.acc * 100).toFixed(1)}%, loss ${prompted.loss.toFixed(4)}`);
  t.ok(prompted.loss < headAlone.loss / 2, `better than the head alone: accuracy ${(headAlone.acc * 100).toFixed(1)}%, loss ${headAlone.loss.toFixed(4)}`);
  for (const k of bodyKeys) t.same(clf.stateDict().get(k)!.dataSync(), pretrained.get(k)!.dataSync(), `${k} bit-identical`);
});

t.test('PromptTuning over nn.Transformer: the prompt before src, the masks widened, batchFirst false alike', async (t) => {
  kiln.manualSeed(6);
  const opts = { dModel: 8, nHead: 2, numEncoderLayers: 1, numDecoderLayers: 1, dimFeedforward: 16, dropout: 0, dtype: 'float64' as const };
  const tr = new nn.Transformer(opts);
  const tuning = new nn.PromptTuning(tr, { numVirtualTokens: 2 });
  t.same(tuning.trainableParameters(), [tuning.prompt], 'only the prompt trains');
  t.same(tuning.prompt.shape, [2, 8]);
  const src = randomTensor([2, 3, 8], 1), tgt = randomTensor([2, 4, 8], 2);
  const B = (rows: number[][]) => kiln.tensor(rows, { dtype: 'bool' });
  const padding = B([[0, 0, 0], [0, 0, 1]]);
  const srcMask = B([[0, 1, 1], [0, 0, 1], [0, 0, 0]]);
  const memoryMask = kiln.tensor([[0, -Infinity, 0], [0, 0, 0], [-Infinity, 0, 0], [0, 0, 0]], { dtype: 'float64' });
  const masks = { srcKeyPaddingMask: padding, memoryKeyPaddingMask: padding, srcMask, memoryMask, tgtIsCausal: true };
  const got = tuning.forward(src, tgt, masks);
  // By hand: the prompt's two positions first; everything sees them; the prompt's rows see only the prompt.
  const wide = {
    srcKeyPaddingMask: B([[0, 0, 0, 0, 0], [0, 0, 0, 0, 1]]),
    memoryKeyPaddingMask: B([[0, 0, 0, 0, 0], [0, 0, 0, 0, 1]]),
    srcMask: B([[0, 0, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]),
    memoryMask: kiln.tensor([[0, 0, 0, -Infinity, 0], [0, 0, 0, 0, 0], [0, 0, -Infinity, 0, 0], [0, 0, 0, 0, 0]], { dtype: 'float64' }),
    tgtIsCausal: true,
  };
  const want = tr.forward(kiln.cat([tuning.prompt.unsqueeze(0).expand(2, 2, 8), src], 1), tgt, wide);
  t.ok(maxAbsDiff(values(got), values(want)) === 0, 'the Transformer on [prompt; src] with the widened masks');

  const seqFirst = new nn.Transformer({ ...opts, batchFirst: false });
  seqFirst.loadStateDict(tr.stateDict());
  const same = new nn.PromptTuning(seqFirst, { initEmbeds: tuning.prompt });
  t.ok(kiln.allclose(same.prompt, tuning.prompt, 0, 0), 'started from initEmbeds');
  const d = maxAbsDiff(values(same.forward(src.transpose(0, 1), tgt.transpose(0, 1), masks).transpose(0, 1)), values(got));
  t.ok(d < 1e-12, `batchFirst false: [S, B, E] gives the same output (${d.toExponential(1)})`);

  const r = gradcheckParams(() => tuning.forward(src, tgt, masks), [tuning.prompt]);
  t.ok(r.ok, `prompt gradients by finite differences (float64): max error ${r.maxError.toExponential(1)} ${r.detail}`);
  kiln.noGrad(() => same.prompt.fill_(0));
  t.ok(values(tuning.prompt).every((v) => v !== 0), 'initEmbeds is copied, not shared');

  t.throws(() => new nn.PromptTuning(tr, { initTokens: [1] }), /initTokens needs a GPT/);
  t.throws(() => new nn.PromptTuning(tr, { initEmbeds: kiln.zeros([2, 4]) }), { name: 'ShapeError', message: /initEmbeds must be \[2, 8\] \(numVirtualTokens, model width\), got \[2, 4\]/ });
  t.throws(() => new nn.PromptTuning(tr, { numVirtualTokens: 0 }), /numVirtualTokens must be an integer in \[1, Infinity\], got 0/);
  t.throws(() => new nn.PromptTuning(new nn.Linear(2, 2) as unknown as nn.GPT), /expects an nn.GPT, nn.GPTForSequenceClassification or nn.Transformer, got Linear/);
  t.throws(() => tuning.forward(kiln.zeros([3, 8], { dtype: 'float64' }), tgt), { name: 'ShapeError', message: /PromptTuning: expects src \[B, S, 8\] \(batchFirst true\), got \[3, 8\]/ });
  t.throws(() => tuning.forward(src, tgt, { srcKeyPaddingMask: B([[0, 0], [0, 0]]) }), { name: 'ShapeError', message: /srcKeyPaddingMask must be \[2, 3\] for src \[2, 3, 8\], got \[2, 2\]/ });
  t.throws(() => tuning.forward(src, tgt, { srcMask: B([[0, 0], [0, 0]]) }), /srcMask must be \[\.\.\., 3, 3\]/);
  t.throws(() => tuning.generate(kiln.zeros([1, 1], { dtype: 'int64' }), 1), /needs an nn.GPT model, got Transformer/);
});

t.test('a soft prompt steers a frozen encoder-decoder to a task it knows only by a task token', async (t) => {
  kiln.manualSeed(3);
  // Digits 0-9, task tokens 10 (copy) and 11 (add 1, mod 10), BOS 12.
  const V = 13, D = 32;
  const emb = new nn.Embedding(V, D), pos = new nn.SinusoidalPositionalEncoding(D, { maxLen: 16 });
  const tr = new nn.Transformer({ dModel: D, nHead: 4, numEncoderLayers: 1, numDecoderLayers: 1, dimFeedforward: 64, dropout: 0 });
  const out = new nn.Linear(D, V);
  // The digits keep positions 1..6 with or without the task token in front.
  const embed = (ids: kiln.Tensor, offset: number) => pos.forward(emb.forward(ids).mul(Math.sqrt(D) / 4), { offset });
  const batch = (task: number | null, n: number) => {
    const digits = kiln.randint(0, 10, [n, 6]);
    const src = task === null ? digits : kiln.cat([kiln.full([n, 1], task, { dtype: 'int64' }), digits], 1);
    const y = task === 10 ? digits : digits.add(1).maskedFill(digits.eq(9), 0);
    return { src, y, dec: kiln.cat([kiln.full([n, 1], 12, { dtype: 'int64' }), y.narrow(1, 0, 5)], 1) };
  };
  const loss = (run: (s: kiln.Tensor, t: kiln.Tensor) => kiln.Tensor, b: ReturnType<typeof batch>) => {
    const h = run(embed(b.src, b.src.shape[1] === 6 ? 1 : 0), embed(b.dec, 0));
    return nn.crossEntropy(out.forward(h).reshape(-1, V), b.y.reshape(-1));
  };
  const params = [...emb.parameters(), ...tr.parameters(), ...out.parameters()];
  const o = new optim.AdamW(params, { lr: 3e-3 });
  for (let i = 0; i < 300; i++) {
    kiln.tidy(() => {
      loss((s, g) => tr.forward(s, g, { tgtIsCausal: true }), batch(i % 2 ? 10 : 11, 32)).backward();
      o.step();
      o.zeroGrad();
    });
  }
  for (const p of params) p.requiresGrad = false;
  const frozen = params.map((p) => Float32Array.from(p.dataSync() as Float32Array));
  // The new task: add 1 with no task token.
  const tuning = new nn.PromptTuning(tr, { numVirtualTokens: 2 });
  const run = (s: kiln.Tensor, g: kiln.Tensor) => tuning.forward(s, g, { tgtIsCausal: true });
  const held = batch(null, 64);
  const first = kiln.tidy(() => loss(run, held).item());
  const opt = new optim.AdamW(tuning.trainableParameters(), { lr: 0.1 });
  for (let i = 0; i < 60; i++) {
    kiln.tidy(() => {
      loss(run, batch(null, 32)).backward();
      opt.step();
      opt.zeroGrad();
    });
  }
  const last = kiln.tidy(() => loss(run, held).item());
  t.ok(last < first / 20, `held-out loss with only the prompt training: ${first.toFixed(3)} -> ${last.toFixed(4)}`);
  t.ok(params.every((p, i) => maxAbsDiff(values(p), Array.from(frozen[i])) === 0), 'every weight of the model bit-identical');
});
