// Transformer layers against references written out in JavaScript (post- and pre-norm, relu and
// gelu, masks), the encoder/decoder stacks and the full Transformer, and positional encodings.
import t from 'tap';
import * as kiln from '../../lib/index';
import * as nn from '../../lib/nn';
import { values } from '../helpers/gradcheck';
import { randomTensor } from '../helpers/gradcheck';
import { Mat, MaskFn, add, blockIf, geluErf, layerNormRows, linear, mapMat, mat, mats, maxDiff, mhaRef } from './ref';

const T = (x: Mat) => kiln.tensor([x], { dtype: 'float64' });
const ln = (m: nn.LayerNorm, x: Mat) => layerNormRows(x, values(m.weight!), values(m.bias!), m.eps);
/** Attention of one batch element b through module m, on JS matrices. */
const attn = (m: nn.MultiheadAttention, q: Mat, kv: Mat, b: number, mask: MaskFn = () => 0) =>
  mhaRef(m, T(q), T(kv), T(kv), (_b, h, i, j) => mask(b, h, i, j)).out[0];

function ffRef(l: nn.TransformerEncoderLayer | nn.TransformerDecoderLayer, x: Mat): Mat {
  const h = linear(x, mat(l.linear1.weight), values(l.linear1.bias!));
  const a = mapMat(h, (v) => (l.activation === 'gelu' ? geluErf(v) : Math.max(v, 0)));
  return linear(a, mat(l.linear2.weight), values(l.linear2.bias!));
}

function encoderRef(l: nn.TransformerEncoderLayer, src: kiln.Tensor, mask: MaskFn = () => 0): Mat[] {
  return mats(src).map((x, b) => {
    if (l.normFirst) {
      const x1 = add(x, attn(l.selfAttn, ln(l.norm1, x), ln(l.norm1, x), b, mask));
      return add(x1, ffRef(l, ln(l.norm2, x1)));
    }
    const x1 = ln(l.norm1, add(x, attn(l.selfAttn, x, x, b, mask)));
    return ln(l.norm2, add(x1, ffRef(l, x1)));
  });
}

function decoderRef(l: nn.TransformerDecoderLayer, tgt: kiln.Tensor, memory: kiln.Tensor, selfMask: MaskFn, crossMask: MaskFn): Mat[] {
  const mems = mats(memory);
  return mats(tgt).map((x, b) => {
    const sa = (h: Mat) => attn(l.selfAttn, h, h, b, selfMask);
    const ca = (h: Mat) => attn(l.multiheadAttn, h, mems[b], b, crossMask);
    if (l.normFirst) {
      const x1 = add(x, sa(ln(l.norm1, x)));
      const x2 = add(x1, ca(ln(l.norm2, x1)));
      return add(x2, ffRef(l, ln(l.norm3, x2)));
    }
    const x1 = ln(l.norm1, add(x, sa(x)));
    const x2 = ln(l.norm2, add(x1, ca(x1)));
    return ln(l.norm3, add(x2, ffRef(l, x2)));
  });
}

const opts = (o: nn.TransformerLayerOptions = {}): nn.TransformerLayerOptions => ({ dimFeedforward: 12, dtype: 'float64', ...o });

