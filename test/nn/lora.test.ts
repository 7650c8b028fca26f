// LoRA: an adapted GPT starts out computing what it did; training only the adapters lowers the loss
// while every base weight stays bit-identical; merged outputs equal unmerged ones; unmerge restores
// the weights; per-part q/k/v targets touch only their rows; adapters round trip through a state
// dict; bad targets are errors.
import t from 'tap';
import * as kiln from '../../lib';
import { nn, optim } from '../../lib';

const CFG = { vocabSize: 16, blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 16 };

/** A few SGD steps of the adapters on repeating x (so that B is no longer zero). */
function trainAdapters(model: nn.GPT, x: kiln.Tensor, steps: number): void {
  const opt = new optim.SGD(nn.lora.parameters(model), { lr: 0.5 });
  for (let i = 0; i < steps; i++) {
    model.forward(x, x).loss!.backward();
    opt.step();
    opt.zeroGrad();
  }
}

function snapshot(m: nn.Module): Map<string, Float32Array> {
  return new Map([...m.stateDict()].filter(([k]) => !/lora/i.test(k)).map(([k, v]) => [k, Float32Array.from(v.dataSync() as Float32Array)]));
}

t.test('train the adapters only: the loss falls, the base stays bit-identical, merge equals unmerged', async (t) => {
  kiln.manualSeed(3);
  const model = new nn.GPT(CFG);
  const x = kiln.randint(0, 16, [4, 8]), y = x;   // a task the frozen model cannot do: repeat the input
  const before = model.forward(x).logits;
  const base = snapshot(model);
  // lmHead too: the frozen tiny-init embedding alone bounds the logits too tightly to learn anything.
  const adapted = nn.lora.apply(model, { targets: ['attn.inProj', 'outProj', 'mlp.fc', 'lmHead'], rank: 4, alpha: 8 });
  t.same(adapted, ['blocks.0.attn.inProj', 'blocks.0.attn.outProj', 'blocks.0.mlp.fc', 'blocks.1.attn.inProj', 'blocks.1.attn.outProj', 'blocks.1.mlp.fc', 'lmHead']);
  t.ok(kiln.allclose(model.forward(x).logits, before, 0, 0), 'B starts at zero: the same logits');
  const trainable = model.parameters().filter((p) => p.requiresGrad);
  t.same(new Set(trainable), new Set(nn.lora.parameters(model)), 'only the adapters train');
  t.equal(nn.lora.parameters(model).length, 14);

  const opt = new optim.AdamW(nn.lora.parameters(model), { lr: 3e-2 });
  const first = model.forward(x, y).loss!.item();
  let last = first;
  for (let i = 0; i < 40; i++) {
    const loss = model.forward(x, y).loss!;
    last = loss.item();
    loss.backward();
    opt.step();
    opt.zeroGrad();
  }
  t.ok(last < first * 0.8, `the loss falls: ${first.toFixed(3)} -> ${last.toFixed(3)}`);
  const after = snapshot(model);
  for (const [k, v] of base) t.same(after.get(k), v, `${k} bit-identical`);

  t.throws(() => nn.lora.merge(model), { name: 'ValueError', message: /the adapter of lmHead cannot be merged: its weight is tied \(wte\.weight, lmHead\.weight\)/ });
});

