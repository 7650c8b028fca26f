// Parameter-server training: the first --servers ranks hold the parameters of an MLP (sharded
// between them) and the optimizer; the other ranks are workers that pull the parameters, compute
// gradients on their own shard of a two-moons data set, and push them. --mode sync averages one
// gradient from every worker per step (data-parallel SGD); --mode async applies each gradient as it
// arrives, rejecting those computed on parameters more than --max-staleness versions old.
// Run (after `npm install`):
//   kiln launch --nproc-per-node 4 examples/parameter-server.mjs [--servers 1] [--mode async] [--steps 300]
// The servers survive a worker that dies, and a worker started again with its rank rejoins; but
// `kiln launch` stops the whole job when one process fails. To watch that, start the ranks yourself:
//   for r in 0 1 2 3; do RANK=$r WORLD_SIZE=4 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 node examples/parameter-server.mjs --mode async & done
// then kill one worker (say rank 3) and start it again with RANK=3: it pulls the current parameters
// and carries on. (In sync mode the others' steps go on without it 10 s after their first gradient;
// a worker that is merely slow or pausing is waited for.) The servers stop once every worker has
// closed, and each writes its trained shard back into its model: with one server, the server's model
// is the trained model (it prints its accuracy).
import { parseArgs } from 'node:util';
import * as kiln from 'kiln';

const { nn, optim, data, dist } = kiln;
const { values: args } = parseArgs({
  options: {
    servers: { type: 'string', default: '1' }, mode: { type: 'string', default: 'sync' },
    steps: { type: 'string', default: '300' }, 'max-staleness': { type: 'string', default: '4' },
  },
});

/** n points of two half-moons with Gaussian noise: x [n, 2] and labels y [n, 1] (0 or 1). */
function moons(n, seed) {
  const rng = new data.Rng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  const x = new Float32Array(2 * n), y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const upper = i % 2 === 0, a = Math.PI * rng.next();
    x[2 * i] = (upper ? Math.cos(a) : 1 - Math.cos(a)) + 0.15 * gauss();
    x[2 * i + 1] = (upper ? Math.sin(a) : 0.5 - Math.sin(a)) + 0.15 * gauss();
    y[i] = upper ? 0 : 1;
  }
  return [kiln.tensor(x, { shape: [n, 2] }), kiln.tensor(y, { shape: [n, 1] })];
}

// Every rank builds the model: the servers take their shards' initial values from it, the workers
// the architecture (they pull the values).
kiln.manualSeed(0);
const model = new nn.Sequential(new nn.Linear(2, 32), new nn.ReLU(), new nn.Linear(32, 32), new nn.ReLU(), new nn.Linear(32, 1));
const ps = await dist.ParameterServer.create(model, {
  optimizer: optim.SGD, lr: 0.1, momentum: 0.9,
  servers: Number(args.servers), mode: args.mode, maxStaleness: Number(args['max-staleness']), workerTimeoutMs: 10_000,
});

const [xVal, yVal] = moons(400, 1);
const accuracy = () => kiln.noGrad(() => kiln.tidy(() => model.forward(xVal).gt(0).to('float32').eq(yVal).to('float32').mean().item()));

if (ps.isServer) {
  const from = ps.shardStarts[ps.rank], to = ps.shardStarts[ps.rank + 1];
  console.log(`server ${ps.rank}: parameters ${from}..${to} of ${ps.numel}, ${args.mode} mode`);
  const report = await ps.serve();
  console.log(`server ${ps.rank}: ${report.version} updates; per worker ${JSON.stringify(report.workers)}`);
  if (ps.servers === 1) console.log(`server: the trained model's validation accuracy ${(100 * accuracy()).toFixed(1)}%`);
} else {
  // Each worker draws its own data; the validation set is shared.
  const [x, y] = moons(2000, 100 + ps.rank);
  const rng = new data.Rng(ps.rank);
  let rejected = 0;
  for (let s = 0; s < Number(args.steps); s++) {
    await ps.pull();
    const at = Math.floor(rng.next() * (2000 - 32));
    const loss = nn.bceWithLogits(model.forward(x.narrow(0, at, 32)), y.narrow(0, at, 32));
    loss.backward();
    const r = await ps.push();
    model.zeroGrad();
    if (!r.applied) rejected++;
    if (s % 100 === 0) console.log(`worker ${ps.rank} step ${s}: loss ${loss.item().toFixed(3)}`);
  }
  await ps.pull();
  console.log(`worker ${ps.rank}: validation accuracy ${(100 * accuracy()).toFixed(1)}%, ${rejected} gradients rejected as stale`);
  await ps.close();
}
