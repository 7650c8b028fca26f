// The NCCL process group on the one GPU of the GPU host (world size 1; nothing here can run on
// several GPUs): collectives on CUDA tensors against their values, ordering with the compute stream
// (no host wait), DDP and ZeroRedundancyOptimizer training a small GPT equal to plain AdamW on the
// CPU twin, and NCCL's errors.
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { freePort } from '../dist/helpers';

const { dist, nn, optim } = kiln;
const vals = (x: Tensor): number[] => Array.from(x.cpu().to('float64').dataSync() as Float64Array);

if (!kiln.cuda.isAvailable()) {
  t.plan(0, kiln.buildInfo().cuda ? 'no CUDA device visible' : 'kiln was built without CUDA');
} else if (!dist.isBackendAvailable('nccl')) {
  t.plan(0, 'kiln was built without NCCL');
} else {
  t.test('NCCL in a world of one', async (t) => {
    const g = await dist.initProcessGroup({ backend: 'nccl', rank: 0, worldSize: 1, masterPort: await freePort(), timeoutMs: 60_000 });
    t.teardown(() => dist.destroyProcessGroup());
    t.equal(g.backend, 'nccl');
    t.equal(g.device, 'cuda:0');

    t.test('collectives on CUDA tensors, ordered after the compute stream without a host wait', async (t) => {
      for (const dtype of ['float32', 'float64', 'bfloat16', 'float16', 'int32', 'int64'] as const) {
        const x = kiln.arange(6).to({ dtype, device: 'cuda' });
        const y = x.mul(2);   // enqueued on the compute stream before the all-reduce
        const syncs = kiln.cuda.syncCount();
        const w = dist.allReduce(y, { op: 'sum' });
        await w;
        t.equal(kiln.cuda.syncCount(), syncs, `${dtype}: no host synchronization`);
        t.same(vals(y), [0, 2, 4, 6, 8, 10], `${dtype}: sum over one rank`);
      }
      const a = kiln.tensor([1, 2, 3], { dtype: 'float32', device: 'cuda' });
      await dist.allReduce(a, { op: 'avg' });
      await dist.broadcast(a, 0);
      const out = kiln.zeros([3], { device: 'cuda' });
      await dist.allGather(out, a);
      t.same(vals(out), [1, 2, 3]);
      const rs = kiln.zeros([3], { device: 'cuda' });
      await dist.reduceScatter(rs, a, { op: 'max' });
      t.same(vals(rs), [1, 2, 3]);
      await dist.barrier();
      t.same(await g.allGatherObject({ ok: true }), [{ ok: true }]);
      t.throws(() => dist.allReduce(kiln.ones([2])), { name: 'DeviceError', message: /the nccl backend takes CUDA tensors/ });
      t.throws(() => dist.allReduce(kiln.tensor([1, 2], { device: 'cuda' }), { op: 'avg' }), { name: 'DTypeError' });
    });

    t.test('DDP + ZeRO on NCCL train like AdamW on the CPU', async (t) => {
      const cfg = { vocabSize: 17, blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 32 };
      kiln.manualSeed(5);
      const cpu = new nn.GPT(cfg);
      const gpu = new nn.GPT(cfg);
      gpu.loadStateDict(cpu.stateDict());
      gpu.to('cuda');
      const ddp = new dist.DistributedDataParallel(gpu, { bucketCapMB: 0.01 });
      await ddp.ready;
      const zero = new dist.ZeroRedundancyOptimizer(ddp.parameters(), { optimizer: optim.AdamW, lr: 1e-3 });
      const adam = new optim.AdamW(cpu.parameters(), { lr: 1e-3 });
      for (let s = 0; s < 5; s++) {
        const x = kiln.randint(0, 17, [4, 8]), y = kiln.randint(0, 17, [4, 8]);
        cpu.forward(x, y).loss!.backward();
        adam.step();
        adam.zeroGrad();
        ddp.forward(x.cuda(), y.cuda()).loss!.backward();
        await ddp.synchronize();
        zero.step();
        await zero.synchronize();
        zero.zeroGrad(false);
      }
      let maxDiff = 0;
      const gs = gpu.stateDict();
      for (const [k, v] of cpu.stateDict()) maxDiff = Math.max(maxDiff, kiln.tidy(() => v.sub(gs.get(k)!.cpu()).abs().max().item()));
      t.ok(maxDiff < 1e-4, `CUDA DDP + ZeRO vs CPU AdamW: max abs diff ${maxDiff.toExponential(2)} (TF32 off, float32)`);
    });
  });
}
