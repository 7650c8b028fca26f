// kiln launch and lib/dist/launch.ts with tiny worker scripts in a temp folder: the rank variables
// of 2 and 3 workers and of the second of two nodes, GPU binding, [rank R] prefixes (a partial last
// line included), a failing worker stopping the others (SIGTERM, then SIGKILL after the grace
// period), signals sent to the launcher reaching the workers, usage errors, and `kiln launch ...
// kiln --version` running kiln's own command line.
import t from 'tap';
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { PassThrough } from 'stream';
import { LaunchOptions, launch, planWorkers } from '../../lib/dist/launch';
import { ensureBuilt, main, root } from '../helpers/cli';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-launch-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

t.before(ensureBuilt);

/** Writes a worker script into the temp folder and returns its path. */
function script(name: string, body: string): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, body);
  return p;
}

const VARS = ['RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'GROUP_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'CUDA_VISIBLE_DEVICES'];
const printEnv = script('env.js', `console.log(JSON.stringify({ ${VARS.map((v) => `${v}: process.env.${v}`).join(', ')}, argv: process.argv.slice(2) }));\n`);

/** Runs launch() with its output captured. */
async function run(o: Omit<LaunchOptions, 'stdout' | 'stderr'>) {
  let stdout = '';
  let stderr = '';
  const out = new PassThrough().on('data', (c: Buffer) => (stdout += c));
  const err = new PassThrough().on('data', (c: Buffer) => (stderr += c));
  const start = Date.now();
  const result = await launch({ ...o, stdout: out, stderr: err });
  return { result, stdout, stderr, seconds: (Date.now() - start) / 1000 };
}

/** The JSON line each rank printed, by rank. */
function envByRank(stdout: string): Map<number, Record<string, unknown>> {
  const m = new Map<number, Record<string, unknown>>();
  for (const line of stdout.trimEnd().split('\n')) {
    const r = /^\[rank (\d+)\] (.*)$/.exec(line);
    if (!r) throw new Error(`unprefixed line: ${line}`);
    m.set(Number(r[1]), JSON.parse(r[2]));
  }
  return m;
}

const noCvd = (): NodeJS.ProcessEnv => {
  const env = { ...process.env };
  delete env.CUDA_VISIBLE_DEVICES;
  return env;
};

t.test('the rank variables of 2 and 3 workers on one node', async (t) => {
  for (const n of [2, 3]) {
    const { result, stdout } = await run({ nprocPerNode: n, script: printEnv, args: ['--lr', '3'], env: noCvd() });
    t.equal(result.exitCode, 0, result.message);
    const byRank = envByRank(stdout);
    t.same([...byRank.keys()].sort(), Array.from({ length: n }, (_, i) => i));
    for (let r = 0; r < n; r++) {
      t.same(byRank.get(r), {
        RANK: `${r}`, LOCAL_RANK: `${r}`, WORLD_SIZE: `${n}`, LOCAL_WORLD_SIZE: `${n}`, GROUP_RANK: '0',
        MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500', CUDA_VISIBLE_DEVICES: `${r}`, argv: ['--lr', '3'],
      }, `${n} workers, rank ${r}`);
    }
    t.same(result.workers.map((w) => [w.rank, w.code, w.signal]), Array.from({ length: n }, (_, i) => [i, 0, null]));
  }
});

t.test('the second of two nodes: ranks continue from the first node', async (t) => {
  const { result, stdout } = await run({ nprocPerNode: 3, nnodes: 2, nodeRank: 1, masterAddr: 'node0', masterPort: 1234, script: printEnv, env: noCvd() });
  t.equal(result.exitCode, 0);
  const byRank = envByRank(stdout);
  t.same([...byRank.keys()].sort(), [3, 4, 5]);
  for (const r of [3, 4, 5]) {
    t.same(byRank.get(r), {
      RANK: `${r}`, LOCAL_RANK: `${r - 3}`, WORLD_SIZE: '6', LOCAL_WORLD_SIZE: '3', GROUP_RANK: '1',
      MASTER_ADDR: 'node0', MASTER_PORT: '1234', CUDA_VISIBLE_DEVICES: `${r - 3}`, argv: [],
    });
  }
});

