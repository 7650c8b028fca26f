// Module mechanics: registration by assignment, dotted names, containers, modes, buffers, state
// dicts (round trip, strict errors), freeze, zeroGrad, apply, to() keeping identities, weight tying,
// and that disposing a module frees its memory.
import t from 'tap';
import * as kiln from '../../lib/index';
import * as nn from '../../lib/nn';
import { values } from '../helpers/gradcheck';

class Attn extends nn.Module {
  qkv = new nn.Linear(4, 12);
  proj = new nn.Linear(4, 4, { bias: false });
}
class Blk extends nn.Module {
  ln = new nn.LayerNorm(4);
  attn = new Attn();
  scale = new nn.Parameter(kiln.ones([4]));
  mask: kiln.Tensor;
  constructor() {
    super();
    this.mask = this.registerBuffer('mask', kiln.tensor([1, 0, 1, 0], { dtype: 'bool' }));
    this.registerBuffer('scratch', kiln.zeros([2]), { persistent: false });
  }
  override forward(x: kiln.Tensor): kiln.Tensor {
    return this.attn.proj.forward(this.ln.forward(x)).mul(this.scale);
  }
}
class Net extends nn.Module {
  blocks = new nn.ModuleList([new Blk(), new Blk()]);
  head = new nn.Linear(4, 3);
  override forward(x: kiln.Tensor): kiln.Tensor {
    let h = x;
    for (const b of this.blocks) h = b.forward(h);
    return this.head.forward(h).sum();
  }
}

