// The autograd engine: accumulation (in place into an existing .grad, which may view a larger buffer),
// graphs with shared nodes, hooks, retainGrad, noGrad, detach, and the errors for backward misuse.
import t from 'tap';
import * as kiln from '../lib/index';
import { values } from './helpers/gradcheck';

t.test('gradients of a small expression, against hand-derived values', async (t) => {
  const x = kiln.tensor([1, 2, 3], { dtype: 'float64', requiresGrad: true });
  const w = kiln.tensor([0.5, -1, 2], { dtype: 'float64', requiresGrad: true });
  const y = x.mul(w).add(x.mul(x)).sum(); // sum(x*w + x^2)
  y.backward();
  t.same(values(x.grad!), [0.5 + 2, -1 + 4, 2 + 6]); // w + 2x
  t.same(values(w.grad!), [1, 2, 3]);
  t.ok(x.isLeaf && !y.isLeaf);
  t.equal(y.gradFn!.name, 'sum');
});

t.test('gradients accumulate across backward calls until zeroed', async (t) => {
  const x = kiln.tensor([2], { dtype: 'float64', requiresGrad: true });
  x.mul(3).sum().backward();
  x.mul(3).sum().backward();
  t.same(values(x.grad!), [6]);
  x.grad!.zero_();
  x.mul(x).sum().backward();
  t.same(values(x.grad!), [4]);
});

t.test('a tensor used by several ops gets the sum of their gradients (diamond graph)', async (t) => {
  const x = kiln.tensor([1.5], { dtype: 'float64', requiresGrad: true });
  const a = x.mul(2);
  const b = a.mul(a); // 4x^2
  const c = a.add(b); // 2x + 4x^2 -> d/dx = 2 + 8x = 14
  c.sum().backward();
  t.same(values(x.grad!), [14]);
});

t.test('backward on a non-scalar needs a gradient of the same shape', async (t) => {
  const x = kiln.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
  const y = x.mul(3);
  t.throws(() => y.backward(), kiln.AutogradError);
  t.throws(() => y.backward(kiln.ones([3], { dtype: 'float64' })), kiln.AutogradError);
  y.backward(kiln.tensor([1, 10], { dtype: 'float64' }));
  t.same(values(x.grad!), [3, 30]);
});

t.test('backward twice through a freed graph is an error; retainGraph allows it', async (t) => {
  const x = kiln.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
  const y = x.mul(x).sum();
  y.backward();
  t.throws(() => y.backward(), { name: 'AutogradError', message: /second time/ });
  const z = x.mul(x).sum();
  z.backward(undefined, { retainGraph: true });
  z.backward();
  t.same(values(x.grad!), [6, 12], "three backward passes of d(x^2)/dx = [2, 4]");
});

t.test('backward on a tensor that does not require grad is an error', async (t) => {
  t.throws(() => kiln.tensor([1.0]).sum().backward(), kiln.AutogradError);
  t.throws(() => kiln.tensor([1, 2]).requiresGrad_(), kiln.AutogradError, 'int tensors cannot require grad');
});

t.test('noGrad records nothing; detach cuts the graph but shares data', async (t) => {
  const x = kiln.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
  const y = kiln.noGrad(() => x.mul(2));
  t.notOk(y.requiresGrad);
  t.equal(y.gradFn, null);
  t.notOk(kiln.isGradEnabled() === false);
  const d = x.detach();
  t.notOk(d.requiresGrad);
  t.same(d.toArray(), [1, 2]);
  const z = kiln.noGrad(() => kiln.enableGrad(() => x.mul(2)));
  t.ok(z.requiresGrad);
});

t.test('tensor hooks see and may replace gradients; post-accumulate hooks run after .grad is set', async (t) => {
  const x = kiln.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
  const seen: number[][] = [];
  x.registerHook((g) => {
    seen.push(values(g));
    return g.mul(10);
  });
  const order: string[] = [];
  const h = x.registerPostAccumulateGradHook((p) => order.push(`post:${values(p.grad!).join(',')}`));
  const mid = x.mul(3);
  mid.registerHook((g) => void order.push(`mid:${values(g).join(',')}`));
  mid.sum().backward();
  t.same(seen, [[3, 3]]);
  t.same(values(x.grad!), [30, 30]);
  t.same(order, ['mid:1,1', 'post:30,30']);
  h.remove();
  x.mul(1).sum().backward();
  t.equal(order.length, 2, 'removed hook does not run');
});