t.test("GPU binding takes the parent's CUDA_VISIBLE_DEVICES entries, or is off", async (t) => {
  const base = { nprocPerNode: 2, script: printEnv };
  t.same(planWorkers({ ...base, env: { CUDA_VISIBLE_DEVICES: '4, 6,7' } }).map((p) => p.env.CUDA_VISIBLE_DEVICES), ['4', '6']);
  t.same(planWorkers({ ...base, env: { CUDA_VISIBLE_DEVICES: 'GPU-aa,GPU-bb' } }).map((p) => p.env.CUDA_VISIBLE_DEVICES), ['GPU-aa', 'GPU-bb']);
  t.throws(() => planWorkers({ ...base, env: { CUDA_VISIBLE_DEVICES: '3' } }), /CUDA_VISIBLE_DEVICES="3" lists 1 GPU, fewer than the 2 workers.*--no-gpu-binding/);
  t.throws(() => planWorkers({ ...base, env: { CUDA_VISIBLE_DEVICES: '' } }), /lists 0 GPUs/);
  t.same(planWorkers({ ...base, gpuBinding: false, env: {} }).map((p) => p.env.CUDA_VISIBLE_DEVICES), [undefined, undefined]);
  const { result, stdout } = await run({ ...base, gpuBinding: false, env: { ...process.env, CUDA_VISIBLE_DEVICES: '9' } });
  t.equal(result.exitCode, 0);
  t.same([...envByRank(stdout).values()].map((e) => e.CUDA_VISIBLE_DEVICES), ['9', '9'], 'left as the parent has it');
});

t.test('every line is prefixed with its rank; a partial last line is held and ended', async (t) => {
  const s = script('lines.js', [
    "const r = process.env.RANK;",
    "process.stdout.write(`one ${r}\\ntwo`);",
    "setTimeout(() => { process.stdout.write(` ${r}\\nthree ${r}`); process.stderr.write(`err ${r}\\nlast err ${r}`); }, 50);",
  ].join('\n'));
  const { result, stdout, stderr } = await run({ nprocPerNode: 2, script: s, env: noCvd() });
  t.equal(result.exitCode, 0);
  const lines = stdout.split('\n');
  t.equal(lines.pop(), '', 'stdout ends with a newline');
  t.same(lines.filter((l) => l.startsWith('[rank 0] ')), ['[rank 0] one 0', '[rank 0] two 0', '[rank 0] three 0']);
  t.same(lines.filter((l) => l.startsWith('[rank 1] ')), ['[rank 1] one 1', '[rank 1] two 1', '[rank 1] three 1']);
  t.equal(lines.length, 6, 'nothing else on stdout');
  t.same(stderr.split('\n').sort(), ['', '[rank 0] err 0', '[rank 0] last err 0', '[rank 1] err 1', '[rank 1] last err 1'], 'stderr goes to stderr');
});

t.test('a failing worker stops the others and names its rank and code', async (t) => {
  const s = script('fail.js', "if (process.env.RANK === '1') setTimeout(() => process.exit(3), 200); else setTimeout(() => {}, 60_000);\n");
  const { result, stderr, seconds } = await run({ nprocPerNode: 2, script: s, env: noCvd(), gracePeriodMs: 10_000 });
  t.ok(seconds < 15, `ended in ${seconds} s, within the grace period + 5 s`);
  t.ok(seconds < 8, `the sleeper went at SIGTERM, not after the grace period (${seconds} s)`);
  t.equal(result.exitCode, 1);
  t.match(result.failed, { rank: 1, code: 3, signal: null });
  t.match(result.message, /rank 1 \(local rank 1\) exited with code 3/);
  t.match(stderr, /kiln launch: rank 1 \(local rank 1\) exited with code 3; stopping the other 1 worker/);
  t.match(result.workers[0], { rank: 0, code: null, signal: 'SIGTERM' }, 'the sleeper was killed');

  const stubborn = script('stubborn.js', "process.on('SIGTERM', () => {}); console.log('up'); if (process.env.RANK === '2') setTimeout(() => process.kill(process.pid, 'SIGKILL'), 300); else setTimeout(() => {}, 60_000);\n");
  const k = await run({ nprocPerNode: 3, script: stubborn, env: noCvd(), gracePeriodMs: 1000 });
  t.ok(k.seconds < 9, `ended ${k.seconds} s after starting, grace 1 s (the others sleep 60 s)`);
  t.equal(k.result.exitCode, 1);
  t.match(k.result.failed, { rank: 2, code: null, signal: 'SIGKILL' });
  t.match(k.result.message, /rank 2 \(local rank 2\) was killed by SIGKILL/);
  t.match(k.stderr, /2 workers still running after 1 s; sending SIGKILL/);
  t.same(k.result.workers.slice(0, 2).map((w) => w.signal), ['SIGKILL', 'SIGKILL'], 'ignoring SIGTERM: killed after the grace period');
});