t.test('parameters, children and modules are found by assignment, with dotted names', async (t) => {
  const net = new Net();
  const names = net.namedParameters().map(([n]) => n);
  t.same(names, [
    'blocks.0.scale', 'blocks.0.ln.weight', 'blocks.0.ln.bias', 'blocks.0.attn.qkv.weight', 'blocks.0.attn.qkv.bias', 'blocks.0.attn.proj.weight',
    'blocks.1.scale', 'blocks.1.ln.weight', 'blocks.1.ln.bias', 'blocks.1.attn.qkv.weight', 'blocks.1.attn.qkv.bias', 'blocks.1.attn.proj.weight',
    'head.weight', 'head.bias',
  ]);
  t.equal(net.parameters().length, 14);
  t.ok(net.parameters().every((p) => p instanceof nn.Parameter && p.requiresGrad && p.isLeaf));
  t.same(net.namedChildren().map(([n]) => n), ['blocks', 'head']);
  t.same(net.namedModules().map(([n]) => n), ['', 'blocks', 'blocks.0', 'blocks.0.ln', 'blocks.0.attn', 'blocks.0.attn.qkv', 'blocks.0.attn.proj', 'blocks.1', 'blocks.1.ln', 'blocks.1.attn', 'blocks.1.attn.qkv', 'blocks.1.attn.proj', 'head']);
  t.equal(net.getSubmodule('blocks.1.attn.qkv'), (net.blocks.at(1) as Blk).attn.qkv);
  t.throws(() => net.getSubmodule('blocks.7'), kiln.ValueError);
  t.same(net.namedBuffers().map(([n]) => n), ['blocks.0.mask', 'blocks.0.scratch', 'blocks.1.mask', 'blocks.1.scratch']);
  t.equal(net.numParameters(), 2 * (4 + 8 + 60 + 16) + 15);
  t.same(net.namedParameters({ recurse: false }), []);
  t.match(net.toString(), /Net\(\n {2}\(blocks\): ModuleList\(\n {4}\(0\): Blk\(/);
  net.dispose();
});

t.test('containers: Sequential runs in order, ModuleList and ModuleDict index their modules', async (t) => {
  const seq = new nn.Sequential(new nn.Linear(2, 3), new nn.ReLU(), new nn.Linear(3, 1));
  t.same(seq.namedParameters().map(([n]) => n), ['0.weight', '0.bias', '2.weight', '2.bias']);
  const x = kiln.tensor([[1, -2], [0.5, 3]]);
  const l0 = seq.at(0) as nn.Linear, l2 = seq.at(-1) as nn.Linear;
  const manual = l2.forward(l0.forward(x).relu());
  t.same(values(seq.forward(x)), values(manual));
  const list = new nn.ModuleList<nn.Linear>().push(new nn.Linear(1, 1));
  t.equal(list.length, 1);
  t.throws(() => list.at(3), kiln.ValueError);
  const dict = new nn.ModuleDict({ enc: new nn.Linear(2, 2), dec: new nn.Linear(2, 2, { bias: false }) });
  t.same(dict.namedParameters().map(([n]) => n), ['enc.weight', 'enc.bias', 'dec.weight']);
  t.same(dict.keys(), ['enc', 'dec']);
  t.throws(() => dict.get('nope'), kiln.ValueError);
  t.throws(() => dict.set('a.b', new nn.Linear(1, 1)), kiln.ValueError);
  t.throws(() => new nn.ModuleList().forward(x), kiln.KilnError);
  for (const m of [seq, list, dict]) m.dispose();
});

t.test('train() and eval() set the flag on every module; apply visits children first', async (t) => {
  const net = new Net();
  t.ok(net.modules().every((m) => m.training));
  net.eval();
  t.ok(net.modules().every((m) => !m.training));
  net.train();
  t.ok(net.modules().every((m) => m.training));
  const order: string[] = [];
  net.head.apply((m) => order.push(m.constructor.name));
  net.apply((m) => order.push(m.constructor.name));
  t.same(order.slice(0, 2), ['Linear', 'LayerNorm']);
  t.equal(order[order.length - 1], 'Net');
  net.dispose();
});

t.test('stateDict round trip restores outputs; buffers included unless non-persistent', async (t) => {
  kiln.manualSeed(1);
  const a = new Net();
  const b = new Net();
  const x = kiln.randn([3, 4]);
  const ya = values(a.forward(x));
  t.not(values(b.forward(x))[0], ya[0]);
  const sd = a.stateDict();
  t.ok(sd instanceof Map);
  t.ok(sd.has('blocks.0.mask') && !sd.has('blocks.0.scratch'));
  t.equal(sd.size, 14 + 2);
  const res = b.loadStateDict(sd);
  t.same(res, { missingKeys: [], unexpectedKeys: [] });
  t.same(values(b.forward(x)), ya);
  // The state dict aliases the module's storage; disposing it leaves the module intact.
  kiln.dispose(sd);
  t.same(values(a.forward(x)), ya);
  // A record works as well as a Map, and values are converted to the parameter's dtype.
  const rec: Record<string, kiln.Tensor> = {};
  for (const [k, v] of b.stateDict()) rec[k] = v.dtype === 'float32' ? v.double() : v;
  a.loadStateDict(rec);
  t.equal(a.head.weight.dtype, 'float32');
  a.dispose();
  b.dispose();
});

t.test('loadStateDict: strict errors list missing, unexpected and mismatched keys; nothing is copied', async (t) => {
  const net = new Net();
  const sd = net.stateDict();
  const before = values(net.head.bias!);
  sd.delete('head.weight');
  sd.set('head.extra', kiln.zeros([1]));
  sd.set('head.bias', kiln.zeros([3]));
  t.throws(() => net.loadStateDict(sd), { name: 'ValueError', message: /missing keys: head\.weight[\s\S]*unexpected keys: head\.extra/ });
  t.same(values(net.head.bias!), before, 'nothing copied after a failed check');
  const res = net.loadStateDict(sd, { strict: false });
  t.same(res, { missingKeys: ['head.weight'], unexpectedKeys: ['head.extra'] });
  t.same(values(net.head.bias!), [0, 0, 0]);
  sd.set('head.bias', kiln.zeros([4]));
  t.throws(() => net.loadStateDict(sd, { strict: false }), { name: 'ShapeError', message: /size mismatch for head\.bias: shape \[4\] in the state dict, \[3\] in the model/ });
  net.dispose();
});

t.test('freeze stops gradients; unfreeze restores them; zeroGrad sets grads to null', async (t) => {
  const net = new Net();
  const x = kiln.randn([2, 4]);
  net.blocks.at(0).freeze();
  net.forward(x).backward();
  const grads = net.namedParameters().map(([n, p]) => [n, p.grad !== null] as const);
  t.ok(grads.filter(([n]) => n.startsWith('blocks.0.')).every(([, g]) => !g), 'frozen block gets no gradient');
  t.ok(grads.filter(([n]) => !n.startsWith('blocks.0.') && n !== 'blocks.1.attn.qkv.weight' && n !== 'blocks.1.attn.qkv.bias').every(([, g]) => g));
  t.equal(net.numParameters({ trainableOnly: true }), net.numParameters() - (4 + 8 + 60 + 16));
  net.unfreeze();
  t.ok(net.parameters().every((p) => p.requiresGrad));
  const g = net.head.weight.grad!;
  net.zeroGrad();
  t.ok(net.parameters().every((p) => p.grad === null));
  t.ok(g.isDisposed, 'zeroGrad frees the old gradients');
  net.forward(x).backward();
  net.zeroGrad(false);
  t.same(values(net.head.weight.grad!), new Array(12).fill(0));
  net.dispose();
});

t.test('to(dtype) converts parameters, grads and float buffers in place; objects keep their identity', async (t) => {
  const net = new Net();
  const w = net.head.weight;
  const vals = values(w);
  const blk = net.blocks.at(0) as Blk;
  const mask = blk.mask;
  net.forward(kiln.randn([2, 4])).backward();
  const before = kiln.memory();
  net.to('float64');
  t.equal(net.head.weight, w, 'same Parameter object');
  t.equal(w.dtype, 'float64');
  t.equal(w.grad!.dtype, 'float64');
  t.ok(w.requiresGrad && w.isLeaf);
  t.same(values(w).map((v) => Math.fround(v)), vals);
  t.equal(blk.mask, mask);
  t.equal(mask.dtype, 'bool', 'non-float buffers keep their dtype');
  t.equal(blk.getBuffer('scratch')!.dtype, 'float64');
  t.equal(kiln.memory().tensors, before.tensors, 'no handles leaked by the move');
  t.equal(net.forward(kiln.randn([2, 4], { dtype: 'float64' })).dtype, 'float64');
  net.float();
  t.equal(w.dtype, 'float32');
  net.dispose();
});

t.test('Parameter: shares storage, setData rebinds, weight tying counts once', async (t) => {
  const data = kiln.tensor([1, 2, 3], { dtype: 'float32' });
  const p = new nn.Parameter(data);
  t.ok(p.requiresGrad && p.isLeaf);
  kiln.noGrad(() => data.mul_(2));
  t.same(values(p), [2, 4, 6], 'shares storage with its source');
  p.setData(kiln.tensor([[5.5, 6]]));
  t.same(p.shape, [1, 2]);
  t.same(values(p), [5.5, 6]);
  t.throws(() => p.setData(kiln.tensor([1, 2])), kiln.AutogradError);
  t.throws(() => new nn.Parameter(kiln.tensor([1, 2])), kiln.AutogradError, 'integer tensors cannot be parameters');
  t.notOk(new nn.Parameter(kiln.tensor([1, 2]), false).requiresGrad);

  const emb = new nn.Embedding(10, 4);
  class Tied extends nn.Module {
    emb = emb;
    head = new nn.Linear(4, 10, { bias: false, weight: emb.weight });
  }
  const m = new Tied();
  t.same(m.namedParameters().map(([n]) => n), ['emb.weight']);
  t.same(m.namedParameters({ removeDuplicate: false }).map(([n]) => n), ['emb.weight', 'head.weight']);
  t.equal(m.numParameters(), 40);
  t.same([...m.stateDict().keys()], ['emb.weight', 'head.weight']);
  t.throws(() => new nn.Linear(4, 9, { weight: emb.weight }), kiln.ShapeError);
  m.dispose();
});

t.test('registerBuffer replaces and frees; dispose frees every parameter and buffer', async (t) => {
  const start = kiln.memory();
  const net = kiln.tidy(() => new Net());
  t.ok(kiln.memory().tensors > start.tensors, 'parameters survive the tidy scope they were built in');
  const blk = net.blocks.at(0) as Blk;
  const old = blk.getBuffer('scratch')!;
  blk.registerBuffer('scratch', kiln.ones([3]), { persistent: false });
  t.ok(old.isDisposed);
  t.throws(() => blk.registerBuffer('a.b', null), kiln.ValueError);
  kiln.tidy(() => net.forward(kiln.randn([1, 4])).backward());
  net.dispose();
  const end = kiln.memory();
  t.equal(end.bytes, start.bytes, 'all bytes freed');
});

t.test('200,000 nested or listed modules: traversals do not overflow the call stack', async (t) => {
  const N = 200_000;
  class Link extends nn.Module {
    next: Link | nn.Linear | null = null;
  }
  const root = new Link();
  let tail = root;
  for (let i = 1; i < N; i++) tail = tail.next = new Link();
  const leaf = (tail.next = new nn.Linear(1, 1));
  const mods = root.namedModules();
  t.equal(mods.length, N + 1, 'every link and the Linear');
  t.same(mods.slice(0, 3).map(([n]) => n), ['', 'next', 'next.next'], 'depth-first names');
  t.same(root.namedParameters().map(([n]) => n), ['weight', 'bias'].map((p) => `${'next.'.repeat(N)}${p}`));
  t.same([...root.stateDict().keys()], root.namedParameters().map(([n]) => n));
  const visited: nn.Module[] = [];
  root.apply((m) => void visited.push(m));
  t.equal(visited.length, N + 1);
  t.ok(visited[0] === leaf && visited[N] === root, 'apply goes from the deepest module up to root');
  root.eval();
  t.notOk(tail.training, 'eval() reaches the deepest link');

  const list = new nn.ModuleList(Array.from({ length: N }, () => new nn.ReLU()));
  const listed = list.namedModules();
  t.equal(listed.length, N + 1);
  t.equal(listed[N][0], String(N - 1));
  let count = 0;
  list.apply(() => void count++);
  t.equal(count, N + 1);
  leaf.dispose();
});
