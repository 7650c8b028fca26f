// Hugging Face GPT-2 folders: GPT.fromPretrained on a tiny GPT-2 written in the layout transformers
// saves (and in the original hub layout) gives the logits and loss of the reference implementation
// in test/fixtures/gpt2 (make_fixture.py: plain PyTorch following modeling_gpt2.py); savePretrained
// writes that layout back bit for bit; export then import is the identity; bad folders get one clear
// error; loadStateDict's keyMap loads other layouts.
import t, { Test } from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as kiln from '../../lib';
import { nn, io } from '../../lib';

const FIX = path.join(__dirname, '..', 'fixtures', 'gpt2');
const expected = JSON.parse(fs.readFileSync(path.join(FIX, 'expected.json'), 'utf8')) as { input_ids: number[][]; logits: number[][][]; loss: number };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-gpt2-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

function parity(t: Test, model: nn.GPT, what: string): void {
  const ids = kiln.tensor(expected.input_ids, { dtype: 'int64' });
  const out = model.forward(ids.narrow(1, 0, ids.shape[1]), null);
  const got = out.logits.dataSync() as Float32Array;
  const want = expected.logits.flat(2);
  let maxDiff = 0, maxAbs = 0;
  want.forEach((v, i) => {
    maxDiff = Math.max(maxDiff, Math.abs(got[i] - v));
    maxAbs = Math.max(maxAbs, Math.abs(v));
  });
  t.ok(maxDiff / maxAbs < 1e-4, `${what}: logits within 1e-4 relative (max abs diff ${maxDiff.toExponential(2)} of ${maxAbs.toFixed(3)})`);
  const inputs = ids.narrow(1, 0, ids.shape[1] - 1).contiguous(), targets = ids.narrow(1, 1, ids.shape[1] - 1).contiguous();
  const loss = model.forward(inputs, targets).loss!.item();
  t.ok(Math.abs(loss - expected.loss) / expected.loss < 1e-5, `${what}: loss ${loss} vs ${expected.loss}`);
}

t.test('the transformers layout and the original hub layout load and match the reference', async (t) => {
  const a = nn.GPT.fromPretrained(path.join(FIX, 'tiny'));
  t.same(a.config, { vocabSize: 64, blockSize: 16, nLayer: 2, nHead: 4, nEmbd: 32, layerNormEps: 1e-5, dropout: 0, bias: true });
  parity(t, a, 'transformer.* names');
  const b = nn.GPT.fromPretrained(path.join(FIX, 'old'));
  parity(t, b, 'original names with the legacy attn.bias buffers');
  t.equal(a.lmHead.weight, a.wte.weight, 'lm_head stays tied to wte');
});

t.test('savePretrained writes the same layout, bit for bit; export then import is the identity', async (t) => {
  const a = nn.GPT.fromPretrained(path.join(FIX, 'tiny'));
  const dir = path.join(tmp, 'out');
  a.savePretrained(dir);
  const mine = io.loadSafetensors(path.join(dir, 'model.safetensors'));
  const ref = io.loadSafetensors(path.join(FIX, 'tiny', 'model.safetensors'));
  t.same([...mine.tensors.keys()].sort(), [...ref.tensors.keys()].sort(), 'the same names (no lm_head: tied)');
  for (const [k, v] of ref.tensors) {
    const w = mine.tensors.get(k)!;
    t.same(w.shape, v.shape, `${k} shape`);
    t.ok(kiln.tidy(() => w.sub(v).abs().max().item()) === 0, `${k} bit for bit`);
  }
  t.equal(mine.metadata.format, 'pt');
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  t.match(config, { architectures: ['GPT2LMHeadModel'], model_type: 'gpt2', vocab_size: 64, n_positions: 16, n_embd: 32, n_layer: 2, n_head: 4, activation_function: 'gelu_new', tie_word_embeddings: true });
  const b = nn.GPT.fromPretrained(dir);
  for (const [k, v] of a.stateDict()) t.ok(kiln.tidy(() => v.sub(b.stateDict().get(k)!).abs().max().item()) === 0, `${k} round trip`);

  // A kiln-trained GPT (random weights, another shape) round trips too.
  kiln.manualSeed(1);
  const c = new nn.GPT({ vocabSize: 20, blockSize: 8, nLayer: 1, nHead: 2, nEmbd: 8 });
  c.savePretrained(path.join(tmp, 'c'));
  const d = nn.GPT.fromPretrained(path.join(tmp, 'c'));
  const x = kiln.randint(0, 20, [2, 8]);
  t.ok(kiln.allclose(c.forward(x).logits, d.forward(x).logits, 0, 0), 'same logits after the round trip');
});