t.test('TransformerEncoderLayer: post-norm and pre-norm, relu and gelu, with masks', async (t) => {
  kiln.manualSeed(10);
  const src = randomTensor([2, 5, 8], 1);
  const pad = [[false, false, false, true, true], [false, false, false, false, false]];
  const kpm = kiln.tensor(pad);
  for (const normFirst of [false, true]) {
    for (const activation of ['relu', 'gelu'] as const) {
      const layer = new nn.TransformerEncoderLayer(8, 2, opts({ normFirst, activation })).eval();
      const name = `normFirst=${normFirst}, ${activation}`;
      t.ok(maxDiff(mats(layer.forward(src)), encoderRef(layer, src)) < 1e-10, name);
      const masked = layer.forward(src, { srcKeyPaddingMask: kpm, isCausal: true });
      t.ok(maxDiff(mats(masked), encoderRef(layer, src, blockIf((b, _h, i, j) => pad[b][j] || j > i))) < 1e-10, `${name}, masked`);
    }
  }
  const l = new nn.TransformerEncoderLayer(8, 2);
  t.same(l.namedParameters().map(([n]) => n), [
    'selfAttn.inProjWeight', 'selfAttn.inProjBias', 'selfAttn.outProj.weight', 'selfAttn.outProj.bias',
    'linear1.weight', 'linear1.bias', 'linear2.weight', 'linear2.bias', 'norm1.weight', 'norm1.bias', 'norm2.weight', 'norm2.bias',
  ]);
  t.equal(l.linear1.outFeatures, 2048, 'default feed-forward size like PyTorch');
  t.throws(() => new nn.TransformerEncoderLayer(8, 2, { activation: 'tanh' as 'relu' }), kiln.ValueError);
});

t.test('dropout is active in training mode and off in eval mode', async (t) => {
  kiln.manualSeed(11);
  const layer = new nn.TransformerEncoderLayer(8, 2, opts({ dropout: 0.5 }));
  const src = randomTensor([1, 4, 8], 2);
  t.notSame(values(layer.forward(src)), values(layer.forward(src)), 'training: two passes differ');
  layer.eval();
  t.same(values(layer.forward(src)), values(layer.forward(src)));
});

t.test('TransformerDecoderLayer: causal self-attention, cross-attention with memory padding', async (t) => {
  kiln.manualSeed(12);
  const tgt = randomTensor([2, 4, 8], 3), memory = randomTensor([2, 6, 8], 4);
  const mpad = [[false, false, false, false, false, true], [false, false, true, true, true, true]];
  for (const normFirst of [false, true]) {
    const layer = new nn.TransformerDecoderLayer(8, 4, opts({ normFirst })).eval();
    const out = layer.forward(tgt, memory, { tgtIsCausal: true, memoryKeyPaddingMask: kiln.tensor(mpad) });
    t.same(out.shape, [2, 4, 8]);
    const ref = decoderRef(layer, tgt, memory, blockIf((_b, _h, i, j) => j > i), blockIf((b, _h, _i, j) => mpad[b][j]));
    t.ok(maxDiff(mats(out), ref) < 1e-10, `normFirst=${normFirst}`);
  }
});

t.test('encoder and decoder stacks: layers in order, then the final norm', async (t) => {
  kiln.manualSeed(13);
  const first = new nn.TransformerEncoderLayer(8, 2, opts({ dropout: 0 }));
  const enc = new nn.TransformerEncoder(first, 3, { norm: new nn.LayerNorm(8, { dtype: 'float64' }) });
  t.equal(enc.layers.at(0), first, 'the given layer is layer 0');
  const l1 = enc.layers.at(1);
  t.equal(l1.linear1.outFeatures, 12, 'later layers copy its configuration');
  t.notSame(values(l1.linear1.weight), values(first.linear1.weight), 'with their own weights');
  const src = randomTensor([2, 5, 8], 5);
  let x = src;
  for (const l of enc.layers) x = l.forward(x, { isCausal: true });
  t.ok(maxDiff(values(enc.forward(src, { isCausal: true })), values((enc.norm as nn.LayerNorm).forward(x))) < 1e-12);
  const dec = new nn.TransformerDecoder((i) => new nn.TransformerDecoderLayer(8, 2, opts({ dropout: 0, dimFeedforward: 4 + i })), 2);
  t.same([...dec.layers].map((l) => l.linear1.outFeatures), [4, 5], 'a factory builds each layer');
  const tgt = randomTensor([2, 3, 8], 6);
  const y = dec.layers.at(1).forward(dec.layers.at(0).forward(tgt, x), x);
  t.ok(maxDiff(values(dec.forward(tgt, x)), values(y)) < 1e-12);
  t.throws(() => new nn.TransformerEncoder(first, 0), kiln.ValueError);
});