t.test('merged outputs equal unmerged ones; unmerge restores the weights; adapters round trip', async (t) => {
  kiln.manualSeed(5);
  const model = new nn.GPT(CFG);
  const x = kiln.randint(0, 16, [4, 8]);
  const base = snapshot(model);
  const targets = ['attn.inProj', 'outProj', 'mlp.fc', 'mlp.proj'];
  nn.lora.apply(model, { targets, rank: 4, alpha: 8 });
  trainAdapters(model, x, 5);   // so that B is no longer zero
  const unmerged = model.forward(x).logits;
  nn.lora.merge(model);
  const merged = model.forward(x).logits;
  const diff = kiln.tidy(() => merged.sub(unmerged).abs().max().item());
  t.ok(diff < 1e-6, `merged logits equal unmerged ones (max abs diff ${diff.toExponential(2)})`);
  t.notSame(snapshot(model).get('blocks.0.mlp.fc.weight'), base.get('blocks.0.mlp.fc.weight'), 'merge changed the weight');
  nn.lora.unmerge(model);
  let restored = 0;
  for (const [k, v] of snapshot(model)) v.forEach((w, i) => (restored = Math.max(restored, Math.abs(w - base.get(k)![i]))));
  t.ok(restored < 1e-6, `unmerge restores the weights (max abs diff ${restored.toExponential(2)})`);
  t.ok(kiln.tidy(() => model.forward(x).logits.sub(unmerged).abs().max().item()) < 1e-6);

  // The adapters alone round trip into a fresh adapted model.
  const sd = nn.lora.stateDict(model);
  t.equal(sd.size, 16);
  t.ok([...sd.keys()].every((k) => /\.(lora|inProjLora)\.[AB]$/.test(k)));
  kiln.manualSeed(5);
  const twin = new nn.GPT(CFG);
  nn.lora.apply(twin, { targets, rank: 4, alpha: 8 });
  const r = twin.loadStateDict(sd, { strict: false });
  t.equal(r.unexpectedKeys.length, 0);
  t.ok(kiln.allclose(twin.forward(x).logits, unmerged, 0, 1e-6), 'the same outputs with the loaded adapters');

  nn.lora.mergeAndUnload(model);
  t.equal(nn.lora.adapters(model).length, 0);
  t.ok(kiln.tidy(() => model.forward(x).logits.sub(unmerged).abs().max().item()) < 1e-6, 'a plain model with the adapters folded in');
});

t.test('per-part q/k/v targets touch only their rows of the packed projection', async (t) => {
  kiln.manualSeed(4);
  const model = new nn.GPT({ ...CFG, nLayer: 1 });
  const w0 = Float32Array.from(model.blocks.at(0).attn.inProjWeight!.dataSync() as Float32Array);
  nn.lora.apply(model, { targets: ['attn.q', 'attn.v'], rank: 2 });
  const a = model.blocks.at(0).attn.inProjLora as nn.lora.InProjLoRA;
  t.same(a.parts, [0, 2]);
  t.same(a.B.shape, [32, 2]);
  const x = kiln.randint(0, 16, [2, 8]);
  trainAdapters(model, x, 3);
  nn.lora.merge(model);
  const w1 = model.blocks.at(0).attn.inProjWeight!.dataSync() as Float32Array;
  const E = 16 * 16;
  const changed = (from: number) => w0.subarray(from, from + E).some((v, i) => v !== w1[from + i]);
  t.ok(changed(0), 'q rows changed');
  t.notOk(changed(E), 'k rows bit-identical');
  t.ok(changed(2 * E), 'v rows changed');
});

