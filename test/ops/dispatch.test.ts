// The op path of lib/ops/dispatch.ts as the elementwise, reduce and softmax families use it: the
// kernels the addon reports (signatures and dtypes per backend), the float32 fallback where a backend
// has no half kernel, and autocast's categories; withKernelMarks' hook for kernel profiling.
import t from 'tap';
import * as kiln from '../../lib/index';
import { autocast } from '../../lib/autocast';
import { native } from '../../lib/native';
import { kernelDTypes, withKernelMarks } from '../../lib/ops/dispatch';
import { randomTensor, values } from '../helpers/gradcheck';

const ALL = ['float32', 'float64', 'bfloat16', 'float16', 'int32', 'int64', 'bool'];
const NO_HALF16 = ['float32', 'float64', 'bfloat16', 'int32', 'int64', 'bool'];
const FLOAT = ['float32', 'float64'];
const FLOAT_BF16 = ['float32', 'float64', 'bfloat16'];

// name -> [signature, cpu dtypes, cuda dtypes]
const FAMILY_KERNELS: Record<string, [string, string[], string[]]> = {
  unary: ['(op:e, x:T, out:T, s0:f, s1:f) -> void', ALL, NO_HALF16],
  binary: ['(op:e, a:T, b:T, out:T, s0:f, s1:f) -> void', ALL, NO_HALF16],
  where: ['(cond:T, a:T?, b:T?, sa:f, sb:f, out:T) -> void', ALL, NO_HALF16],
  reduce: ['(op:e, x:T, out:T, dims:s, param:f) -> void', ALL, NO_HALF16],
  softmaxForward: ['(x:T, dim:i, log:b, y:T) -> void', FLOAT, FLOAT_BF16],
  softmaxBackward: ['(y:T, gy:T, dim:i, log:b, gx:T) -> void', FLOAT, FLOAT_BF16],
  crossEntropyForward: [
    '(logits:T, target:T, ignoreIndex:i, labelSmoothing:f, reduction:e, loss:T, lse:T, totalWeight:T) -> void',
    FLOAT,
    FLOAT_BF16,
  ],
  crossEntropyBackward: [
    '(logits:T, target:T, lse:T, totalWeight:T, gradLoss:T, ignoreIndex:i, labelSmoothing:f, reduction:e, gradLogits:T) -> void',
    FLOAT,
    FLOAT_BF16,
  ],
};

t.test('kernels() lists the elementwise, reduce and softmax kernels with signatures and dtypes', async (t) => {
  const table = native.kernels();
  const cuda = kiln.buildInfo().cuda;
  for (const [name, [signature, cpu, cudaDTypes]] of Object.entries(FAMILY_KERNELS)) {
    const k = table[name];
    t.ok(k, `${name} is listed`);
    t.equal(k.signature, signature, `${name} signature`);
    t.same(k.cpu, cpu, `${name} cpu dtypes`);
    // A CPU-only build has no CUDA implementation to report.
    t.same(k.cuda, cuda ? cudaDTypes : [], `${name} cuda dtypes`);
  }
});

t.test('a bf16 softmax on the CPU computes in float32 and rounds the result to bf16', async (t) => {
  t.notOk(kernelDTypes('softmaxForward', -1).includes('bfloat16'), 'the CPU has no bf16 softmax kernel');
  const x32 = randomTensor([4, 33], 7, -4, 4, 'float32');
  const x = x32.to('bfloat16');
  x.requiresGrad = true;
  for (const op of ['softmax', 'logSoftmax'] as const) {
    const y = kiln[op](x, -1);
    t.equal(y.dtype, 'bfloat16', `${op} keeps the input dtype`);
    const want = kiln[op](x.detach().to('float32'), -1).to('bfloat16');
    t.same(values(y), values(want), `${op} equals the float32 ${op} rounded to bf16`);
  }
  const y = kiln.softmax(x, -1);
  y.mul(kiln.arange(33).to('bfloat16')).sum().backward();
  t.equal(x.grad!.dtype, 'bfloat16', 'the gradient comes back in bf16');
  t.same(x.grad!.shape, [4, 33]);

  const logits = x32.to('bfloat16');
  const target = kiln.tensor([0, 5, 32, 1], { dtype: 'int64' });
  const loss = kiln.crossEntropy(logits, target);
  t.equal(loss.dtype, 'bfloat16', 'crossEntropy keeps the input dtype');
  t.same(values(loss), values(kiln.crossEntropy(logits.to('float32'), target).to('bfloat16')));
});

