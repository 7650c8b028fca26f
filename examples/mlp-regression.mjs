// Regression with kiln.nn: an MLP of nn.Linear layers learns f(x, y) = sin(2x) * cos(y) from noisy
// samples, with mini-batches from a DataLoader, mean squared error and Adam, in the training loop
// a PyTorch user writes (zeroGrad, forward, loss, backward, step). Prints the test error as it falls.
// Run (after `npm install`): node examples/mlp-regression.mjs
import * as kiln from 'kiln';

const { nn, optim, data } = kiln;
kiln.manualSeed(0);

/** n points uniform in [-2, 2]^2 and their targets (plus Gaussian noise of std `noise`). */
function samples(n, noise) {
  return kiln.tidy(() => {
    const x = kiln.rand([n, 2]).mul(4).sub(2);
    const [a, b] = x.split(1, 1);
    const y = a.mul(2).sin().mul(b.cos()).add(kiln.randn([n, 1]).mul(noise));
    return [x, y];
  });
}
const [xTrain, yTrain] = samples(2000, 0.05);
const [xTest, yTest] = samples(500, 0);

const model = new nn.Sequential(new nn.Linear(2, 64), new nn.Tanh(), new nn.Linear(64, 64), new nn.Tanh(), new nn.Linear(64, 1));
const optimizer = new optim.Adam(model.parameters(), { lr: 3e-3 });
const loader = new data.DataLoader(new data.TensorDataset(xTrain, yTrain), { batchSize: 64, shuffle: true, seed: 0 });
const testMse = () => kiln.noGrad(() => kiln.tidy(() => nn.mseLoss(model.forward(xTest), yTest).item()));

console.log(`MLP with ${model.numParameters()} parameters; test MSE before training: ${testMse().toFixed(4)} (target variance ${yTest.var().item().toFixed(4)})`);
const t0 = Date.now();
for (let epoch = 1; epoch <= 30; epoch++) {
  let sum = 0;
  for (const [x, y] of loader) {
    optimizer.zeroGrad();
    const loss = kiln.tidy(() => {
      const l = nn.mseLoss(model.forward(x), y);
      l.backward();
      return l.item();
    });
    optimizer.step();
    sum += loss;
    kiln.dispose([x, y]);
  }
  if (epoch % 5 === 0) console.log(`epoch ${String(epoch).padStart(2)}  train MSE ${(sum / loader.length).toFixed(4)}  test MSE ${testMse().toFixed(4)}`);
}
const probe = kiln.tensor([[0.5, 0], [-1, 1]]);
const pred = kiln.noGrad(() => model.forward(probe)).toArray().map((r) => r[0].toFixed(3));
console.log(`f(0.5, 0) = ${pred[0]} (true ${(Math.sin(1) * Math.cos(0)).toFixed(3)}), f(-1, 1) = ${pred[1]} (true ${(Math.sin(-2) * Math.cos(1)).toFixed(3)})`);
console.log(`trained in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
