// GPTForSequenceClassification: padding-aware pooling (a padded row gives the logits of the row
// alone), and a fine-tune on a generated task (does a row contain token 7?) reaching 90% held-out
// accuracy; bad arguments are errors.
import t from 'tap';
import * as kiln from '../../lib';
import { nn, optim, data } from '../../lib';

const CFG = { vocabSize: 16, blockSize: 12, nLayer: 2, nHead: 2, nEmbd: 32 };
const PAD = 0;

/** n rows of random tokens 1..15, lengths 4..12, padded with 0; label 1 when token 7 occurs. */
function make(rng: data.Rng, n: number): { ids: kiln.Tensor; labels: kiln.Tensor } {
  const ids = new Int32Array(n * 12), labels = new Int32Array(n);
  for (let b = 0; b < n; b++) {
    const len = 4 + Math.floor(rng.next() * 9);
    const has = rng.next() < 0.5;
    const at = Math.floor(rng.next() * len);
    for (let i = 0; i < len; i++) {
      let tok = 1 + Math.floor(rng.next() * 15);
      if (tok === 7 && !has) tok = 8;
      ids[b * 12 + i] = has && i === at ? 7 : tok;
    }
    labels[b] = has ? 1 : 0;
  }
  return { ids: kiln.tensor(ids, { shape: [n, 12], dtype: 'int64' }), labels: kiln.tensor(labels, { dtype: 'int64' }) };
}

t.test('padding-aware pooling', async (t) => {
  kiln.manualSeed(1);
  const clf = new nn.GPTForSequenceClassification(CFG, { numLabels: 3, padTokenId: PAD });
  const row = kiln.tensor([[3, 4, 5, 6, 0, 0, 0]], { dtype: 'int64' });
  const alone = clf.forward(row.narrow(1, 0, 4).contiguous()).logits;
  t.same(clf.forward(row).logits.shape, [1, 3]);
  t.ok(kiln.allclose(clf.forward(row).logits, alone, 0, 1e-6), 'the padded row gives the logits of the row alone');
  t.ok(kiln.allclose(clf.forward(row, null, { lengths: [4] }).logits, alone, 0, 1e-6), 'so do explicit lengths');
  t.throws(() => clf.forward(kiln.tensor([[0, 1]], { dtype: 'int64' })), /row 0 starts with the padding token 0/);
  t.throws(() => clf.forward(row, kiln.tensor([1, 2], { dtype: 'int64' })), { name: 'ShapeError', message: /labels must be \[1\]/ });
  t.throws(() => new nn.GPTForSequenceClassification(CFG, { numLabels: 0 }), /numLabels must be a positive integer/);
  t.throws(() => new nn.GPTForSequenceClassification(CFG, { numLabels: 2, padTokenId: 99 }), /padTokenId must be a token id/);
});

t.test('a fine-tune on a generated task reaches 90% held-out accuracy', async (t) => {
  kiln.manualSeed(2);
  const rng = new data.Rng(3);
  const clf = new nn.GPTForSequenceClassification(CFG, { numLabels: 2, padTokenId: PAD });
  const opt = new optim.AdamW(clf.parameters(), { lr: 3e-3 });
  for (let step = 0; step < 150; step++) {
    kiln.tidy(() => {
      const { ids, labels } = make(rng, 32);
      clf.forward(ids, labels).loss!.backward();
      opt.step();
      opt.zeroGrad();
    });
  }
  clf.eval();
  const test = make(new data.Rng(99), 256);
  const pred = kiln.noGrad(() => clf.forward(test.ids).logits.argmax(-1));
  const acc = kiln.tidy(() => pred.eq(test.labels).to('float32').mean().item());
  t.ok(acc >= 0.9, `held-out accuracy ${(acc * 100).toFixed(1)}%`);
});
