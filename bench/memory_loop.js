#!/usr/bin/env node
// Process memory (RSS) over a long synchronous training loop written as the README shows (tidy +
// dispose, no await), the way a user sees it in `top`: a small GPT (2 layers, 32 wide) for 5,000
// steps, once training only and once also evaluating a forward pass per step with autograd on whose
// graph is dropped without backward. Reports RSS at step 100, the most after it, and the per-step
// time; writes bench/results/memory.json.
//   node bench/memory_loop.js [--steps=5000]
'use strict';
const fs = require('fs');
const path = require('path');
const kiln = require('../dist');

const stepsArg = process.argv.slice(2).find((a) => a.startsWith('--steps='));
const steps = stepsArg ? Number(stepsArg.slice(8)) : 5000;
const mb = () => process.memoryUsage().rss / 2 ** 20;

function run(dropGraph) {
  kiln.manualSeed(0);
  const model = new kiln.nn.GPT({ vocabSize: 64, blockSize: 16, nLayer: 2, nHead: 2, nEmbd: 32 });
  const opt = new kiln.optim.AdamW(model.parameters(), { lr: 1e-3 });
  const x = kiln.randint(0, 64, [8, 16]);
  const y = kiln.randint(0, 64, [8, 16]);
  let rssAt100 = 0, maxAfter = 0;
  const t0 = process.hrtime.bigint();
  for (let step = 1; step <= steps; step++) {
    const loss = kiln.tidy(() => model.forward(x, y).loss);
    loss.backward();
    opt.step();
    opt.zeroGrad();
    loss.dispose();
    if (dropGraph) kiln.tidy(() => { model.forward(x, y); });
    if (step === 100) rssAt100 = mb();
    if (step > 100) maxAfter = Math.max(maxAfter, mb());
  }
  const msPerStep = Number(process.hrtime.bigint() - t0) / 1e6 / steps;
  const end = { rss: mb(), ...kiln.memory() };
  kiln.dispose([x, y, ...model.parameters()]);
  return { dropGraph, steps, rssAt100MB: rssAt100, maxRssAfterMB: maxAfter, growthMB: maxAfter - rssAt100, msPerStep, end };
}

const results = [run(false), run(true)];
console.log('| loop | RSS at step 100 | most RSS after | growth | ms/step |');
console.log('| --- | --- | --- | --- | --- |');
for (const r of results) {
  console.log(`| ${r.dropGraph ? 'training + a dropped graph per step' : 'training'} | ${r.rssAt100MB.toFixed(0)} MB | ` +
    `${r.maxRssAfterMB.toFixed(0)} MB | ${r.growthMB.toFixed(0)} MB | ${r.msPerStep.toFixed(2)} |`);
}
const out = path.join(__dirname, 'results', 'memory.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), node: process.version, results }, null, 2));
console.log(`wrote ${path.relative(process.cwd(), out)}`);
