// CUDA streams and events on a GPU: ops enqueue on the current stream, events order a side stream's
// work against the default stream's, withStream restores the previous stream, timing, the caching
// allocator's per-stream reuse and recordStream under races, and which calls synchronize the host.
// A slow matmul chain (~30 ms) keeps one stream busy so that a missing order would show.
import t from 'tap';
import * as v8 from 'v8';
import * as vm from 'vm';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';

const { Stream, Event, withStream, currentStream, defaultStream, recordStream } = kiln.cuda;

if (!kiln.cuda.isAvailable()) {
  t.plan(0, kiln.buildInfo().cuda ? 'no CUDA device visible' : 'kiln was built without CUDA');
} else {
  const big = kiln.ones([4096, 4096], { device: 'cuda' });
  // Keeps the current stream busy for tens of milliseconds.
  const busy = () => {
    for (let i = 0; i < 10; i++) big.matmul(big).dispose();
  };
  const values = (x: Tensor) => Array.from(x.dataSync() as Float32Array);
  const allEqual = (x: Tensor, v: number) => values(x).every((y) => y === v);
  kiln.cuda.synchronize();

  t.test('ops enqueue on the current stream, and enqueueing never synchronizes', async (t) => {
    const s = new Stream();
    const s0 = kiln.cuda.syncCount();
    withStream(s, busy);
    t.equal(s.query(), false, 'the side stream is busy');
    t.equal(defaultStream().query(), true, 'the default stream is idle');
    t.equal(kiln.cuda.syncCount(), s0, 'no host synchronization');
    s.synchronize();
    t.equal(s.query(), true);
    t.equal(kiln.cuda.syncCount(), s0 + 1, 'Stream.synchronize is one');
    busy();
    t.equal(defaultStream().query(), false, 'after withStream, ops go to the default stream again');
    t.equal(s.query(), true);
    kiln.cuda.synchronize();
  });

  t.test('work on a side stream ordered by events matches the CPU', async (t) => {
    const a = kiln.randn([512, 384], { device: 'cuda' });
    const b = kiln.randn([384, 256], { device: 'cuda' });
    const s = new Stream({ priority: -1 });
    const inputsReady = defaultStream().recordEvent();
    let c!: Tensor;
    withStream(s, () => {
      inputsReady.wait(); // the side stream's current: s
      busy();
      c = a.matmul(b).mul(2).add(1);
    });
    const done = s.recordEvent();
    done.wait(defaultStream());
    const ref = a.cpu().matmul(b.cpu()).mul(2).add(1);
    t.ok(kiln.allclose(c.cpu(), ref, 1e-4, 1e-4), 'the side stream result, read on the default stream');
    t.equal(done.query(), true);

    // waitStream orders the same way without a named event.
    let d!: Tensor;
    withStream(s, () => {
      busy();
      d = c.mul(-1);
    });
    defaultStream().waitStream(s);
    t.ok(kiln.allclose(d.cpu(), ref.neg(), 1e-4, 1e-4));
  });

  t.test('elapsedTime measures GPU time between two records', async (t) => {
    const start = new Event({ enableTiming: true });
    const end = new Event({ enableTiming: true });
    start.record();
    busy();
    end.record();
    const s0 = kiln.cuda.syncCount();
    const ms = start.elapsedTime(end);
    t.ok(ms > 0 && ms < 60_000, `${ms} ms`);
    t.equal(kiln.cuda.syncCount(), s0 + 1, 'elapsedTime waits once');
    t.equal(end.query(), true);
    t.throws(() => new Event().elapsedTime(end), { name: 'ValueError', op: 'Event.elapsedTime', message: /enableTiming/ });
    t.throws(() => new Event({ enableTiming: true }).elapsedTime(end), { name: 'ValueError', message: /recorded first/ });
    t.throws(() => start.elapsedTime({} as kiln.cuda.Event), { name: 'ValueError', message: /end must be a kiln.cuda.Event/ });
  });

  t.test('an event never recorded is complete; Event.synchronize waits once', async (t) => {
    const e = new Event();
    t.equal(e.query(), true);
    e.synchronize();
    e.wait();
    busy();
    e.record();
    t.equal(e.query(), false);
    const s0 = kiln.cuda.syncCount();
    e.synchronize();
    t.equal(kiln.cuda.syncCount(), s0 + 1);
    t.equal(e.query(), true);
    const r = new Stream().recordEvent(e);
    t.equal(r, e, 'recordEvent returns the event it recorded');
  });

  t.test('withStream restores the previous stream, nested, on throw and on a Promise', async (t) => {
    const d = defaultStream();
    t.equal(currentStream(), d);
    t.equal(currentStream('cuda:0'), d);
    const s1 = new Stream();
    const s2 = new Stream({ priority: -1 });
    t.equal(s2.priority, -1);
    t.equal(s1.device, 'cuda:0');
    const r = withStream(s1, () => {
      t.equal(currentStream(), s1);
      withStream(s2, () => t.equal(currentStream(), s2));
      t.equal(currentStream(), s1);
      return 42;
    });
    t.equal(r, 42, 'returns what fn returns');
    t.equal(currentStream(), d);
    t.throws(() => withStream(s1, () => { throw new Error('boom'); }), /boom/);
    t.equal(currentStream(), d, 'restored after a throw');
    t.throws(() => withStream(s1, async () => 1), { name: 'ValueError', op: 'withStream', message: /Promise/ });
    t.equal(currentStream(), d, 'restored after a Promise');
    busy();
    t.equal(s1.query(), true, 'and native code enqueues on the default stream again');
    kiln.cuda.synchronize();
    t.throws(() => new Stream({ priority: 1000 }), { name: 'ValueError', op: 'Stream', message: /outside the range/ });
    t.throws(() => new Stream({ device: kiln.cuda.deviceCount() }), { name: 'DeviceError', op: 'Stream' });
    t.throws(() => s1.waitEvent(s2 as unknown as kiln.cuda.Event), { name: 'ValueError', op: 'Stream.waitEvent' });
  });

  t.test('a block freed on one stream is reused only on that stream', async (t) => {
    kiln.cuda.synchronize();
    kiln.cuda.emptyCache();
    const shape = [12_345_677]; // a size class nothing else here uses
    const s = new Stream();
    const m0 = kiln.cuda.memoryStats().mallocs;
    withStream(s, () => kiln.empty(shape, { device: 'cuda' }).dispose());
    t.equal(kiln.cuda.memoryStats().mallocs, m0 + 1);
    kiln.empty(shape, { device: 'cuda' }).dispose();
    t.equal(kiln.cuda.memoryStats().mallocs, m0 + 2, 'the default stream does not take the side stream block');
    withStream(s, () => kiln.empty(shape, { device: 'cuda' }).dispose());
    kiln.empty(shape, { device: 'cuda' }).dispose();
    t.equal(kiln.cuda.memoryStats().mallocs, m0 + 2, 'each stream reuses its own');
    kiln.cuda.synchronize();
  });

  t.test('race: written on a busy side stream and freed at once, the block is not handed to the default stream', async (t) => {
    const n = 1 << 20;
    const s = new Stream();
    let out!: Tensor;
    withStream(s, () => {
      const tmp = kiln.empty([n], { device: 'cuda' });
      busy();
      tmp.fill_(3); // written late on s
      out = tmp.mul(2); // and read later still
      tmp.dispose(); // freed while s has not even started on it
    });
    const b = kiln.full([n], 5, { device: 'cuda' }); // the default stream runs ahead of s
    const bCopy = b.mul(1);
    s.synchronize();
    t.ok(allEqual(bCopy, 5), 'the default stream kept its own memory');
    t.ok(allEqual(b, 5));
    t.ok(allEqual(out, 6), 'the side stream saw its own writes');
  });

  t.test('race: recordStream holds a block used on another stream until that work is done', async (t) => {
    const n = 1 << 20;
    const s = new Stream();
    kiln.cuda.synchronize();
    kiln.empty([1], { device: 'cuda' }).dispose(); // collects frees held back so far
    const buf = kiln.full([n], 1, { device: 'cuda' }); // allocated on the default stream
    s.waitStream(defaultStream()); // buf is filled before s reads it
    let out!: Tensor;
    withStream(s, () => {
      busy();
      out = buf.mul(4); // read late on s
    });
    const s0 = kiln.cuda.syncCount();
    t.equal(kiln.cuda.memoryStats().pending, 0);
    recordStream(buf, s);
    buf.dispose(); // freed on the host while s still has to read it
    t.equal(kiln.cuda.memoryStats().pending, 1, 'held back, not cached');
    const fresh = kiln.full([n], 7, { device: 'cuda' }); // same size class, on the default stream
    t.equal(kiln.cuda.syncCount(), s0, 'recordStream and the held-back free never wait on the host');
    s.synchronize();
    t.ok(allEqual(out, 4), 'the side stream read the ones, not the sevens');
    t.ok(allEqual(fresh, 7));
    kiln.empty([1], { device: 'cuda' }).dispose(); // the next allocation collects finished frees
    t.equal(kiln.cuda.memoryStats().pending, 0, 'released once the side stream was done');

    t.throws(() => recordStream(kiln.zeros([2]), s), { name: 'DeviceError', op: 'recordStream', message: /cpu/ });
    const gone = kiln.zeros([2], { device: 'cuda' });
    gone.dispose();
    t.throws(() => recordStream(gone, s), { name: 'DisposedError' });
  });

  t.test('streams dropped by the garbage collector release their cached memory to the default stream', async (t) => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const shape = [7_654_321];
    kiln.cuda.synchronize();
    kiln.cuda.emptyCache();
    (() => {
      const s = new Stream();
      withStream(s, () => {
        busy();
        kiln.empty(shape, { device: 'cuda' }).dispose();
      });
    })();
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setImmediate(r)); // N-API finalizers run when the event loop turns
    }
    kiln.cuda.synchronize();
    const m0 = kiln.cuda.memoryStats().mallocs;
    kiln.empty(shape, { device: 'cuda' }).dispose();
    t.equal(kiln.cuda.memoryStats().mallocs, m0, 'the default stream took the dead stream block');
  });
}
