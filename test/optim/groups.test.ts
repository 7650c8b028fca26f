// optim.groupsByName: parameters go to the first matching rule, the rest to a default group, frozen
// ones nowhere (so they get no optimizer state and stay bit-identical through steps).
import t from 'tap';
import * as kiln from '../../lib';
import { nn, optim } from '../../lib';

t.test('groups by name; frozen parameters get no state and do not change', async (t) => {
  kiln.manualSeed(1);
  const gpt = new nn.GPT({ vocabSize: 12, blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 8 });
  gpt.blocks.at(0).freeze();
  const frozen = gpt.blocks.at(0).parameters().map((p) => Float32Array.from(p.dataSync() as Float32Array));
  const groups = optim.groupsByName<optim.AdamOptions>(gpt, [
    { match: /([bB]ias|ln\w*\.weight)$/, options: { weightDecay: 0 } },
    { match: 'wpe.weight', options: { lr: 1e-4 } },
  ]);
  t.equal(groups.length, 3);
  const names = new Map(gpt.namedParameters().map(([n, p]) => [p, n]));
  const of = (g: { params: unknown }) => [...(g.params as Iterable<nn.Parameter>)].map((p) => names.get(p)!);
  t.ok(of(groups[0]).every((n) => /[bB]ias$|ln\w*\.weight$/.test(n)) && of(groups[0]).length === 10, `no decay: ${of(groups[0]).join(' ')}`);
  t.same(of(groups[1]), ['wpe.weight']);
  t.ok(!of(groups[2]).some((n) => n.startsWith('blocks.0.')), 'frozen parameters are in no group');
  const opt = new optim.AdamW(groups, { lr: 1e-2, weightDecay: 0.1 });
  t.same(opt.paramGroups.map((g) => [g.lr, g.weightDecay]), [[1e-2, 0], [1e-4, 0.1], [1e-2, 0.1]]);
  const x = kiln.randint(0, 12, [2, 8]);
  for (let i = 0; i < 3; i++) {
    gpt.forward(x, x).loss!.backward();
    opt.step();
    opt.zeroGrad();
  }
  gpt.blocks.at(0).parameters().forEach((p, i) => t.same(p.dataSync(), frozen[i], 'a frozen parameter is bit-identical'));
  t.ok(gpt.blocks.at(0).parameters().every((p) => !opt.state.has(p) && p.grad === null), 'and has no gradient and no optimizer state');
  t.throws(() => optim.groupsByName(gpt, [{ match: 'nope', options: {} }]), { name: 'ValueError', message: /rules nope match no trainable parameter/ });
  t.throws(() => optim.groupsByName(gpt, [{ match: 3 as never, options: {} }]), /rules\[0\] must be/);
});