t.test('bad folders get one clear error', async (t) => {
  t.throws(() => nn.GPT.fromPretrained(path.join(tmp, 'nope')), { name: 'ValueError', message: /is not a folder/ });
  const noWeights = path.join(tmp, 'noweights');
  fs.mkdirSync(noWeights);
  fs.copyFileSync(path.join(FIX, 'tiny', 'config.json'), path.join(noWeights, 'config.json'));
  fs.writeFileSync(path.join(noWeights, 'pytorch_model.bin'), 'x');
  t.throws(() => nn.GPT.fromPretrained(noWeights), { name: 'ValueError', message: /has no model\.safetensors \(pytorch_model\.bin is a pickle/ });
  const variant = (name: string, patch: Record<string, unknown>) => {
    const dir = path.join(tmp, name);
    fs.mkdirSync(dir);
    const cfg = { ...JSON.parse(fs.readFileSync(path.join(FIX, 'tiny', 'config.json'), 'utf8')), ...patch };
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
    fs.copyFileSync(path.join(FIX, 'tiny', 'model.safetensors'), path.join(dir, 'model.safetensors'));
    return dir;
  };
  t.throws(() => nn.GPT.fromPretrained(variant('wide', { n_embd: 64 })), { name: 'FormatError', message: /size mismatch for wte\.weight: shape \[64, 32\] in the state dict, \[64, 64\] in the model/ }, 'a config that does not match the weights');
  t.throws(() => nn.GPT.fromPretrained(variant('deep', { n_layer: 3 })), { name: 'FormatError', message: /does not match .*config.json \(n_layer 3.*missing keys: blocks\.2\./ });
  t.throws(() => nn.GPT.fromPretrained(variant('shallow', { n_layer: 1 })), { name: 'FormatError', message: /unexpected tensor h\.1\.\S+ for a GPT-2 of 1 layers/ });
  t.throws(() => nn.GPT.fromPretrained(variant('relu', { activation_function: 'relu' })), { name: 'ValueError', message: /activation_function "relu" is not supported/ });
  t.throws(() => nn.GPT.fromPretrained(variant('llama', { model_type: 'llama' })), { message: /model_type is "llama"; kiln reads GPT-2 models/ });
  const badJson = variant('json', {});
  fs.writeFileSync(path.join(badJson, 'config.json'), '{ not json');
  t.throws(() => nn.GPT.fromPretrained(badJson), { name: 'FormatError', message: /config\.json is not valid JSON/ });
  t.throws(() => new nn.GPT({ vocabSize: 4, blockSize: 4, nLayer: 1, nHead: 1, nEmbd: 4, bias: false }).savePretrained(path.join(tmp, 'nobias')), { message: /bias: false has no GPT-2 layout/ });
});

t.test('loadStateDict: keyMap renames keys; shape mismatches are named', async (t) => {
  const a = new nn.Linear(3, 2);
  const sd = new Map([['model.weight', kiln.ones([2, 3])], ['model.bias', kiln.zeros([2])], ['extra', kiln.ones([1])]]);
  a.loadStateDict(sd, { keyMap: (k) => (k.startsWith('model.') ? k.slice(6) : null) });
  t.same(Array.from(a.weight.dataSync()), [1, 1, 1, 1, 1, 1]);
  t.throws(() => a.loadStateDict(sd, { keyMap: () => 'weight' }), { name: 'ValueError', message: /keyMap maps both model\.weight and model\.bias to weight/ });
  t.throws(() => a.loadStateDict({ weight: kiln.ones([3, 2]), bias: kiln.zeros([2]) }), { name: 'ShapeError', message: /size mismatch for weight: shape \[3, 2\] in the state dict, \[2, 3\] in the model/ });
});
