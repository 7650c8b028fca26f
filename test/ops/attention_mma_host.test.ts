// The bfloat16 tensor-core attention kernels (native/cuda/attention_mma*.cu*) checked on the host,
// without a GPU, by two C++ programs in test/fixtures/mma compiled with g++ (skipped where g++ is
// absent): fragments.cc feeds an emulation of mma.sync m16n8k16 written from the PTX tables through
// the kernels' own fragment loads and C -> A reuse; emulate.cc runs the kernels themselves (a block
// as 128 threads, collectives and cp.async emulated) against attention in double, under
// AddressSanitizer where g++ has it.
import t, { Test } from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';

const root = path.join(__dirname, '..', '..');
const fixtures = path.join(root, 'test', 'fixtures', 'mma');
const gxx = spawnSync('g++', ['--version'], { encoding: 'utf8' });

// Compiles fixtures/<name>.cc with the given flags into a scratch dir and runs it.
function compileAndRun(t: Test, name: string, flags: string[]) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-mma-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const exe = path.join(dir, name);
  const args = ['-std=c++17', '-O1', '-Wno-unknown-pragmas', ...flags, path.join(fixtures, `${name}.cc`), '-o', exe];
  const cc = spawnSync('g++', args, { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`g++ ${args.join(' ')} failed: ${cc.stderr}`);
  return spawnSync(exe, [], { encoding: 'utf8', timeout: 280_000 });
}

// Whether g++ can build and link with AddressSanitizer here.
function hasAsan(): boolean {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-asan-'));
  try {
    const src = path.join(dir, 'a.cc');
    fs.writeFileSync(src, 'int main() { return 0; }\n');
    return spawnSync('g++', ['-fsanitize=address', src, '-o', path.join(dir, 'a')]).status === 0;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (gxx.error || gxx.status !== 0) {
  t.plan(0, 'no g++ to compile the host checks');
} else {
  t.test('mma.sync fragment loads and C -> A reuse match the PTX layout', async (t) => {
    const run = compileAndRun(t, 'fragments', [`-I${path.join(root, 'native', 'cuda')}`]);
    t.equal(run.status, 0, run.stdout.trim());
    t.equal(run.stdout.trim(), 'ok');
  });

  t.test('the kernels, emulated on the host, equal attention in double', async (t) => {
    const dirs = [path.join(fixtures, 'shim'), fixtures, path.join(root, 'native', 'cuda')];
    const include = dirs.map((d) => `-I${d}`);
    const sanitize = hasAsan() ? ['-fsanitize=address,undefined', '-fno-sanitize-recover=undefined'] : [];
    if (!sanitize.length) t.comment('g++ has no AddressSanitizer here: out-of-bounds accesses go unchecked');
    const run = compileAndRun(t, 'emulate', [...include, ...sanitize, '-pthread']);
    t.equal(run.status, 0, `${run.stdout}${run.stderr}`);
    const lines = run.stdout.trim().split('\n');
    t.equal(lines.length, 12, 'every case ran');
    for (const line of lines) t.ok(line.startsWith('ok '), line);
  });
}
