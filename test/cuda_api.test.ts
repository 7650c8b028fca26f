// kiln.cuda streams and events where no GPU is needed: argument checks (made before any native
// call, so they hold on every machine) and, without CUDA, a DeviceError naming the op for
// everything that needs a device (streams, events, graphs, kernel profiles). test/cuda/ runs them on
// a GPU.
import t from 'tap';
import * as kiln from '../lib/index';

const { Stream, Event } = kiln.cuda;
const noDevice = /built without CUDA|does not exist|no CUDA device/;

t.test('argument checks name the op', async (t) => {
  t.throws(() => new Stream({ priority: 1.5 }), { name: 'ValueError', op: 'Stream', message: /priority must be an integer/ });
  t.throws(() => new Stream({ device: 'cpu' }), { name: 'DeviceError', op: 'Stream', message: /not a CUDA device: 'cpu'/ });
  t.throws(() => new Stream({ device: -1 }), { name: 'DeviceError', op: 'Stream', message: /not a CUDA device: -1/ });
  t.throws(() => new Stream({ device: 0.5 }), { name: 'DeviceError', op: 'Stream' });
  t.throws(() => new Stream({ device: true as unknown as number }), { name: 'DeviceError', op: 'Stream', message: /boolean/ });
  t.throws(() => new Stream({ prio: 1 } as kiln.cuda.StreamOptions), {
    name: 'ValueError',
    op: 'Stream',
    message: /unknown option 'prio' \(expected device, priority\)/,
  });
  t.throws(() => new Stream(null as unknown as kiln.cuda.StreamOptions), { name: 'ValueError', message: /must be an object/ });
  t.throws(() => new Event({ enableTiming: 'yes' as unknown as boolean }), {
    name: 'ValueError',
    op: 'Event',
    message: /enableTiming must be a boolean, got string/,
  });
  t.throws(() => new Event({ timing: true } as kiln.cuda.EventOptions), { name: 'ValueError', op: 'Event', message: /'timing'/ });
  t.throws(() => kiln.cuda.currentStream('cuda:x'), { name: 'DeviceError', op: 'currentStream' });
  t.throws(() => kiln.cuda.defaultStream(-2), { name: 'DeviceError', op: 'defaultStream' });

  const notStream = {} as kiln.cuda.Stream;
  t.throws(() => kiln.cuda.withStream(notStream, () => 1), {
    name: 'ValueError',
    op: 'withStream',
    message: /stream must be a kiln.cuda.Stream, got Object/,
  });
  t.throws(() => kiln.cuda.recordStream(kiln.zeros([2]), notStream), { name: 'ValueError', op: 'recordStream' });
});

t.test('setFlashAttention switches nn to the unfused attention on CUDA and back', async (t) => {
  t.equal(kiln.cuda.flashAttentionEnabled(), true, 'on by default');
  kiln.cuda.setFlashAttention(false);
  t.equal(kiln.cuda.flashAttentionEnabled(), false);
  kiln.cuda.setFlashAttention(true);
  t.throws(() => kiln.cuda.setFlashAttention(1 as unknown as boolean), { name: 'ValueError', op: 'setFlashAttention' });
  // The CPU is not affected: nn takes the fused op there either way.
  kiln.cuda.setFlashAttention(false);
  const q = kiln.randn([1, 2, 5, 8]).requiresGrad_();
  const out = kiln.nn.scaledDotProductAttention(q, q, q, { isCausal: true });
  t.equal(out.gradFn?.name, 'flashAttention');
  kiln.cuda.setFlashAttention(true);
});

if (kiln.cuda.isAvailable()) {
  t.test('with a GPU, streams and events are made (test/cuda/streams.test.ts tests them)', async (t) => {
    t.equal(new Stream().device, 'cuda:0');
    t.equal(new Event().enableTiming, false);
  });
} else {
  t.test('without CUDA, everything that needs a device is a DeviceError naming the op', async (t) => {
    t.equal(kiln.cuda.isAvailable(), false);
    t.throws(() => new Stream(), { name: 'DeviceError', op: 'Stream', message: noDevice });
    t.throws(() => new Stream({ device: 'cuda:1', priority: -1 }), { name: 'DeviceError', op: 'Stream', message: noDevice });
    t.throws(() => new Event(), { name: 'DeviceError', op: 'Event', message: noDevice });
    t.throws(() => new Event({ enableTiming: true }), { name: 'DeviceError', op: 'Event', message: noDevice });
    t.throws(() => kiln.cuda.defaultStream(), { name: 'DeviceError', op: 'defaultStream', message: noDevice });
    t.throws(() => kiln.cuda.currentStream(), { name: 'DeviceError', message: noDevice });
    t.throws(() => new kiln.cuda.CUDAGraph(), { name: 'DeviceError', op: 'CUDAGraph', message: noDevice });
    t.throws(() => new kiln.cuda.CUDAGraph('cpu'), { name: 'DeviceError', op: 'CUDAGraph', message: /not a CUDA device/ });
    t.equal(kiln.cuda.isCapturing(), false);
    t.throws(() => kiln.cuda.profileKernels(() => 1), { name: 'DeviceError', op: 'profileKernels', message: noDevice });
    const err = t.throws(() => new Stream()) as unknown as kiln.DeviceError;
    t.ok(err instanceof kiln.DeviceError);
    t.match(err.message, /^Stream: /, 'the message starts with the op');
  });
}
