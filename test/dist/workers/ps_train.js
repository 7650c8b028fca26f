// A parameter-server run for test/dist/parameter_server.test.ts: a small MLP regression (seed 11)
// trained with SGD, ranks 0..servers-1 serving and the others working, each worker on its
// contiguous share of every global batch. A server prints its report and writes its model after
// serve() (`${out}.${rank}`: its shard trained, the rest as initialized); a worker prints its
// evaluation loss at its first pull (with the version), a line per step and its final evaluation
// loss, and writes the final parameters (`${out}.${rank}`). With `plain`, one process trains on the
// whole global batches without servers: the reference a synchronous run must equal. Delays, to play a
// slow or pausing worker: startDelayMs before create(), computeMs[rank] between the backward pass and
// the push, pauseMs after every step, pause.ms after step pause.step (an evaluation, say).
// argv[2]: JSON { mode, servers, workers, steps, out, dtype, lr, workerTimeoutMs, maxStaleness, plain, firstStep,
//                 startDelayMs, computeMs, pauseMs, pause }
const kiln = require('../../../dist');
const { nn, optim, dist, io, data } = kiln;

const cfg = JSON.parse(process.argv[2]);
const ROWS = 4;   // rows per worker in a global batch
const dtype = cfg.dtype ?? 'float32';

function rows(seed, s, n) {
  const rng = new data.Rng(seed, s);
  const x = kiln.tensor(Float64Array.from({ length: n * 4 }, () => rng.next() * 2 - 1), { shape: [n, 4], dtype });
  return [x, kiln.tidy(() => x.sum(1, true).sin().add(x.narrow(1, 0, 1).mul(x.narrow(1, 1, 1))))];
}

function model() {
  kiln.manualSeed(11);
  return new nn.Sequential(new nn.Linear(4, 16), new nn.Tanh(), new nn.Linear(16, 1)).to(dtype);
}

const evalSet = rows(1234, 0, 64);
const evalLoss = (m) => kiln.noGrad(() => nn.mseLoss(m.forward(evalSet[0]), evalSet[1]).item());
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

(async () => {
  const net = model();
  if (cfg.plain) {
    const opt = new optim.SGD(net.parameters(), { lr: cfg.lr });
    for (let s = 0; s < cfg.steps; s++) {
      const [x, y] = rows(7, s, ROWS * cfg.workers);
      nn.mseLoss(net.forward(x), y).backward();
      opt.step();
      opt.zeroGrad();
    }
    io.saveSafetensors(cfg.out, net.stateDict());
    return;
  }
  if (cfg.startDelayMs && Number(process.env.RANK) >= (cfg.servers ?? 1)) await sleep(cfg.startDelayMs);
  const ps = await dist.ParameterServer.create(net, {
    optimizer: optim.SGD, lr: cfg.lr, servers: cfg.servers, mode: cfg.mode,
    workerTimeoutMs: cfg.workerTimeoutMs, maxStaleness: cfg.maxStaleness, timeoutMs: 60000,
  });
  if (ps.isServer) {
    console.log(JSON.stringify({ report: await ps.serve() }));
    if (cfg.out) io.saveSafetensors(`${cfg.out}.${ps.rank}`, net.stateDict());
    return;
  }
  const me = ps.rank - ps.servers;
  let initial = null;
  for (let s = cfg.firstStep ?? 0; s < cfg.steps; s++) {
    const versions = await ps.pull();
    if (initial === null) {
      initial = evalLoss(net);
      console.log(JSON.stringify({ rank: ps.rank, initial, version: versions[0] }));
    }
    const [gx, gy] = rows(7, s, ROWS * cfg.workers);
    const x = gx.narrow(0, me * ROWS, ROWS), y = gy.narrow(0, me * ROWS, ROWS);
    const loss = nn.mseLoss(net.forward(x), y);
    loss.backward();
    if (cfg.computeMs?.[ps.rank]) await sleep(cfg.computeMs[ps.rank]);
    const r = await ps.push();
    net.zeroGrad();
    console.log(JSON.stringify({ rank: ps.rank, step: s, loss: loss.item(), pulled: versions, applied: r.applied }));
    if (cfg.pauseMs) await sleep(cfg.pauseMs);
    if (cfg.pause?.step === s) await sleep(cfg.pause.ms);
  }
  await ps.pull();
  const final = evalLoss(net);
  if (cfg.out) io.saveSafetensors(`${cfg.out}.${ps.rank}`, net.stateDict());
  await ps.close();
  console.log(JSON.stringify({ rank: ps.rank, final }));
})().catch((e) => {
  console.error(`rank ${process.env.RANK}: ${e.stack}`);
  process.exit(1);
});
