// One rank of bench/dist.mjs's kiln side: the kiln twin of scripts/torch_dist_ref.py's
// allreduce-bench and ddp-bench, with the same options, the same definitions and the same JSON lines
// (rank 0 prints them), so that the two print comparable figures. Joins the Gloo group that
// RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT describe.
//   node bench/dist_worker.mjs allreduce-bench [--sizes 4096,...] [--iters 20] [--warmup 3]
//   node bench/dist_worker.mjs ddp-bench --width H --depth L --batch B --in-dim D --out-dim O
//                              [--steps 20] [--warmup 3] [--bucket-cap-mb 25]
// Common: --threads N (kiln threads per process, default 1), --timeout SECONDS (default 300).
// As in the reference, a DDP step is forward, backward, SGD step and zeroing the gradients in place
// (torch 1.13's zero_grad() default); kiln's step also awaits ddp.synchronize() before the optimizer
// step, where torch's backward itself waits for the all-reduces.
import { parseArgs } from 'node:util';
import * as kiln from '../dist/index.mjs';

const { nn, optim, dist } = kiln;
const [command, ...rest] = process.argv.slice(2);
const { values } = parseArgs({
  args: rest,
  options: Object.fromEntries(
    ['sizes', 'iters', 'warmup', 'width', 'depth', 'batch', 'in-dim', 'out-dim', 'steps', 'bucket-cap-mb', 'threads', 'timeout'].map((k) => [k, { type: 'string' }]),
  ),
});
const num = (k, d) => {
  const v = values[k] === undefined ? d : Number(values[k]);
  if (v === undefined || !Number.isFinite(v)) throw new Error(`dist_worker ${command}: --${k} must be a number, got ${values[k]}`);
  return v;
};

function median(xs) {
  const s = [...xs].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const now = () => performance.now() / 1000;
const emit = (record) => console.log(JSON.stringify(record));

/** The slowest rank's figure: a data-parallel step is as slow as its slowest process. */
async function timedMax(seconds) {
  const t = kiln.tensor([seconds], { dtype: 'float64' });
  await dist.allReduce(t, { op: 'max' });
  const v = t.item();
  t.dispose();
  return v;
}

async function allreduceBench() {
  const sizes = (values.sizes ?? '4096,65536,1048576,16777216,67108864').split(',').map(Number);
  const iters = num('iters', 20), warmup = num('warmup', 3);
  for (const b of sizes) if (!(b >= 4 && b % 4 === 0)) throw new Error(`dist_worker allreduce-bench: size ${b} bytes is not a positive multiple of 4 (float32)`);
  for (const b of sizes) {
    const t = kiln.zeros([b / 4]); // zeros stay zeros: no overflow over many sums
    for (let i = 0; i < warmup; i++) await dist.allReduce(t);
    const times = [];
    for (let i = 0; i < iters; i++) {
      await dist.barrier(); // every call starts with all ranks present, so it times the exchange, not the wait
      const t0 = now();
      await dist.allReduce(t);
      times.push(now() - t0);
    }
    t.dispose();
    const seconds = await timedMax(median(times));
    const algbw = b / seconds / 1e9, size = dist.worldSize();
    if (dist.rank() === 0) emit({ bytes: b, seconds_per_op: seconds, algbw_GBps: algbw, busbw_GBps: (algbw * 2 * (size - 1)) / size });
  }
}

/** L Linear layers (D -> H, H -> H, ..., H -> O) with tanh between: the reference's MLP. */
function mlp(sizes) {
  const layers = [];
  for (let i = 0; i + 1 < sizes.length; i++) {
    if (i) layers.push(new nn.Tanh());
    layers.push(new nn.Linear(sizes[i], sizes[i + 1]));
  }
  return new nn.Sequential(...layers);
}

async function ddpBench() {
  const width = num('width'), depth = num('depth'), batch = num('batch'), inDim = num('in-dim'), outDim = num('out-dim');
  const steps = num('steps', 20), warmup = num('warmup', 3), capMB = num('bucket-cap-mb', 25);
  if (depth < 1 || Math.min(width, batch, inDim, outDim) < 1) throw new Error('dist_worker ddp-bench: --depth, --width, --batch, --in-dim and --out-dim must be positive');
  const rank = dist.rank(), size = dist.worldSize();
  const sizes = [inDim, ...Array(depth - 1).fill(width), outDim];
  kiln.manualSeed(rank + 1); // each rank its own data, as in data-parallel training
  const xs = kiln.randn([batch, inDim]), ys = kiln.randn([batch, outDim]);

  async function meanStep(net, params, ddp) {
    const opt = new optim.SGD(params, { lr: 1e-3 });
    const step = async () => {
      kiln.tidy(() => nn.mseLoss(net.forward(xs), ys).backward());
      if (ddp) await ddp.synchronize();
      opt.step();
      opt.zeroGrad(false);
    };
    for (let i = 0; i < warmup; i++) await step();
    await dist.barrier();
    const t0 = now();
    for (let i = 0; i < steps; i++) await step();
    return timedMax((now() - t0) / steps);
  }

  kiln.manualSeed(0);
  let model = mlp(sizes);
  // (b) first, every process at once, so compute alone meets the same contention for cores as under DDP.
  const stepLocal = await meanStep(model, model.parameters(), null);
  model.dispose();
  kiln.manualSeed(0);
  model = mlp(sizes);
  const ddp = new dist.DistributedDataParallel(model, { bucketCapMB: capMB });
  await ddp.ready;
  const stepDdp = await meanStep(ddp, ddp.parameters(), ddp);
  const buckets = ddp.bucketLayout().map((b) => b.numel);

  const flat = kiln.zeros([model.parameters().reduce((n, p) => n + p.numel, 0)]);
  ddp.dispose();
  for (let i = 0; i < warmup; i++) await dist.allReduce(flat);
  await dist.barrier();
  const t0 = now();
  for (let i = 0; i < steps; i++) await dist.allReduce(flat);
  const comm = await timedMax((now() - t0) / steps);
  flat.dispose();
  kiln.dispose([xs, ys]);

  if (rank === 0) {
    emit({
      world: size,
      step_ddp_s: stepDdp,
      step_local_s: stepLocal,
      comm_alone_s: comm,
      scaling_efficiency: stepLocal / stepDdp,
      overlap_fraction: Math.min(1, Math.max(0, (stepLocal + comm - stepDdp) / comm)),
      bucket_numels: buckets,
    });
  }
}

const commands = { 'allreduce-bench': allreduceBench, 'ddp-bench': ddpBench };
if (!commands[command]) throw new Error(`dist_worker: the command must be one of ${Object.keys(commands).join(', ')}; got ${command}`);
kiln.setNumThreads(num('threads', 1));
try {
  await dist.initProcessGroup({ backend: 'gloo', timeoutMs: num('timeout', 300) * 1000 });
  await commands[command]();
} finally {
  if (dist.isInitialized()) dist.destroyProcessGroup();
}
