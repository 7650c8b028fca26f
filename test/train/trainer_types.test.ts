// The Trainer's types, checked by the TypeScript compiler (strict): fit() infers the batch type
// from the data (a DataLoader of a Dataset, a BatchSampler, an array), so a loss function written
// inline gets the model's own type and the batch type without casts or annotations; a Sequential
// chains tensor-to-tensor modules; and mistakes (a loss that misreads the batch) are type errors.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ts from 'typescript';

const root = path.join(__dirname, '..', '..');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-types-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const header = `
import { Tensor, nn, optim } from ${JSON.stringify(path.join(root, 'lib', 'index'))};
import { DataLoader, TensorDataset, Dataset } from ${JSON.stringify(path.join(root, 'lib', 'data', 'index'))};
import { Trainer } from ${JSON.stringify(path.join(root, 'lib', 'train', 'index'))};
class Regressor extends nn.Module {
  body = new nn.Sequential(new nn.Linear(2, 8), new nn.ReLU(), new nn.Linear(8, 1));
  override forward(x: Tensor): Tensor { return this.body.forward(x); }
  describe(): string { return 'regressor'; }
}
declare const pairs: Dataset<[Tensor, Tensor]>;
declare const x: Tensor, y: Tensor;
const model = new Regressor();
const trainer = new Trainer({ model, optimizer: new optim.AdamW(model.parameters()) });
`;

/** The compiler's messages for a file made of header and body, each with its line in body (1-based). */
function diagnose(name: string, body: string): Array<{ line: number; text: string }> {
  const file = path.join(dir, `${name}.ts`);
  fs.writeFileSync(file, header + body);
  const program = ts.createProgram([file], {
    strict: true, noEmit: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS, lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
    types: ['node'], typeRoots: [path.join(root, 'node_modules', '@types')], esModuleInterop: true, skipLibCheck: true,
  });
  const headerLines = header.split('\n').length - 1;
  return ts.getPreEmitDiagnostics(program).map((d) => ({
    line: d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line + 1 - headerLines : 0,
    text: ts.flattenDiagnosticMessageText(d.messageText, ' '),
  }));
}

t.test('a loss written inline gets the model and the batch types from fit()', async (t) => {
  const errors = diagnose('good', `
async function main() {
  await trainer.fit({
    train: new DataLoader(pairs, { batchSize: 4 }),
    val: [[x, y]],
    loss: (m, [input, target]) => {
      const label: string = m.describe();
      return nn.mseLoss(m.forward(input), target);
    },
    steps: 1,
  });
  await trainer.fit({ train: new DataLoader(new TensorDataset(x, y)), loss: (m, [a, b]) => nn.mseLoss(m.forward(a), b), epochs: 1 });
  await trainer.fit({ train: { sample: () => ({ input: x, target: y }) }, loss: (m, b) => nn.mseLoss(m.forward(b.input), b.target), steps: 1 });
  trainer.model.describe();
  trainer.evaluate([[x, y]], { loss: (m, [a, b]) => nn.mseLoss(m.forward(a), b) });
}
`);
  t.same(errors, [], 'no type errors');
});

t.test('misreading the batch or the model is a type error', async (t) => {
  const errors = diagnose('bad', `
async function main() {
  await trainer.fit({ train: new DataLoader(pairs), loss: (m, [input, target, extra]) => nn.mseLoss(m.forward(input), extra), steps: 1 });
  await trainer.fit({ train: [{ input: x }], loss: (m, b) => nn.mseLoss(m.forward(b.target), y), steps: 1 });
  await trainer.fit({ train: [[x, y]], loss: (m, [a]) => m.generate(a), steps: 1 });
  new nn.Sequential(new nn.GPT({ vocabSize: 5, blockSize: 4, nLayer: 1, nHead: 1, nEmbd: 4 }));
}
`);
  const on = (line: number) => errors.filter((e) => e.line === line).map((e) => e.text).join(' | ');
  t.match(on(3), /Tuple type '\[Tensor, Tensor\]' of length '2' has no element at index '2'/, 'a third element of a pair');
  t.match(on(4), /Property 'target' does not exist on type '\{ input: Tensor; \}'/, 'a field the batch does not have');
  t.match(on(5), /Property 'generate' does not exist on type 'Regressor'/, "a method of another model");
  t.match(on(6), /'GPT' is not assignable to parameter of type 'TensorModule'/, 'Sequential takes tensor-to-tensor modules only');
  t.same(errors.filter((e) => e.line < 3 || e.line > 6), [], 'no other errors');
});
