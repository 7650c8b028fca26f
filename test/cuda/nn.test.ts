// nn on a GPU (skipped without one, like all of test/cuda): Module.to('cuda') moves parameters,
// gradients and buffers in place, a GPT gives the same loss, gradients and greedy tokens on CUDA
// as on the CPU, and its bf16 autocast loss and gradients agree with flash attention on and off.
import t from 'tap';
import * as kiln from '../../lib/index';
import * as nn from '../../lib/nn';
import { values } from '../helpers/gradcheck';
import { maxDiff } from '../nn/ref';

if (!kiln.cuda.isAvailable()) {
  t.plan(0, kiln.buildInfo().cuda ? 'no CUDA device visible' : 'kiln was built without CUDA');
} else {
  t.test('to("cuda") and back keeps Parameter objects and values', async (t) => {
    const m = new nn.GPT({ vocabSize: 13, blockSize: 8, nLayer: 1, nHead: 2, nEmbd: 8 });
    const w = m.blocks.at(0).attn.inProjWeight!;
    const vals = values(w);
    kiln.tidy(() => m.forward(kiln.tensor([[1, 2, 3]])).logits.sum().backward());
    m.to('cuda');
    t.equal(m.blocks.at(0).attn.inProjWeight, w);
    t.equal(w.device, 'cuda:0');
    t.equal(w.grad!.device, 'cuda:0');
    t.ok(w.isLeaf && w.requiresGrad);
    m.cpu();
    t.equal(w.device, 'cpu');
    t.same(values(w), vals);
    m.dispose();
  });

  t.test('GPT on CUDA matches the CPU: loss, gradients, cached greedy generation', async (t) => {
    kiln.cuda.setAllowTF32(false);
    kiln.manualSeed(0);
    const cfg = { vocabSize: 50, blockSize: 16, nLayer: 2, nHead: 4, nEmbd: 32 };
    const cpu = new nn.GPT(cfg);
    const gpu = new nn.GPT(cfg).cuda();
    gpu.loadStateDict(cpu.stateDict());
    const idx = kiln.randint(0, 50, [3, 12]), tgt = kiln.randint(0, 50, [3, 12]);
    const a = cpu.forward(idx, tgt), b = gpu.forward(idx.cuda(), tgt.cuda());
    t.ok(maxDiff(values(a.logits), values(b.logits)) < 1e-4);
    t.ok(Math.abs(a.loss!.item() - b.loss!.item()) < 1e-5);
    a.loss!.backward();
    b.loss!.backward();
    const gc = cpu.namedParameters(), gg = new Map(gpu.namedParameters());
    for (const [n, p] of gc) t.ok(maxDiff(values(p.grad!), values(gg.get(n)!.grad!)) < 1e-4, n);
    const prompt = idx.narrow(1, 0, 4);
    const ref = cpu.generate(prompt, 20, { greedy: true });
    t.same(gpu.generate(prompt.cuda(), 20, { greedy: true }).cpu().toArray(), ref.toArray());
    t.same(gpu.generate(prompt.cuda(), 20, { greedy: true, useCache: false }).cpu().toArray(), ref.toArray());
    cpu.dispose();
    gpu.dispose();
  });

  t.test('a bf16 autocast GPT step agrees with flash attention on and off', async (t) => {
    kiln.manualSeed(9);
    const gpt = new nn.GPT({ vocabSize: 97, blockSize: 128, nLayer: 2, nHead: 4, nEmbd: 256 });
    gpt.to({ device: 'cuda' });
    const x = kiln.randint(0, 97, [4, 128], { device: 'cuda' }), y = kiln.randint(0, 97, [4, 128], { device: 'cuda' });
    const run = () => {
      gpt.zeroGrad();
      const loss = kiln.autocast({ dtype: 'bfloat16' }, () => gpt.forward(x, y).loss);
      loss.backward();
      return { loss: loss.item(), grad: values(gpt.blocks.at(0).attn.inProjWeight!.grad!.cpu()) };
    };
    const fused = run();
    kiln.cuda.setFlashAttention(false);
    let plain;
    try {
      plain = run();
    } finally {
      kiln.cuda.setFlashAttention(true);
    }
    t.ok(Math.abs(fused.loss - plain.loss) < 1e-2 * plain.loss, `loss ${fused.loss} vs ${plain.loss}`);
    const scale = Math.max(...plain.grad.map(Math.abs));
    t.ok(maxDiff(fused.grad, plain.grad) < 5e-2 * scale, 'first block qkv gradient within bf16 noise');
  });
}