t.test('Transformer: encoder-decoder composition, subsequent mask, xavier init, gradients', async (t) => {
  kiln.manualSeed(14);
  const model = new nn.Transformer({ dModel: 8, nHead: 2, numEncoderLayers: 2, numDecoderLayers: 2, dimFeedforward: 16, dropout: 0, dtype: 'float64' });
  const src = randomTensor([2, 6, 8], 7), tgt = randomTensor([2, 4, 8], 8);
  const mask = nn.Transformer.generateSquareSubsequentMask(4, { dtype: 'float64' });
  t.same(mask.toArray(), [[0, -Infinity, -Infinity, -Infinity], [0, 0, -Infinity, -Infinity], [0, 0, 0, -Infinity], [0, 0, 0, 0]]);
  const out = model.forward(src, tgt, { tgtMask: mask });
  t.same(out.shape, [2, 4, 8]);
  const viaParts = model.decoder.forward(tgt, model.encoder.forward(src), { tgtIsCausal: true });
  t.ok(maxDiff(values(out), values(viaParts)) < 1e-12, 'float subsequent mask = tgtIsCausal');
  const w = values(model.encoder.layers.at(0).selfAttn.inProjWeight!);
  const bound = Math.sqrt(6 / (8 + 24));
  t.ok(w.every((v) => Math.abs(v) <= bound), 'matrices start xavier-uniform');
  t.ok(model.namedParameters().some(([n]) => n === 'decoder.layers.1.multiheadAttn.outProj.weight'));
  t.ok(model.namedParameters().some(([n]) => n === 'encoder.norm.weight'));
  out.sum().backward();
  const missing = model.namedParameters().filter(([, p]) => !p.grad).map(([n]) => n);
  t.same(missing, [], 'every parameter gets a gradient');
});

t.test('positional encodings: sinusoidal values, offsets, layouts; learned table', async (t) => {
  const pe = new nn.SinusoidalPositionalEncoding(6, { maxLen: 10, dtype: 'float64' });
  const table = mat(pe.pe);
  const freq = (i: number) => Math.exp((-i * Math.log(10000)) / 6);
  t.ok(maxDiff(table[3], [Math.sin(3 * freq(0)), Math.cos(3 * freq(0)), Math.sin(3 * freq(2)), Math.cos(3 * freq(2)), Math.sin(3 * freq(4)), Math.cos(3 * freq(4))]) < 1e-12);
  t.notOk(pe.stateDict().has('pe'), 'the fixed table is not saved');
  const x = randomTensor([2, 3, 6], 9);
  const y = pe.forward(x, { offset: 4 });
  t.ok(maxDiff(mats(y)[1], add(mats(x)[1], table.slice(4, 7))) < 1e-12);
  const seqFirst = new nn.SinusoidalPositionalEncoding(6, { maxLen: 10, batchFirst: false, dtype: 'float64' });
  t.ok(maxDiff(values(seqFirst.forward(x.transpose(0, 1)).transpose(0, 1).contiguous()), values(pe.forward(x))) < 1e-12);
  t.throws(() => pe.forward(x, { offset: 8 }), { name: 'ValueError', message: /positions 8\.\.10 exceed maxLen 10/ });
  const odd = new nn.SinusoidalPositionalEncoding(5, { maxLen: 4 });
  t.same(odd.pe.shape, [4, 5]);

  const learned = new nn.LearnedPositionalEmbedding(8, 6, { dtype: 'float64' });
  const z = learned.forward(x, { offset: 2 });
  t.ok(maxDiff(mats(z)[0], add(mats(x)[0], mat(learned.weight).slice(2, 5))) < 1e-12);
  z.sum().backward();
  t.same(mat(learned.weight.grad!).map((r) => r[0]), [0, 0, 2, 2, 2, 0, 0, 0], 'only the used rows get gradients');
  t.throws(() => learned.forward(randomTensor([1, 9, 6], 1)), kiln.ValueError);
});
