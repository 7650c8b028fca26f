// The autograd engine: accumulation, graphs with shared nodes, hooks, retainGrad, noGrad, detach,
// and the errors for backward misuse.
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
