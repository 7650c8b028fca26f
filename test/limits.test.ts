// Shapes at and past the limits: element and byte counts that overflow 64 bits, allocations the
// machine cannot give, views whose reach overflows, reads too large for a JavaScript array. Each
// case runs in a child process, so a crash (which used to be SIGSEGV for some of them) fails its
// test instead of killing the run; each must end in a typed kiln error that names the op.
import t from 'tap';
import * as path from 'path';
import { spawnSync } from 'child_process';
import * as kiln from '../lib/index';

const dist = path.join(__dirname, '..', 'dist', 'index.js');

// Runs `body` (JavaScript with `kiln` in scope) in a child, with its virtual memory limited to
// vmemKB when given; returns the error it threw, or its value.
function inChild(body: string, vmemKB?: number): { error?: { name: string; message: string }; value?: unknown; signal?: string | null; status?: number | null; stderr?: string } {
  const script = `
const kiln = require(${JSON.stringify(dist)});
let out;
try { out = { value: (() => { ${body} })() }; } catch (e) { out = { error: { name: e.name, message: e.message } }; }
process.stdout.write(JSON.stringify(out));`;
  const r = vmemKB
    ? spawnSync('bash', ['-c', `ulimit -v ${vmemKB} && exec "${process.execPath}" -e "$0"`, script], { encoding: 'utf8', timeout: 60_000 })
    : spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) return { signal: r.signal, status: r.status, stderr: r.stderr.slice(-2000) };
  return JSON.parse(r.stdout);
}

const cases: Array<[string, string, string, RegExp, number?]> = [
  ['zeros([65536, 2**46]) (2^62 elements)', 'return kiln.zeros([65536, 2 ** 46]).shape', 'ShapeError', /^zeros: .*more than 2\^53 - 1/],
  ['zeros([2**32, 2**32]) (2^64 elements)', 'return kiln.zeros([2 ** 32, 2 ** 32]).shape', 'ShapeError', /^zeros: /],
  ['ones([2**32, 2**32]).sum()', 'return kiln.ones([2 ** 32, 2 ** 32]).sum().item()', 'ShapeError', /^ones: /],
  ['expand to 2^64 elements', 'return kiln.ones([1, 1]).expand([2 ** 32, 2 ** 32]).contiguous().shape', 'ShapeError', /^expand: /],
  ['expand to 2^62 elements, then contiguous', 'return kiln.ones([1, 1]).expand([2 ** 31, 2 ** 31]).contiguous().shape', 'ShapeError', /^expand: /],
  ['broadcast add to 2^64 elements', 'return kiln.ones([1, 1]).expand([2 ** 32, 1]).add(kiln.ones([1, 1]).expand([1, 2 ** 32])).shape', 'ShapeError', /^add: .*18446744073709551616 elements/],
  ['expand to 2^40 elements, then contiguous (16 TB)', 'return kiln.ones([1, 1]).expand([2 ** 20, 2 ** 20]).mul(2).shape', 'OutOfMemoryError', /bytes/],
  ['empty([2**50]) (4 PB)', 'return kiln.empty([2 ** 50]).shape', 'OutOfMemoryError', /4503599627370496 bytes/],
  ['repeat to 2^64 elements', 'return kiln.ones([2 ** 16]).repeat([2 ** 48]).shape', 'ShapeError', /^repeat: /],
  ['arange(1e12)', 'return kiln.arange(1e12).shape', 'OutOfMemoryError', /^arange: /],
  ['arange(NaN)', 'return kiln.arange(NaN).shape', 'ValueError', /^arange: /],
  ['linspace(0, 1, 2**33)', 'return kiln.linspace(0, 1, 2 ** 33).shape', 'OutOfMemoryError', /^linspace: /],
  ['toArray() of 2^33 elements', 'return kiln.zeros([1]).expand([2 ** 33]).toArray().length', 'ValueError', /^toArray: .*2\^32 - 1/],
  ['dataSync() of 2^33 elements', 'return kiln.zeros([1]).expand([2 ** 33]).dataSync().length', 'ValueError', /^dataSync: /],
  ['a view whose reach overflows int64', "const n = require(require('path').join(require.resolve(" + JSON.stringify(dist) + "), '..', 'native')).native; const a = kiln.ones([4]); return n.view(a._h, [2 ** 20, 2 ** 20], [2 ** 50, 2 ** 50], 0)", 'IndexError', /^view: /],
  ['zeros([0, 2**60]) (a dimension past 2^53)', 'return kiln.zeros([0, 2 ** 60]).shape', 'ShapeError', /^zeros: invalid shape/],
  ['zeros([0, 2**40, 2**40]) (strides past 2^53)', 'return kiln.zeros([0, 2 ** 40, 2 ** 40]).transpose(0, 1).shape', 'ShapeError', /^zeros: .*spans 1208925819614629174706176 elements/],
  ['tidy(async) does not crash the process', 'return kiln.tidy(async () => { const a = kiln.ones([2]); await null; return a.add(1); })', 'ValueError', /^tidy: fn returned a Promise/],
  // V8 aborts the process when a native ArrayBuffer allocation fails: reads allocate in JavaScript.
  ['dataSync() of 4 GB under a 3 GB memory limit', 'return kiln.zeros([1]).expand([2 ** 30]).dataSync().length', 'OutOfMemoryError', /^dataSync: could not allocate a JavaScript buffer of 4294967296 bytes/, 3_000_000],
  ['arange(2**28) under a 3.5 GB memory limit', 'return kiln.arange(2 ** 28).shape', 'OutOfMemoryError', /^arange: cannot build 268435456 values/, 3_500_000],
  ['memory() after refused allocations', "for (const s of [[2 ** 32, 2 ** 32], [2 ** 50], [65536, 2 ** 46]]) { try { kiln.empty(s); } catch {} } const m = kiln.memory(); return m.bytes >= 0 && m.peakBytes >= 0 && m.peakBytes < 2 ** 40 ? 'sane' : JSON.stringify(m)", '', /^$/],
];

