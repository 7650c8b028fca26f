// What a user of the package meets before any code runs: the package holds the LICENSE and the
// scripts its install runs, and the install's native build finds a node-gyp without cmake and
// without kiln's devDependencies (npm's own, passed as npm_config_node_gyp or beside npm), or says
// in one line what to install. The build script runs from a scratch copy with a fake node-gyp, so
// nothing is compiled here.
import t from 'tap';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.join(__dirname, '..', '..');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-package-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

t.test('npm pack includes the LICENSE (MIT, the kiln authors) and the install scripts', async (t) => {
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const files = (JSON.parse(r.stdout) as Array<{ files: Array<{ path: string }> }>)[0].files.map((f) => f.path);
  for (const f of ['LICENSE', 'package.json', 'scripts/build-native.js', 'binding.gyp', 'CMakeLists.txt']) t.ok(files.includes(f), `packs ${f}`);
  const license = fs.readFileSync(path.join(root, 'LICENSE'), 'utf8');
  t.match(license, /^MIT License\n\nCopyright \(c\) \d{4} the kiln authors\n/);
  t.equal(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).license, 'MIT');
});

// A copy of the build scripts where no node_modules is reachable, as in a dependent's install
// before node-gyp is found, and a PATH without cmake (and without node-gyp).
const copy = path.join(dir, 'pkg');
fs.mkdirSync(path.join(copy, 'scripts'), { recursive: true });
for (const f of ['build-native.js', 'find-library.js']) fs.copyFileSync(path.join(root, 'scripts', f), path.join(copy, 'scripts', f));
const log = path.join(dir, 'gyp-args.json');
const fakeGyp = (where: string) => {
  fs.mkdirSync(path.dirname(where), { recursive: true });
  fs.writeFileSync(where, `require('fs').writeFileSync(${JSON.stringify(log)}, JSON.stringify(process.argv.slice(2)));\n`);
  return where;
};
/** A folder of executables named names (command -v only needs them to exist). */
function bin(name: string, names: string[]): string {
  const d = path.join(dir, name);
  fs.mkdirSync(d);
  for (const n of names) fs.symlinkSync(n === 'sh' ? '/bin/sh' : '/bin/true', path.join(d, n));
  return d;
}
const withTools = bin('tools', ['sh', 'python3', 'make']);
const bare = bin('bare', ['sh']);

function build(env: Record<string, string>): { code: number | null; out: string; args: string[] | null } {
  fs.rmSync(log, { force: true });
  const r = spawnSync(process.execPath, [path.join(copy, 'scripts', 'build-native.js')], { cwd: copy, encoding: 'utf8', env: { HOME: os.homedir(), ...env } });
  return { code: r.status, out: r.stdout + r.stderr, args: fs.existsSync(log) ? JSON.parse(fs.readFileSync(log, 'utf8')) : null };
}

t.test('without cmake the build runs the node-gyp npm hands to install scripts', async (t) => {
  const r = build({ PATH: withTools, npm_config_node_gyp: fakeGyp(path.join(dir, 'npm-env', 'node-gyp.js')) });
  t.equal(r.code, 0, r.out);
  t.same(r.args?.slice(0, 3), ['rebuild', '--jobs', String(os.cpus().length)], 'node-gyp rebuild ran');
  t.match(r.out, /kiln: built with node-gyp: cpu, openmp/);
});

t.test('or the node-gyp beside npm itself', async (t) => {
  fakeGyp(path.join(dir, 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const r = build({ PATH: withTools, npm_execpath: path.join(dir, 'npm', 'bin', 'npm-cli.js') });
  t.equal(r.code, 0, r.out);
  t.equal(r.args?.[0], 'rebuild');
});

t.test('with neither cmake nor node-gyp (nor python3 and make): one line saying what to install', async (t) => {
  const none = build({ PATH: withTools });
  t.equal(none.code, 1);
  t.equal(none.out, 'kiln: cmake is not installed and no node-gyp was found: install cmake (e.g. apt-get install cmake), or node-gyp (npm install -g node-gyp), then run npm install again.\n');
  const noTools = build({ PATH: bare, npm_config_node_gyp: fakeGyp(path.join(dir, 'npm-env', 'node-gyp.js')) });
  t.equal(noTools.code, 1);
  t.match(noTools.out, /^kiln: cmake is not installed, and building without it \(node-gyp\) needs python3 and make: install cmake .*\n$/);
  t.equal(noTools.args, null, 'node-gyp did not run');
});
