// What a TypeScript user of the package compiles against: the built declarations (dist/*.d.ts,
// reached through the package's "exports" as node_modules/kiln) in a strict project with no
// @types/node ("types": []), a plain ES2022 lib and skipLibCheck off, so every declaration file kiln
// ships is checked. The declarations must name no Node.js types (Buffer, NodeJS.*) and must not show
// @internal members (tsconfig stripInternal). Needs `npm run build:ts` (CI's npm ci runs it).
import t from 'tap';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.join(__dirname, '..');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-consumer-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
fs.mkdirSync(path.join(dir, 'node_modules'));
fs.symlinkSync(root, path.join(dir, 'node_modules', 'kiln'), 'dir');

// A short training program touching the main public types, in CommonJS and as an ES module.
const program = `
import * as kiln from 'kiln';
import { Tensor, nn, optim, train, io, data, ShapeError } from 'kiln';
import type { TensorOptions, BackwardOptions, MemoryInfo } from 'kiln';

const opts: TensorOptions = { dtype: 'float32', device: 'cpu', requiresGrad: true };
const w: Tensor = kiln.randn([4, 1], opts);
const x = kiln.tidy(() => kiln.zeros([8, 4]).add(kiln.ones([4])).matmul(w).relu());
const backward: BackwardOptions = { retainGraph: false };
x.sum().backward(backward);
const held: MemoryInfo = kiln.memory();
const err: ShapeError | null = null;

const model = new nn.GPT({ vocabSize: 16, blockSize: 8, nLayer: 1, nHead: 2, nEmbd: 8 });
const optimizer = new optim.AdamW(model.parameters(), { lr: 1e-3, weightDecay: 0.1 });
const lines: string[] = [];
const trainer = new train.Trainer({
  model, optimizer, progress: 'log', progressStream: { write: (s: string) => lines.push(s) },
  scheduler: (o, steps) => new optim.WarmupCosineLR(o, { warmupSteps: 1, totalSteps: steps }),
});
const ids = kiln.randint(0, 16, [2, 8]);
const loader = new data.DataLoader(new data.TensorDataset(ids, ids), { batchSize: 1, shuffle: true });

export async function main(): Promise<number> {
  const result: train.FitResult = await trainer.fit({ train: loader, steps: 1 });
  io.saveCheckpoint('checkpoint.safetensors', { model, optimizer, state: { step: result.step } });
  const c: io.Checkpoint = io.readCheckpoint('checkpoint.safetensors');
  io.disposeCheckpoint(c);
  kiln.dispose([w, x, ids]);
  return held.bytes + lines.length + (err ? 1 : 0);
}

// @ts-expect-error Tensor's native handle is @internal: stripped from the declarations
w._h;
// @ts-expect-error the op files' helpers are not exported
kiln.gemmRaw;
`;
fs.writeFileSync(path.join(dir, 'main.ts'), program);
fs.writeFileSync(path.join(dir, 'esm.mts'), program);
fs.writeFileSync(
  path.join(dir, 'tsconfig.json'),
  JSON.stringify({
    compilerOptions: {
      strict: true, noEmit: true, types: [], skipLibCheck: false, lib: ['ES2022'], target: 'ES2022', module: 'node16',
      moduleResolution: 'node16',
    },
    files: ['main.ts', 'esm.mts'],
  }),
);

t.test('a strict project without @types/node compiles against the built declarations', async (t) => {
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', dir], { cwd: dir, encoding: 'utf8' });
  t.equal(r.status, 0, `tsc found errors:\n${r.stdout}${r.stderr}`);
});
