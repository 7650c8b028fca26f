// Fuzzing the safetensors and checkpoint readers with thousands of damaged files (fuzz-worker.ts
// makes and judges them). The loop runs in a child process with a time limit: a crash or a hang
// fails this test, naming the case it happened in, instead of taking the test run down.
// KILN_FUZZ_SEED=<n> runs other cases (a seed always gives the same cases).
import t from 'tap';
import * as path from 'path';
import { spawnSync } from 'child_process';

const worker = path.join(__dirname, 'fuzz-worker.ts');
const seed = Number(process.env.KILN_FUZZ_SEED ?? 1);
const LIMIT_MS = 60_000;

t.test(`seed ${seed}: no crash, no hang, and each damaged file gives the outcome it must`, async (t) => {
  const started = Date.now();
  // The same TypeScript loader as this test (tap's, passed in execArgv).
  const r = spawnSync(process.execPath, [...process.execArgv, worker, String(seed), '700'], {
    encoding: 'utf8', timeout: LIMIT_MS, maxBuffer: 64 << 20,
  });
  const lines = r.stdout.trim().split('\n');
  const last = lines[lines.length - 1] ?? '';
  if (r.signal || r.status !== 0 || !last.startsWith('result ')) {
    const where = lines.filter((l) => l.startsWith('case ')).pop() ?? 'before the first case';
    t.fail(`the fuzz process ${r.signal ? `died of ${r.signal}` : `exited with ${r.status}`} in ${where}${r.error ? ` (${r.error.message})` : ''}\n${r.stderr.slice(-3000)}`);
    return;
  }
  const result = JSON.parse(last.slice('result '.length)) as { cases: number; seconds: number; counts: Record<string, number>; failures: string[]; failed: number };
  t.comment(`${result.cases} cases in ${result.seconds.toFixed(1)} s (${JSON.stringify(result.counts)})`);
  t.ok(result.cases >= 3000, `${result.cases} cases`);
  t.ok(result.counts.bad > 2500 && result.counts.valid > 100 && result.counts.same > 10 && result.counts['bad-state'] > 40, 'bad, valid, unchanged and bad-state files all occur');
  t.same(result.failures, [], `${result.failed} cases gave the wrong outcome`);
  t.ok(Date.now() - started < LIMIT_MS, 'under a minute, process start included');
});