t.test('autocast runs softmax and reductions in float32 and leaves plain arithmetic alone', async (t) => {
  const a = randomTensor([3, 8], 11, -2, 2, 'float32').to('bfloat16');
  const b = randomTensor([3, 8], 12, -2, 2, 'float32').to('bfloat16');
  autocast({ dtype: 'bfloat16' }, () => {
    const s = kiln.softmax(a, -1);
    t.equal(s.dtype, 'float32', 'softmax of a bf16 input returns float32');
    t.same(values(s), values(kiln.softmax(a.to('float32'), -1)), 'computed from the float32 input');
    t.equal(kiln.logSoftmax(a).dtype, 'float32');
    t.equal(kiln.crossEntropy(a, kiln.tensor([0, 1, 7], { dtype: 'int64' })).dtype, 'float32');
    t.equal(a.add(b).dtype, 'bfloat16', 'a plain add of two bf16 tensors stays bf16');
    t.equal(a.mul(2).dtype, 'bfloat16');
    t.equal(kiln.relu(a).dtype, 'bfloat16');
    for (const r of [kiln.sum(a), kiln.mean(a, 1), kiln.variance(a), kiln.std(a, 0), kiln.logsumexp(a, 1), kiln.exp(a), kiln.log(a.abs()), a.pow(2)]) {
      t.equal(r.dtype, 'float32', 'float32-list ops return float32');
    }
    t.equal(kiln.max(a).dtype, 'bfloat16', 'max follows its input');
    t.equal(kiln.argmax(a).dtype, 'int64');
    t.equal(kiln.sum(kiln.tensor([1, 2, 3])).dtype, 'int64', 'integer inputs are not cast');
  });
  t.equal(kiln.softmax(a).dtype, 'bfloat16', 'outside autocast softmax keeps bf16');
});

t.test('under autocast gradients reach the inputs in their own dtype', async (t) => {
  const x = randomTensor([2, 5], 21, -1, 1, 'float32').to('bfloat16');
  x.requiresGrad = true;
  const loss = autocast({ dtype: 'bfloat16' }, () => kiln.softmax(x.mul(3), -1).mul(kiln.arange(5)).sum());
  t.equal(loss.dtype, 'float32');
  loss.backward();
  t.equal(x.grad!.dtype, 'bfloat16');
  const ref = x.detach().to('float32');
  ref.requiresGrad = true;
  kiln.softmax(ref.to('bfloat16').mul(3).to('float32'), -1).mul(kiln.arange(5)).sum().backward();
  t.same(values(x.grad!), values(ref.grad!.to('bfloat16')), 'the float32 computation, rounded where autocast rounds');
});

t.test('withKernelMarks marks every kernel call, names the op of code-taking kernels, and unhooks after', async (t) => {
  const x = kiln.tensor([1, 2, 3], { dtype: 'float32' }), w = kiln.ones([3, 2]);
  const seen: string[] = [];
  const y = withKernelMarks((family, kernel) => seen.push(`${family}/${kernel}`), () => x.exp().add(1).reshape([1, 3]).matmul(w).sum());
  t.same(seen.slice(0, 2), ['elementwise/unary:exp', 'elementwise/unary:add_scalar']);
  t.ok(seen.includes('matmul/bmm') && seen.includes('reduce/reduce:sum'), seen.join(', '));
  t.ok(Math.abs(y.item() - 2 * (Math.E + Math.E ** 2 + Math.E ** 3 + 3)) < 1e-4, 'results are unchanged');
  seen.length = 0;
  x.exp().add(1).sum();
  t.same(seen, [], 'no marks once it has returned');
  t.throws(() => withKernelMarks(() => seen.push('mark'), () => kiln.zeros([2]).exp().add(kiln.zeros([3]))), { name: 'ShapeError' });
  const marks = seen.length;
  t.ok(marks >= 2, 'marked up to the throw');
  kiln.zeros([2]).exp();
  t.equal(seen.length, marks, 'unhooked after a throw as well');
});