for (const [name, body, errorName, message, vmemKB] of cases) {
  t.test(name, async (t) => {
    const r = inChild(body, vmemKB);
    t.notOk(r.signal || r.status, `no crash (signal ${r.signal}, status ${r.status}) ${r.stderr ?? ''}`);
    if (errorName) {
      t.equal(r.error?.name, errorName, `${r.error?.name}: ${r.error?.message} (value ${JSON.stringify(r.value)})`);
      t.match(r.error?.message ?? '', message);
    } else {
      t.equal(r.value, 'sane', JSON.stringify(r));
    }
  });
}

t.test('backward takes its options first or second; bad arguments are ValueErrors', async (t) => {
  const x = kiln.tensor([1, 2, 3], { dtype: 'float32', requiresGrad: true });
  const y = kiln.tidy(() => x.square().sum());
  y.backward({ retainGraph: true });
  y.backward(null, { retainGraph: true });
  y.backward();
  t.same(x.grad!.toArray(), [6, 12, 18], 'three backward calls accumulate');
  const z = kiln.tidy(() => x.mul(2));
  z.backward(kiln.ones([3]), { retainGraph: false });
  t.throws(() => z.backward(), { name: 'AutogradError' }, 'the graph was freed');
  const w = kiln.tidy(() => x.sum());
  t.throws(() => w.backward(5 as never), { name: 'ValueError', message: /expected a gradient tensor or an options object/ });
  t.throws(() => w.backward([1] as never), { name: 'ValueError' });
  t.throws(() => w.backward({ retain_graph: true } as never), { name: 'ValueError', message: /unknown option retain_graph/ });
  t.throws(() => w.backward({ retainGraph: 1 } as never), { name: 'ValueError', message: /retainGraph must be a boolean/ });
  kiln.dispose([x, y, z, w]);
});

t.test('item() on a non-scalar, tidy(async) and a disposed item() throw kiln classes', async (t) => {
  const a = kiln.ones([2, 3]);
  t.throws(() => a.item(), { name: 'ShapeError', message: /^item: a tensor of shape \[2, 3\] has 6 elements/ });
  const before = kiln.memory().tensors;
  t.throws(() => kiln.tidy((async () => { kiln.ones([4]); }) as never), { name: 'ValueError', message: /^tidy: fn returned a Promise/ });
  t.equal(kiln.memory().tensors, before, 'what ran before the first await was freed');
  a.dispose();
  t.throws(() => a.item(), { name: 'DisposedError' });
});
