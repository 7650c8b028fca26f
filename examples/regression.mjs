// Fits a two-layer MLP to y = sin(3x) * x on [-2, 2] with kiln's tensors and autograd only
// (no nn module): the forward pass, backward(), and a plain SGD-with-momentum update in place.
// Run (after `npm install`): node examples/regression.mjs
import * as kiln from 'kiln';

kiln.manualSeed(0);
const n = 512, hidden = 64;
const x = kiln.linspace(-2, 2, n).unsqueeze(1);
const y = kiln.tidy(() => x.mul(3).sin().mul(x));

const w1 = kiln.randn([1, hidden]).mul(1.0).requiresGrad_();
const b1 = kiln.zeros([hidden], { requiresGrad: true });
const w2 = kiln.randn([hidden, 1]).mul(1 / Math.sqrt(hidden)).requiresGrad_();
const b2 = kiln.zeros([1], { requiresGrad: true });
const params = [w1, b1, w2, b2];
const velocity = params.map((p) => kiln.zerosLike(p));

const lr = 0.05, momentum = 0.9;
const t0 = Date.now();
for (let step = 1; step <= 2000; step++) {
  const loss = kiln.tidy(() => x.matmul(w1).add(b1).tanh().matmul(w2).add(b2).sub(y).square().mean());
  loss.backward();
  kiln.noGrad(() => {
    params.forEach((p, i) => {
      velocity[i].mul_(momentum).add_(p.grad);
      p.sub_(velocity[i], lr);
      p.grad.zero_();
    });
  });
  if (step === 1 || step % 400 === 0) console.log(`step ${String(step).padStart(4)}  mse ${loss.item().toFixed(5)}`);
  loss.dispose();
}
const pred = kiln.noGrad(() => kiln.tidy(() => kiln.tensor([[0.5], [1.5]]).matmul(w1).add(b1).tanh().matmul(w2).add(b2)));
const want = [0.5, 1.5].map((v) => Math.sin(3 * v) * v);
console.log(`f(0.5) = ${pred.toArray()[0][0].toFixed(3)} (true ${want[0].toFixed(3)}), f(1.5) = ${pred.toArray()[1][0].toFixed(3)} (true ${want[1].toFixed(3)})`);
console.log(`trained in ${((Date.now() - t0) / 1000).toFixed(1)} s; live tensors: ${kiln.memory().tensors}`);
