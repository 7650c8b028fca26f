// Binary classification: an MLP learns to separate two interleaved half-moons with binary
// cross-entropy (on logits), trained by kiln's Trainer with a validation set, then draws its
// decision regions in the terminal.
// Run (after `npm install`): node examples/two-moons.mjs
import * as kiln from 'kiln';

const { nn, optim, data, train } = kiln;
kiln.manualSeed(0);

/** n points of two half-moons with Gaussian noise: x [n, 2] and labels y [n, 1] (0 or 1). */
function moons(n, noise, seed) {
  const rng = new data.Rng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  const x = new Float32Array(2 * n), y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const upper = i % 2 === 0, a = Math.PI * rng.next();
    x[2 * i] = (upper ? Math.cos(a) : 1 - Math.cos(a)) + noise * gauss();
    x[2 * i + 1] = (upper ? Math.sin(a) : 0.5 - Math.sin(a)) + noise * gauss();
    y[i] = upper ? 0 : 1;
  }
  return [kiln.tensor(x, { shape: [n, 2] }), kiln.tensor(y, { shape: [n, 1] })];
}

const [xTrain, yTrain] = moons(1000, 0.15, 1);
const [xVal, yVal] = moons(400, 0.15, 2);
const model = new nn.Sequential(new nn.Linear(2, 32), new nn.ReLU(), new nn.Linear(32, 32), new nn.ReLU(), new nn.Linear(32, 1));
const bce = (m, [x, y]) => nn.bceWithLogits(m.forward(x), y);
const accuracy = (x, y) => kiln.noGrad(() => kiln.tidy(() => model.forward(x).gt(0).to('float32').eq(y).to('float32').mean().item()));

const trainer = new train.Trainer({
  model,
  optimizer: new optim.AdamW(model.parameters(), { lr: 1e-2 }),
  scheduler: (o, total) => new optim.CosineAnnealingLR(o, { tMax: total, etaMin: 1e-4 }),
  evalInterval: 50,
  progress: 'log',
  logInterval: 50,
});
const result = await trainer.fit({
  train: new data.DataLoader(new data.TensorDataset(xTrain, yTrain), { batchSize: 50, shuffle: true, seed: 0 }),
  val: new data.DataLoader(new data.TensorDataset(xVal, yVal), { batchSize: 200 }),
  loss: bce,
  epochs: 15,
});
console.log(`validation loss ${result.initialValLoss.toFixed(3)} -> ${result.valLoss.toFixed(3)}; accuracy ${(100 * accuracy(xVal, yVal)).toFixed(1)}% on ${xVal.shape[0]} new points`);

// Decision regions: '.' where the model says moon 0, '#' where it says moon 1; 'o' and 'x' mark some points.
const W = 60, H = 20, x0 = -1.5, x1 = 2.5, y0 = -1, y1 = 1.5;
const grid = [];
for (let r = 0; r < H; r++) for (let c = 0; c < W; c++) grid.push(x0 + ((c + 0.5) * (x1 - x0)) / W, y1 - ((r + 0.5) * (y1 - y0)) / H);
const side = kiln.noGrad(() => kiln.tidy(() => model.forward(kiln.tensor(Float32Array.from(grid), { shape: [W * H, 2] })).gt(0).toArray()));
const rows = Array.from({ length: H }, (_, r) => side.slice(r * W, (r + 1) * W).map((v) => (v[0] ? '#' : '.')));
const pts = xVal.toArray(), labels = yVal.toArray();
for (let i = 0; i < 60; i++) {
  const [px, py] = pts[i];
  const c = Math.floor(((px - x0) / (x1 - x0)) * W), r = Math.floor(((y1 - py) / (y1 - y0)) * H);
  if (r >= 0 && r < H && c >= 0 && c < W) rows[r][c] = labels[i][0] ? 'x' : 'o';
}
console.log(rows.map((r) => r.join('')).join('\n'));
