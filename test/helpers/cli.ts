// Test helpers for the command-line tests: the path of the built CLI, a tap `before` hook that runs
// `npm run build:ts` when dist/ is older than the TypeScript sources in lib/, running the CLI, and
// the check that misuse gets one clear line.
import type { Test } from 'tap';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

export const root = path.join(__dirname, '..', '..');
export const main = path.join(root, 'dist', 'cli', 'main.js');

/** The newest modification time of the TypeScript sources below d. */
function newestSource(d: string): number {
  let newest = 0;
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestSource(p) : e.name.endsWith('.ts') ? fs.statSync(p).mtimeMs : 0);
  }
  return newest;
}

/** Builds dist/ with npm run build:ts unless dist/cli/main.js is newer than every source in lib/. */
export function ensureBuilt(): void {
  if (fs.existsSync(main) && fs.statSync(main).mtimeMs >= newestSource(path.join(root, 'lib'))) return;
  const r = spawnSync('npm', ['run', 'build:ts'], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`npm run build:ts failed:\n${r.stdout}${r.stderr}`);
}

/** Runs the built CLI (`kiln <args>`) in cwd and returns its exit code and output. */
export function runKiln(args: string[], cwd: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [main, ...args], { cwd, encoding: 'utf8', timeout: 240_000, env: { ...process.env, KILN_DEBUG: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Asserts exit code (2: misuse) and one error line (plus the hint) matching pattern, with no stack trace. */
export function expectOneLineError(t: Test, args: string[], cwd: string, pattern: RegExp, code = 2): void {
  const r = runKiln(args, cwd);
  t.equal(r.code, code, `${args.join(' ')}: exit code ${code}`);
  const lines = r.stderr.trimEnd().split('\n');
  t.ok(lines.length <= 2, `${args.join(' ')}: one line and a hint, got:\n${r.stderr}`);
  t.match(lines[0], pattern, `${args.join(' ')}: ${lines[0]}`);
  t.notMatch(r.stderr, /^\s+at /m, 'no stack trace');
}
