// Test helper for the command-line tests: the path of the built CLI, and a tap `before` hook that
// runs `npm run build:ts` when dist/ is older than the TypeScript sources in lib/.
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