t.test('a leaf reached by several paths gets one summed gradient: its hooks run once per backward', async (t) => {
  const w = kiln.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
  const seen: number[][] = [];
  let posts = 0;
  w.registerHook((g) => void seen.push(values(g)));
  w.registerPostAccumulateGradHook(() => posts++);
  // w feeds three edges: mul's two inputs and the add.
  w.mul(w).add(w).sum().backward();
  t.same(seen, [[3, 5]], 'the hook sees 2w + 1 once');
  t.equal(posts, 1, 'the post-accumulate hook runs once (a data-parallel all-reduce would run once)');
  t.same(values(w.grad!), [3, 5]);
  // A shared layer applied twice, as in weight tying.
  const lin = new kiln.nn.Linear(2, 2, { dtype: 'float64' });
  let calls = 0;
  lin.weight.registerPostAccumulateGradHook(() => calls++);
  const x = kiln.tensor([[1, 2]], { dtype: 'float64' });
  lin.forward(lin.forward(x)).sum().backward();
  t.equal(calls, 1);
});

t.test('retainGrad keeps the gradient of a non-leaf', async (t) => {
  const x = kiln.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
  const y = x.mul(2);
  y.retainGrad();
  y.mul(y).sum().backward();
  t.same(values(y.grad!), [4, 8]);
  t.same(values(x.grad!), [8, 16]);
});

t.test('saved tensors survive the user disposing the inputs', async (t) => {
  const x = kiln.tensor([1, 2, 3], { dtype: 'float64', requiresGrad: true });
  const w = kiln.tensor([4, 5, 6], { dtype: 'float64' });
  const y = x.mul(w).sum();
  w.dispose();
  y.backward();
  t.same(values(x.grad!), [4, 5, 6]);
});

t.test('backward inside tidy keeps the gradients', async (t) => {
  const x = kiln.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
  kiln.tidy(() => {
    x.mul(x).sum().backward();
  });
  t.notOk(x.grad!.isDisposed);
  t.same(values(x.grad!), [2, 4]);
});

t.test('gradient flows through dtype conversion', async (t) => {
  const x = kiln.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
  x.to('float32').mul(2).sum().backward();
  t.equal(x.grad!.dtype, 'float64');
  t.same(values(x.grad!), [2, 2]);
});

t.test('in-place writes bump _version, shared by views', async (t) => {
  const x = kiln.zeros([2, 3]);
  t.equal(x._version, 0);
  x.add_(1);
  t.equal(x._version, 1);
  const row = x.select(0, 1);
  row.fill_(5);
  t.equal(x._version, 2, 'a write through a view counts for the base');
  t.equal(row._version, 2);
  x.copy_(kiln.ones([3]));
  x.mul_(2).div_(2).sub_(1);
  t.equal(x._version, 6);
  t.equal(x.add(1)._version, 0, 'out-of-place results start at 0');
});

t.test('backward refuses a saved tensor that was written in place after it was saved', async (t) => {
  const a = kiln.tensor([1, 2, 3], { dtype: 'float64', requiresGrad: true });
  const b = kiln.tensor([4, 5, 6], { dtype: 'float64' });
  const y = a.mul(b).sum(); // mul saves b
  b.add_(1);
  t.throws(() => y.backward(), { name: 'AutogradError', message: /mul saved for backward was modified by an in-place operation after it was saved \(version 0, now 1\)/ });
  t.equal(a.grad, null, 'nothing was accumulated');

  // Written through a view, under noGrad (as an optimizer or an EMA update would).
  const w = kiln.tensor([[1, 2], [3, 4]], { dtype: 'float64', requiresGrad: true });
  const x = kiln.tensor([[1, 1], [2, 2]], { dtype: 'float64', requiresGrad: true });
  const z = x.mul(w).sum(); // saves w
  kiln.noGrad(() => w.select(0, 0).mul_(2));
  t.throws(() => z.backward(), /modified by an in-place operation/);

  // An optimizer step between forward and backward (the step writes the parameter).
  const p = new kiln.nn.Parameter(kiln.tensor([1, 2], { dtype: 'float64' }));
  const opt = new kiln.optim.SGD([p], { lr: 0.1 });
  const loss = p.mul(p).sum();
  p.grad = kiln.ones([2], { dtype: 'float64' });
  opt.step();
  t.throws(() => loss.backward(), /modified by an in-place operation/);

  // A retained graph checks again on the second backward.
  const c = kiln.tensor([2, 3, 4], { dtype: 'float64' });
  const r = a.mul(c).sum();
  r.backward(undefined, { retainGraph: true });
  c.fill_(0);
  t.throws(() => r.backward(), /modified by an in-place operation/);
});

t.test('in-place writes to tensors that were not saved leave backward alone', async (t) => {
  const a = kiln.tensor([1, 2, 3], { dtype: 'float64', requiresGrad: true });
  const b = kiln.tensor([4, 5, 6], { dtype: 'float64' });
  const y = a.add(b).sum(); // add saves nothing
  b.add_(1);
  y.backward();
  t.same(values(a.grad!), [1, 1, 1]);
  // Writing before the op records it is fine too.
  const c = kiln.tensor([1, 1, 1], { dtype: 'float64' });
  c.mul_(3);
  const z = a.mul(c).sum();
  z.backward();
  t.same(values(a.grad!), [4, 4, 4]);
});

