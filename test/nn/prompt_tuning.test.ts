// Prompt tuning and GPT.forward's embedding inputs: prefixEmbeds equal to token embeddings give the
// logits of those tokens placed before the input; inputsEmbeds equal wte(idx) give forward(idx); a
// soft prompt trained on a frozen GPT recovers a task the model was trained to do only after a task
// token, while every weight of the model stays bit-identical; generation works with a soft prompt,
// with and without the KV cache; bad shapes are errors.
import t from 'tap';
import * as kiln from '../../lib';
import { nn, optim } from '../../lib';

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
