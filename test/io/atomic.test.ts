// Orphaned temporary files of interrupted atomic writes (lib/io/atomic.ts): a writer killed mid-write
// leaves its temporary file; the next save into the folder and the next checkpoint read from it remove
// it, while the temporary files of live writers, of other machines and files that merely look alike
// stay.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync } from 'child_process';
import * as kiln from '../../lib/index';
import { disposeCheckpoint, readCheckpoint, saveCheckpoint, saveSafetensors } from '../../lib/io/index';
import { tempPath } from '../../lib/io/atomic';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-atomic-'));
t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '0']);
  return r.pid!;
}

/** A folder holding stale temporaries of a dead writer and files that must survive. */
function setUp(name: string, livePid: number): { dir: string; stale: string[]; kept: string[] } {
  const dir = path.join(root, name);
  fs.mkdirSync(dir);
  const dead = deadPid();
  const ckpt = path.join(dir, 'checkpoint.safetensors');
  const stale = [
    tempPath(ckpt, dead),
    tempPath(path.join(dir, 'metrics.jsonl'), dead),
    // As kiln wrote them before the host tag: .<dest>.<pid>.<random>.tmp
    path.join(dir, `.checkpoint.safetensors.${dead}.lq3x9a1b2c3.tmp`),
  ];
  const kept = [
    tempPath(ckpt, livePid),
    tempPath(ckpt, process.pid),
    // Another machine's writer on a shared folder: its pid says nothing here.
    path.basename(tempPath(ckpt, dead)).replace(/\.[0-9a-f]{8}-/, '.00000000-'),
    'notes.tmp',
    '.checkpoint.safetensors.tmp',
    `checkpoint.safetensors.${dead}.abc.tmp`,
    `.checkpoint.safetensors.${dead}.abc.tmp.bak`,
  ].map((f) => path.join(dir, path.basename(f)));
  for (const f of [...stale, ...kept]) fs.writeFileSync(f, 'partial checkpoint bytes');
  // A folder with a temporary file's name is not a file to remove.
  const folder = tempPath(path.join(dir, 'sub'), dead);
  fs.mkdirSync(folder);
  kept.push(folder);
  return { dir, stale, kept };
}

t.test('a save removes the temporaries of dead writers and keeps the rest', async (t) => {
  const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
  t.teardown(() => live.kill());
  const { dir, stale, kept } = setUp('save', live.pid!);
  t.not(path.basename(kept[2]).split('.')[3], path.basename(stale[0]).split('.')[3], 'the other machine\'s tag is not this one\'s');
  saveSafetensors(path.join(dir, 'weights.safetensors'), { w: kiln.tensor([1, 2]) });
  for (const f of stale) t.notOk(fs.existsSync(f), `removed: ${path.basename(f)}`);
  for (const f of kept) t.ok(fs.existsSync(f), `kept: ${path.basename(f)}`);
  t.ok(fs.existsSync(path.join(dir, 'weights.safetensors')));
});

t.test('reading a checkpoint (resume) removes them too', async (t) => {
  const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
  t.teardown(() => live.kill());
  const w = kiln.tensor([1, 2]);
  const src = path.join(root, 'src.safetensors');
  saveCheckpoint(src, { model: new Map([['w', w]]), state: { step: 3 } });
  const { dir, stale, kept } = setUp('resume', live.pid!);
  const ckpt = path.join(dir, 'checkpoint.safetensors');
  fs.copyFileSync(src, ckpt);
  const c = readCheckpoint(ckpt);
  t.same(c.state, { step: 3 });
  disposeCheckpoint(c);
  for (const f of stale) t.notOk(fs.existsSync(f), `removed: ${path.basename(f)}`);
  for (const f of kept) t.ok(fs.existsSync(f), `kept: ${path.basename(f)}`);
});

t.test('a writer killed mid-write leaves a temporary file that the next save removes', async (t) => {
  const dir = path.join(root, 'killed');
  fs.mkdirSync(dir);
  const dest = path.join(dir, 'checkpoint.safetensors');
  const atomic = path.join(__dirname, '..', '..', 'lib', 'io', 'atomic');
  const script = `require(${JSON.stringify(atomic)}).writeAtomic(${JSON.stringify(dest)}, (fd) => {
    require('fs').writeSync(fd, 'half a checkpoint');
    process.kill(process.pid, 'SIGKILL');
  });`;
  // The same TypeScript loader as this test (tap's, passed in execArgv).
  const r = spawnSync(process.execPath, [...process.execArgv, '-e', script], { encoding: 'utf8', timeout: 60_000 });
  t.equal(r.signal, 'SIGKILL', `the writer was killed (${r.stderr.trim()})`);
  const orphans = fs.readdirSync(dir);
  t.equal(orphans.length, 1, 'it left its temporary file and no checkpoint');
  t.match(orphans[0], /^\.checkpoint\.safetensors\.[0-9a-f]{8}-[0-9]+\.[0-9a-z]+\.tmp$/);
  saveSafetensors(dest, { w: kiln.tensor([1]) });
  t.same(fs.readdirSync(dir), ['checkpoint.safetensors'], 'the next save removed it');
});