/** Runs kiln synchronously. */
function kiln(args: string[], env: NodeJS.ProcessEnv = noCvd()) {
  const r = spawnSync(process.execPath, [main, ...args], { cwd: dir, encoding: 'utf8', timeout: 60_000, env: { ...env, KILN_DEBUG: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('SIGTERM sent to the launcher reaches every worker', async (t) => {
  const s = script('trap.js', [
    "process.on('SIGTERM', () => { console.log('got SIGTERM'); process.exit(0); });",
    "console.log('ready');",
    'setTimeout(() => {}, 60_000);',
  ].join('\n'));
  const child = spawn(process.execPath, [main, 'launch', '--nproc-per-node', '2', s], { cwd: dir, env: noCvd() });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c));
  const closed = new Promise<[number | null, string | null]>((res) => child.on('close', (code, sig) => res([code, sig])));
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`workers not ready: ${stdout} ${stderr}`)), 30_000);
    child.stdout.on('data', (c: Buffer) => {
      stdout += c;
      if ((stdout.match(/\] ready\n/g) ?? []).length === 2) {
        clearTimeout(timer);
        res();
      }
    });
  });
  child.kill('SIGTERM');
  const [code, sig] = await closed;
  t.equal(sig, null, 'the launcher was not killed by the signal');
  t.equal(code, 128 + 15, 'exit code 128 + SIGTERM');
  t.match(stdout, /\[rank 0\] got SIGTERM\n/);
  t.match(stdout, /\[rank 1\] got SIGTERM\n/);
  t.match(stderr, /received SIGTERM; forwarding it to the workers/);
  t.match(stderr, /stopped by SIGTERM/);
});

t.test('kiln launch through the CLI: exit codes, arguments after the script, kiln itself', async (t) => {
  const ok = kiln(['launch', '--nproc-per-node', '2', printEnv, '--nproc-per-node', '7']);
  t.equal(ok.code, 0, ok.stderr);
  t.same([...envByRank(ok.stdout).values()].map((e) => e.argv), [['--nproc-per-node', '7'], ['--nproc-per-node', '7']], 'options after the script are its own');
  const dashes = kiln(['launch', '--', printEnv]);
  t.equal(dashes.code, 0, '-- ends the launcher options');
  const fail = kiln(['launch', '--nproc-per-node', '2', script('exit5.js', "process.exit(process.env.RANK === '0' ? 5 : 0);\n")]);
  t.equal(fail.code, 1);
  t.match(fail.stderr, /rank 0 \(local rank 0\) exited with code 5/);

  const v = kiln(['launch', '--nproc-per-node', '2', 'kiln', '--version']);
  t.equal(v.code, 0, v.stderr);
  const version = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
  t.same(v.stdout.split('\n').sort(), ['', `[rank 0] ${version}`, `[rank 1] ${version}`]);
  const h = kiln(['launch', 'kiln', 'train', '--help']);
  t.equal(h.code, 0);
  t.match(h.stdout, /^\[rank 0\] Usage: kiln train/);
});

t.test('kiln launch --help and usage errors', async (t) => {
  const h = kiln(['launch', '--help']);
  t.equal(h.code, 0);
  t.match(h.stdout, /^Usage: kiln launch \[options\] <script.js \| kiln> \[args...\]/);
  for (const f of ['--nproc-per-node', '--nnodes', '--node-rank', '--master-addr', '--master-port', '--no-gpu-binding', '--grace-period']) t.match(h.stdout, f);
  t.match(kiln(['--help']).stdout, /launch +start N worker processes/);
  const cases: Array<[string[], RegExp, NodeJS.ProcessEnv?]> = [
    [['--bogus', printEnv], /unknown option --bogus/],
    [['--nproc-per-node', '0', printEnv], /--nproc-per-node must be >= 1, got "0"/],
    [['--nproc-per-node', 'two', printEnv], /--nproc-per-node must be a number/],
    [['--nnodes', '2', '--node-rank', '2', printEnv], /--node-rank must be an integer in 0\.\.1 \(with nnodes 2\), got 2/],
    [['--node-rank', '1', printEnv], /--node-rank must be an integer in 0\.\.0/],
    [['--nproc-per-node', '2'], /missing the script to run/],
    [[], /missing the script to run/],
    [['--master-port', '70000', printEnv], /--master-port must be <= 65535, got "70000"/],
    [['--master-port', '0', printEnv], /--master-port must be >= 1/],
    [['--nproc-per-node'], /--nproc-per-node needs a value/],
    [[path.join(dir, 'nope.js')], /script not found: .*nope\.js/],
    [['--nproc-per-node', '2', printEnv], /CUDA_VISIBLE_DEVICES="0" lists 1 GPU, fewer than the 2 workers/, { ...noCvd(), CUDA_VISIBLE_DEVICES: '0' }],
  ];
  for (const [args, pattern, env] of cases) {
    const r = kiln(['launch', ...args], env);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, new RegExp(`^kiln launch: ${pattern.source}.*\nRun 'kiln launch --help' for usage.\n$`), `${args.join(' ')}: ${r.stderr}`);
    t.equal(r.stdout, '', 'no worker started');
  }
  t.throws(() => planWorkers({ nprocPerNode: 1.5, script: printEnv }), RangeError);
  t.throws(() => planWorkers({ nprocPerNode: 1, script: '' }), /a script to run is required/);
});
