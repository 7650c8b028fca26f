// The kiln command line, run as a user runs it (node dist/cli/main.js, built by tsc first when
// stale): help for every command, bad flags, values and config files, and missing files give one
// clear line and exit code 2 without a stack trace, a corrupt checkpoint exits 1 with FormatError,
// --device cuda where CUDA is not available says why, and short end-to-end runs: `kiln train` on
// the toy language (then --resume with more steps, which keeps the LR schedule), with bf16
// autocast, on a text file with a JSON config and with GPT-2 tokens (a warning about the
// vocabulary), and `kiln generate` from their checkpoints.
import t, { Test } from 'tap';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildInfo, cuda } from '../../lib/index';
import { ensureBuilt, expectOneLineError, main, root, runKiln } from '../helpers/cli';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-cli-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

t.before(ensureBuilt);

const kiln = (args: string[], cwd = dir) => runKiln(args, cwd);

t.test('the package bin is executable (npx kiln runs it directly)', async (t) => {
  t.doesNotThrow(() => fs.accessSync(main, fs.constants.X_OK), `${main} has the executable bit`);
  t.match(fs.readFileSync(main, 'utf8').split('\n')[0], /^#!\/usr\/bin\/env node/);
});

t.test("the README's second command, npm run train, runs the built CLI in the checkout", async (t) => {
  const out = path.join(dir, 'npm-run');
  const r = spawnSync('npm', ['run', '-s', 'train', '--', '--steps', '2', '--out', out, '--progress', 'none', '--sample-tokens', '0', '--n-layer', '1', '--n-embd', '16'], { cwd: root, encoding: 'utf8', timeout: 240_000 });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^data: kiln's toy language/);
  t.match(r.stdout, /validation loss: .* after 2 steps/);
  t.ok(fs.existsSync(path.join(out, 'checkpoint.safetensors')));
  const g = spawnSync('npm', ['run', '-s', 'generate', '--', '--checkpoint', out, '--max-tokens', '5', '--seed', '1'], { cwd: root, encoding: 'utf8' });
  t.equal(g.status, 0, g.stderr);
});

t.test('--help on every command', async (t) => {
  const top = kiln(['--help']);
  t.equal(top.code, 0);
  t.match(top.stdout, /Usage: kiln <command>/);
  t.match(top.stdout, /train .*\n.*finetune .*\n.*generate .*\n.*classify/);
  for (const [cmd, flags] of [['train', ['--data', '--tokenizer', '--config', '--steps', '--grad-accum', '--autocast', '--eval-interval', '--out', '--resume', '--device']], ['generate', ['--checkpoint', '--prompt', '--max-tokens', '--temperature', '--top-k', '--top-p', '--seed', '--device']],
    ['finetune', ['--base', '--data', '--val-data', '--task', '--mode', '--lora-rank', '--lora-targets', '--prompt-tokens', '--resume', '--device']],
    ['classify', ['--checkpoint', '--text', '--data', '--predictions', '--json']]] as const) {
    const r = kiln([cmd, '--help']);
    t.equal(r.code, 0, `${cmd} --help exits 0`);
    t.match(r.stdout, new RegExp(`^Usage: kiln ${cmd}`));
    for (const f of flags) t.match(r.stdout, f, `${cmd} --help lists ${f}`);
    t.equal(kiln(['help', cmd]).stdout, r.stdout, `kiln help ${cmd}`);
    t.equal(kiln([cmd, '-h']).stdout, r.stdout, `${cmd} -h`);
  }
  const none = kiln([]);
  t.equal(none.code, 2, 'no command: usage, exit 2');
  t.match(none.stdout, /Usage/);
});

const misuse = (t: Test, args: string[], pattern: RegExp) => expectOneLineError(t, args, dir, pattern);

t.test('bad flags and values', async (t) => {
  misuse(t, ['train', '--bogus'], /^kiln train: unknown option --bogus$/);
  misuse(t, ['train', '--steps', 'abc'], /--steps must be a number, got "abc"/);
  misuse(t, ['train', '--steps', '2.5'], /--steps must be an integer/);
  misuse(t, ['train', '--steps', '0'], /--steps must be >= 1/);
  misuse(t, ['train', '--steps'], /--steps needs a value/);
  misuse(t, ['train', '--lr', '0'], /--lr must be > 0/);
  misuse(t, ['train', '--dropout', '1.5'], /--dropout must be <= 1/);
  misuse(t, ['train', '--cuda-graph'], /--cuda-graph needs --device cuda/);
  misuse(t, ['train', '--tokenizer', 'bpe'], /--tokenizer must be one of char, gpt2/);
  misuse(t, ['train', '--autocast', 'fp8'], /--autocast must be one of bf16, off/);
  misuse(t, ['train', '--n-embd', '30', '--n-head', '4'], /--n-embd \(30\) must be a multiple of --n-head \(4\)/);
  misuse(t, ['train', '--tokenizer', 'gpt2'], /needs --data/);
  misuse(t, ['train', 'input.txt'], /unexpected argument "input.txt"/);
  misuse(t, ['generate', '--temperature', '-1', '--checkpoint', '.'], /--temperature must be >= 0/);
  misuse(t, ['generate', '--top-p', '0', '--checkpoint', '.'], /--top-p must be > 0/);
  misuse(t, ['frobnicate'], /^kiln: unknown command 'frobnicate'/);
  misuse(t, ['train', '--device', 'gpu'], /^kiln train: --device must be cpu, cuda or cuda:N, got "gpu"$/);
  misuse(t, ['train', '--device', 'cpu:0'], /--device must be cpu, cuda or cuda:N, got "cpu:0"/);
  misuse(t, ['generate', '--device', 'cuda:x', '--checkpoint', '.'], /--device must be cpu, cuda or cuda:N, got "cuda:x"/);
  fs.writeFileSync(path.join(dir, 'broken.json'), '{"steps": 10,');
  misuse(t, ['train', '--config', 'broken.json'], /config file broken.json is not valid JSON/);
  fs.writeFileSync(path.join(dir, 'unknown.json'), '{"stepz": 10}');
  misuse(t, ['train', '--config', 'unknown.json'], /unknown key 'stepz'/);
  fs.writeFileSync(path.join(dir, 'type.json'), '{"nLayer": "two"}');
  misuse(t, ['train', '--config', 'type.json'], /n-layer must be a number, got "two"/);
});

t.test('missing files', async (t) => {
  misuse(t, ['train', '--data', 'nope.txt', '--out', 'never'], /no such file: nope.txt/);
  t.notOk(fs.existsSync(path.join(dir, 'never')), 'no output folder made');
  misuse(t, ['train', '--config', 'nope.json'], /config file not found: nope.json/);
  misuse(t, ['train', '--resume', '--out', 'empty-run'], /no checkpoint to resume/);
  misuse(t, ['generate'], /--checkpoint is required/);
  misuse(t, ['generate', '--checkpoint', 'nope'], /no such file or folder: nope/);
  fs.mkdirSync(path.join(dir, 'emptydir'));
  misuse(t, ['generate', '--checkpoint', 'emptydir'], /holds no checkpoint.safetensors/);
  fs.writeFileSync(path.join(dir, 'empty.txt'), '');
  misuse(t, ['train', '--data', 'empty.txt'], /empty.txt is empty/);
  fs.writeFileSync(path.join(dir, 'tiny.txt'), 'hello world');
  misuse(t, ['train', '--data', 'tiny.txt', '--out', 'tiny-run'], /has 11 tokens; training and validation need at least 65 each/);
});

t.test('a corrupt checkpoint: exit 1 and a FormatError line', async (t) => {
  fs.writeFileSync(path.join(dir, 'corrupt.safetensors'), Buffer.from([200, 0, 0, 0, 0, 0, 0, 0, 0x7b]));
  const r = kiln(['generate', '--checkpoint', 'corrupt.safetensors']);
  t.equal(r.code, 1);
  t.match(r.stderr, /^kiln generate: FormatError: safetensors: corrupt.safetensors: truncated/);
  t.equal(r.stderr.trimEnd().split('\n').length, 1);
});

t.test('--device cuda where CUDA cannot run: one line saying why, before anything is written', async (t) => {
  // On a GPU host a device index past the last GPU takes the place of the missing CUDA.
  const n = cuda.deviceCount();
  const dev = n > 0 ? `cuda:${n}` : 'cuda';
  const why = !buildInfo().cuda ? /this kiln was built without its CUDA backend .*or use --device cpu$/ : n === 0 ? /no CUDA GPU is visible/ : /there (is|are) \d+ CUDA GPUs?/;
  misuse(t, ['train', '--device', dev, '--out', 'no-gpu'], new RegExp(`^kiln train: --device ${dev}: ${why.source}`));
  t.notOk(fs.existsSync(path.join(dir, 'no-gpu')), 'no output folder made');
  misuse(t, ['generate', '--device', dev, '--checkpoint', '.'], new RegExp(`^kiln generate: --device ${dev}: ${why.source}`));
});

const small = ['--n-layer', '1', '--n-embd', '32', '--batch-size', '8', '--eval-interval', '15', '--eval-batches', '2', '--progress', 'log', '--sample-tokens', '8'];

t.test('kiln train on the toy language, --resume, and kiln generate', async (t) => {
  const r = kiln(['train', '--steps', '30', '--out', 'toy', '--device', 'cpu', ...small]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^data: kiln's toy language/);
  t.match(r.stdout, /^training: 30 steps .*cosine to 0\.0006 at step 30\), clip 1, \d+ threads?$/m, 'on the CPU threads');
  t.match(r.stdout, /training throughput [\d.]+k? chars\/s/, 'a character model counts chars');
  t.match(r.stdout, /^done in \d+:\d\d \(\d+ cores\)$/m);
  t.match(r.stdout, /samples before training/);
  t.match(r.stdout, /samples after training/);
  t.match(r.stdout, /grammatical sentences: \d+% before training, \d+% after/);
  t.match(r.stdout, /validation loss: 3\.\d+ -> \d\.\d+ nats\/char after 30 steps/);
  t.match(r.stderr, /step 30\/30 \| loss \d\.\d{4} nats\/char \| .* chars\/s/, 'progress lines on stderr, in nats/char and chars/s');
  for (const f of ['checkpoint.safetensors', 'metrics.jsonl', 'loss.svg', 'corpus.txt', 'train.tok', 'val.tok']) t.ok(fs.existsSync(path.join(dir, 'toy', f)), f);
  const steps = () => fs.readFileSync(path.join(dir, 'toy', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
  t.equal(Math.max(...steps()), 30);

  const again = kiln(['train', '--steps', '45', '--out', 'toy', '--resume', ...small]);
  t.equal(again.code, 0, again.stderr);
  t.equal(again.stdout.split('\n')[0], `resumed from step 30 of ${path.join('toy', 'checkpoint.safetensors')}; training to step 45; the LR schedule keeps its plan of 30 steps (not re-planned for 45)`);
  t.match(again.stdout, /^training: 45 steps .*cosine to 0\.0006 at step 30\)/m);
  const lrs = fs.readFileSync(path.join(dir, 'toy', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.step > 30 && 'lr' in x).map((x) => x.lr);
  t.ok(lrs.length > 5 && lrs.every((lr) => Math.abs(lr - 0.0006) < 1e-12), `steps 31..45 at the schedule's final lr 0.0006: ${lrs.join(' ')}`);
  t.notMatch(again.stdout, /samples before training/, 'no "before" samples when resuming');
  t.match(again.stdout, /after 45 steps/);
  // Records every 2 steps (steps / 20, rounded) and at each validation (every 15 steps).
  t.same(steps().filter((s) => s > 0), Array.from({ length: 45 }, (_, i) => i + 1).filter((s) => s % 2 === 0 || s % 15 === 0), 'metrics continue from step 30');
  misuse(t, ['train', '--steps', '50', '--out', 'toy', '--resume', '--n-embd', '64'], /holds a model .* these options make/);

  const g = kiln(['generate', '--checkpoint', 'toy', '--prompt', 'the ', '--max-tokens', '12', '--seed', '3']);
  t.equal(g.code, 0, g.stderr);
  t.match(g.stdout, /^the /);
  t.ok(g.stdout.length > 'the '.length + 1 && g.stdout.length <= 'the '.length + 12 + 1, '12 tokens at most (trailing newlines trimmed)');
  t.equal(kiln(['generate', '--checkpoint', path.join('toy', 'checkpoint.safetensors'), '--prompt', 'the ', '--max-tokens', '12', '--seed', '3']).stdout, g.stdout, 'the same seed repeats');
  const greedy = kiln(['generate', '--checkpoint', 'toy', '--prompt', 'a ', '--temperature', '0', '--max-tokens', '5', '--num-samples', '2']);
  t.equal(greedy.code, 0);
  const [s1, s2] = greedy.stdout.split('---\n');
  t.equal(s1.trim(), s2.trim(), 'temperature 0 is greedy');
  misuse(t, ['generate', '--checkpoint', 'toy', '--prompt', 'Zebra'], /--prompt: character "Z" at offset 0 is not in the vocabulary/);
});

t.test('kiln train --autocast bf16 runs the forward under bfloat16 autocast', async (t) => {
  const r = kiln(['train', '--steps', '2', '--out', 'bf16', '--autocast', 'bf16', '--n-layer', '1', '--n-embd', '16', '--eval-batches', '1', '--progress', 'none', '--sample-tokens', '0']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^training: 2 steps .*clip 1, bf16 autocast, /m, 'the summary says so');
  t.match(r.stdout, /validation loss: .* after 2 steps/);
});

t.test('kiln train --data with a JSON config, then generate', async (t) => {
  const text = Array.from({ length: 300 }, (_, i) => `line ${i % 17}: the quick brown fox jumps over the lazy dog.`).join('\n');
  fs.writeFileSync(path.join(dir, 'input.txt'), text);
  fs.writeFileSync(path.join(dir, 'run.json'), JSON.stringify({ steps: 12, nLayer: 1, nHead: 2, 'n-embd': 16, blockSize: 16, batchSize: 4, evalInterval: 6, evalBatches: 2, sampleTokens: 10, progress: 'none' }));
  const r = kiln(['train', '--data', 'input.txt', '--config', 'run.json', '--steps', '10', '--out', 'text']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /data: input.txt: \d+\.\dk tokens \(char tokenizer, vocabulary \d+\)/);
  t.match(r.stdout, /model: GPT, 1 layer, 16 wide, 2 heads, context 16/, 'config file values');
  t.match(r.stdout, /training: 10 steps of 4 x 16 tokens/, 'flags override the config file');
  t.match(r.stdout, /validation loss: .* after 10 steps/);
  t.equal(r.stderr, '', 'no progress with progress: none, and no vocabulary warning for characters');
  const g = kiln(['generate', '--checkpoint', 'text', '--max-tokens', '20', '--seed', '1']);
  t.equal(g.code, 0, g.stderr);
  t.ok(g.stdout.length > 1 && g.stdout.length <= 20 + 1, '20 tokens at most');
});

t.test('kiln train --tokenizer gpt2 on a small text: tokens, nats/token, and a warning about the vocabulary', async (t) => {
  const r = kiln([
    'train', '--data', 'input.txt', '--tokenizer', 'gpt2', '--steps', '2', '--n-layer', '1', '--n-head', '2', '--n-embd', '16', '--block-size', '16',
    '--batch-size', '4', '--eval-batches', '1', '--sample-tokens', '4', '--progress', 'none', '--out', 'gpt2',
  ]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /validation loss: [\d.]+ -> [\d.]+ nats\/token after 2 steps/);
  t.match(r.stdout, /training throughput [\d.]+k? tokens\/s/);
  t.match(r.stderr, /^kiln train: warning: input\.txt uses (\d+) of the GPT-2 tokenizer's 50257 token ids \(0%\) in [\d.]+k tokens, so most of the model's embedding and output rows will never be trained\. For a corpus this small, --tokenizer char is the better choice\.\n$/);
  const used = Number(/uses (\d+) of/.exec(r.stderr)?.[1]);
  t.ok(used > 20 && used < 100, `the text's distinct GPT-2 tokens counted: ${used}`);
});