t.test('bad targets and options are errors', async (t) => {
  const model = new nn.GPT({ ...CFG, nLayer: 1 });
  t.throws(() => nn.lora.apply(model, { targets: ['mlp.nope'] }), { name: 'ValueError', message: /targets "mlp\.nope" match no Linear layer/ });
  t.throws(() => nn.lora.apply(model, { targets: [] }), /non-empty array/);
  t.throws(() => nn.lora.apply(model, { targets: ['mlp.fc'], rank: 0 }), /rank must be a positive integer/);
  t.throws(() => nn.lora.apply(model, { targets: ['mlp.fc'], rank: 17 }), /rank 17 exceeds blocks\.0\.mlp\.fc's size/);
  nn.lora.apply(model, { targets: ['mlp.fc'] });
  t.throws(() => nn.lora.apply(model, { targets: ['mlp.fc'] }), /already has LoRA adapters/);
  t.throws(() => model.savePretrained('/tmp/kiln-lora-never'), /merge|mergeAndUnload/);
});

t.test('PEFT adapter folders: saveAdapter writes the layout PEFT uses for GPT-2, loadAdapter reads it back', async (t) => {
  const fs = await import('fs'), os = await import('os'), path = await import('path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-peft-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  kiln.manualSeed(6);
  const base = new nn.GPT(CFG);
  const baseSd = base.stateDict();
  const model = new nn.GPT(CFG);
  model.loadStateDict(baseSd);
  nn.lora.apply(model, { targets: ['attn.q', 'attn.v', 'outProj', 'mlp.fc'], rank: 2, alpha: 4 });
  const x = kiln.randint(0, 16, [2, 8]);
  trainAdapters(model, x, 3);
  nn.lora.saveAdapter(model, path.join(dir, 'a'), { baseModel: 'tiny-gpt2' });
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'a', 'adapter_config.json'), 'utf8'));
  t.match(cfg, { peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 2, lora_alpha: 4, fan_in_fan_out: true, bias: 'none', base_model_name_or_path: 'tiny-gpt2' });
  t.same(cfg.target_modules, ['transformer.h.0.attn.c_attn', 'transformer.h.0.attn.c_proj', 'transformer.h.0.mlp.c_fc', 'transformer.h.1.attn.c_attn', 'transformer.h.1.attn.c_proj', 'transformer.h.1.mlp.c_fc']);
  const saved = kiln.io.loadSafetensors(path.join(dir, 'a', 'adapter_model.safetensors')).tensors;
  t.same(saved.get('base_model.model.transformer.h.0.attn.c_attn.lora_A.weight')!.shape, [2, 16]);
  const B = saved.get('base_model.model.transformer.h.0.attn.c_attn.lora_B.weight')!;
  t.same(B.shape, [48, 2], 'c_attn\'s B covers q, k and v');
  t.ok(kiln.tidy(() => B.narrow(0, 16, 16).abs().max().item()) === 0, 'zero rows for k, which was not adapted');
  t.ok(kiln.tidy(() => B.narrow(0, 0, 16).abs().max().item()) > 0);
  t.same(saved.get('base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight')!.shape, [64, 2]);

  const fresh = new nn.GPT(CFG);
  fresh.loadStateDict(baseSd);
  const adapted = nn.lora.loadAdapter(fresh, path.join(dir, 'a'));
  t.same(adapted, ['blocks.0.attn.inProj', 'blocks.0.attn.outProj', 'blocks.0.mlp.fc', 'blocks.1.attn.inProj', 'blocks.1.attn.outProj', 'blocks.1.mlp.fc']);
  const diff = kiln.tidy(() => fresh.forward(x).logits.sub(model.forward(x).logits).abs().max().item());
  t.ok(diff < 1e-6, `the loaded adapters give the same logits (max abs diff ${diff.toExponential(2)})`);

  // Bad folders.
  t.throws(() => nn.lora.loadAdapter(new nn.GPT(CFG), path.join(dir, 'none')), { name: 'ValueError', message: /has no adapter_config\.json/ });
  fs.mkdirSync(path.join(dir, 'b'));
  fs.copyFileSync(path.join(dir, 'a', 'adapter_model.safetensors'), path.join(dir, 'b', 'adapter_model.safetensors'));
  fs.writeFileSync(path.join(dir, 'b', 'adapter_config.json'), JSON.stringify({ ...cfg, peft_type: 'IA3' }));
  t.throws(() => nn.lora.loadAdapter(new nn.GPT(CFG), path.join(dir, 'b')), { message: /peft_type is "IA3", not "LORA"/ });
  fs.writeFileSync(path.join(dir, 'b', 'adapter_config.json'), JSON.stringify({ ...cfg, r: 3 }));
  t.throws(() => nn.lora.loadAdapter(new nn.GPT(CFG), path.join(dir, 'b')), { name: 'ShapeError', message: /lora_A has shape \[2, 16\], the model needs \[3, 16\]/ });
  t.throws(() => nn.lora.saveAdapter(new nn.GPT(CFG), path.join(dir, 'c')), /no LoRA adapters/);
});