t.test('copy_ and fill_ refuse tensors in a recorded graph, like the other in-place ops', async (t) => {
  const a = kiln.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
  const h = a.mul(2);
  t.throws(() => h.fill_(0), { name: 'AutogradError', message: /fill_: in-place ops are not recorded/ });
  t.throws(() => h.copy_(kiln.zeros([2], { dtype: 'float64' })), { name: 'AutogradError', message: /copy_/ });
  t.throws(() => kiln.zeros([2], { dtype: 'float64' }).copy_(h), { name: 'AutogradError', message: /copy_/ }, 'a source that requires grad');
  kiln.noGrad(() => h.fill_(0));
  t.same(values(h), [0, 0], 'under noGrad the write happens');
});

t.test('backward adds into an existing .grad in place: a .grad that views a flat buffer stays that view', async (t) => {
  const a = kiln.tensor([1, 2, 3], { dtype: 'float64', requiresGrad: true });
  const b = kiln.tensor([[1, -1], [2, 0.5]], { dtype: 'float64', requiresGrad: true });
  // A data-parallel wrapper's bucket: one flat buffer, each parameter's .grad a view of its range.
  const flat = kiln.zeros([8], { dtype: 'float64' });
  const ga = flat.narrow(0, 0, 3);
  const gb = flat.narrow(0, 4, 4).view(2, 2);
  a.grad = ga;
  b.grad = gb;
  const loss = () => a.mul(a).sum().add(b.mul(a.narrow(0, 0, 2).unsqueeze(0)).sum());
  loss().backward();
  loss().backward();
  t.equal(a.grad, ga, 'a.grad is still the same view');
  t.equal(b.grad, gb, 'b.grad too');
  // d/da = 2a + [b00 + b10, b01 + b11, 0], d/db = a[0:2] per row; twice.
  t.same(values(flat), [2 * (2 + 3), 2 * (4 - 0.5), 2 * 6, 0, 2, 4, 2, 4], 'the flat buffer holds the sum of both backwards');
  const opt = new kiln.optim.SGD([a, b], { lr: 0.1 });
  opt.zeroGrad(false);
  t.equal(a.grad, ga, 'zeroGrad(false) keeps the view');
  t.same(values(flat), new Array(8).fill(0), 'and zeroes the buffer through it');
  loss().backward();
  t.same(values(flat).slice(4), [1, 2, 1, 2], 'the next backward lands in the buffer again');
  opt.zeroGrad();
  t.equal(a.grad, null, 'zeroGrad() (setToNone, the default) drops the views');
  t.notOk(flat.isDisposed, 'but not the buffer they viewed');
});

t.test('the first backward allocates .grad; a .grad of the wrong shape is an error, not a broadcast', async (t) => {
  const x = kiln.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
  x.mul(2).sum().backward();
  const g = x.grad!;
  t.notOk(g.isDisposed);
  x.mul(3).sum().backward();
  t.equal(x.grad, g, 'the second backward adds into the first one\'s tensor');
  t.same(values(g), [5, 5]);
  const before = g._version;
  x.sum().backward();
  t.ok(g._version > before, 'an in-place write: the version moves');
  x.grad = kiln.zeros([1], { dtype: 'float64' });
  t.throws(() => x.sum().backward(), /has shape \[1\]/);
  const y = kiln.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
  const h = y.mul(2);
  h.retainGrad();
  h.sum().backward({ retainGraph: true });
  const hg = h.grad!;
  h.sum().backward();
  t.equal(h.grad, hg, 'a retained non-leaf gradient accumulates in place too');
  t.same(values(hg), [2, 2]);
});

t.test('hooks own what they return: .grad copies a hook result, never disposes or writes into it', async (t) => {
  const w = kiln.tensor([1.5, 2.5], { requiresGrad: true });
  const fixed = kiln.tensor([10.5, 10.5]);
  w.registerHook(() => fixed);
  w.mul(3).sum().backward();
  w.mul(3).sum().backward();
  t.notOk(fixed.isDisposed, "the hook's tensor is alive");
  t.same(fixed.toArray(), [10.5, 10.5], 'and unchanged');
  t.same(w.grad!.toArray(), [21, 21], '.grad holds the sum');
  const v = kiln.tensor([1.5, 2.5], { requiresGrad: true });
  const seen: kiln.Tensor[] = [];
  v.registerHook((g) => void seen.push(g));
  v.mul(3).sum().backward();
  v.mul(5).sum().backward();
  t.same(seen[0].toArray(), [3, 3], 'a gradient a hook kept is not accumulated into');
  t.same(v.grad!.toArray(), [8, 8]);
});
