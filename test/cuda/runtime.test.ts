// CUDA runtime: devices, upload and read back in every dtype, device copies and casts against the
// CPU, the caching allocator (no cudaMalloc on reuse, flat reserved memory), out of memory, and
// host synchronizations only on reads.
import t from 'tap';
import * as kiln from '../../lib/index';

if (!kiln.cuda.isAvailable()) {
  t.plan(0, kiln.buildInfo().cuda ? 'no CUDA device visible' : 'kiln was built without CUDA');
} else {
  t.test('device facts', async (t) => {
    t.ok(kiln.cuda.deviceCount() >= 1);
    t.match(kiln.cuda.getDeviceName(0), /\w/);
    t.throws(() => kiln.zeros([2], { device: `cuda:${kiln.cuda.deviceCount()}` }), kiln.DeviceError);
  });

  t.test('upload and read back every dtype', async (t) => {
    const vals = [[1, -2.5, 3], [0.125, 7, -8]];
    for (const dtype of ['float32', 'float64', 'bfloat16', 'float16'] as kiln.DType[]) {
      const g = kiln.tensor(vals, { dtype, device: 'cuda' });
      t.equal(g.device, 'cuda:0');
      t.same(g.toArray(), vals, dtype);
    }
    t.same(kiln.tensor([[1, 2], [3, 4]], { dtype: 'int32', device: 'cuda' }).toArray(), [[1, 2], [3, 4]]);
    t.same(kiln.tensor([5, -6], { dtype: 'int64', device: 'cuda' }).toArray(), [5, -6]);
    t.same(kiln.tensor([true, false], { device: 'cuda' }).toArray(), [true, false]);
  });

  t.test('device copies, casts and views match the CPU', async (t) => {
    const cpu = kiln.arange(0, 2 * 3 * 5 * 7).reshape(2, 3, 5, 7).to('float32');
    const gpu = cpu.cuda();
    const perms = [[3, 1, 0, 2], [0, 2, 1, 3], [1, 0, 3, 2]];
    for (const p of perms) {
      t.same(gpu.permute(p).contiguous().toArray(), cpu.permute(p).contiguous().toArray(), `permute ${p}`);
    }
    t.same(gpu.slice(3, 1, 7, 2).contiguous().toArray(), cpu.slice(3, 1, 7, 2).contiguous().toArray());
    t.same(gpu.select(1, 2).toArray(), cpu.select(1, 2).toArray());
    t.same(kiln.cat([gpu, gpu], 2).cpu().toArray(), kiln.cat([cpu, cpu], 2).toArray());
    for (const dtype of ['float64', 'bfloat16', 'float16', 'int32', 'int64', 'bool'] as kiln.DType[]) {
      t.same(gpu.to(dtype).toArray(), cpu.to(dtype).toArray(), `cast to ${dtype}`);
    }
    const e = kiln.tensor([[1], [2]], { dtype: 'float32', device: 'cuda' }).expand(2, 3).contiguous();
    t.same(e.toArray(), [[1, 1, 1], [2, 2, 2]]);
    const f = kiln.full([1000, 3], 2.5, { device: 'cuda' });
    t.equal((f.cpu().toArray() as number[][])[999][2], 2.5);
    t.same(gpu.permute(3, 2, 1, 0).cpu().toArray(), cpu.permute(3, 2, 1, 0).toArray(), 'to the CPU from a strided view');
    const dst = kiln.zeros([7, 5], { device: 'cuda' }).t();
    dst.copy_(cpu.select(0, 1).select(0, 2));
    t.same(dst.toArray(), cpu.select(0, 1).select(0, 2).toArray(), 'from the CPU into a strided GPU view');
  });

  t.test('the caching allocator reuses blocks: no cudaMalloc and flat reserved memory', async (t) => {
    const shapes = [[1000], [256, 256], [3, 1000, 7]];
    for (const s of shapes) kiln.zeros(s, { device: 'cuda' }).dispose();
    const before = kiln.cuda.memoryStats();
    for (let i = 0; i < 200; i++) {
      for (const s of shapes) kiln.zeros(s, { device: 'cuda' }).dispose();
    }
    const after = kiln.cuda.memoryStats();
    t.equal(after.mallocs, before.mallocs, 'no cudaMalloc on the hot path');
    t.equal(after.reserved, before.reserved, 'reserved memory flat');
    t.equal(after.allocated, before.allocated);
    kiln.cuda.emptyCache();
    t.equal(kiln.cuda.memoryStats().reserved, kiln.cuda.memoryStats().allocated, 'emptyCache returns every cached block');
  });

  t.test('out of memory frees the cache, throws OutOfMemoryError, and the process keeps working', async (t) => {
    const err = t.throws(() => kiln.empty([64, 1024, 1024, 1024], { device: 'cuda' })) as unknown as Error;
    t.ok(err instanceof kiln.OutOfMemoryError, String(err));
    t.match(err.message, /tried to allocate 274877906944 bytes/);
    t.match(err.message, /reserved/);
    const x = kiln.ones([1024, 1024], { device: 'cuda' });
    t.equal((x.cpu().toArray() as number[][])[1023][1023], 1);
    t.ok(kiln.cuda.memoryStats().ooms >= 1);
  });

  t.test('enqueueing does not synchronize; reading back does', async (t) => {
    const a = kiln.ones([4096, 256], { device: 'cuda' });
    const s0 = kiln.cuda.syncCount();
    for (let i = 0; i < 50; i++) a.t().contiguous().dispose();
    t.equal(kiln.cuda.syncCount(), s0, 'no synchronization while enqueueing');
    a.select(0, 0).toArray();
    t.equal(kiln.cuda.syncCount(), s0 + 1, 'one synchronization to read back');
  });
}
