#!/usr/bin/env node
// Builds the native addon: cmake-js when cmake is on PATH, else node-gyp from binding.gyp (the
// node-gyp that npm bundles and hands to install scripts, so that a package depending on kiln builds
// it without cmake; node-gyp is only a devDependency here).
//   KILN_BUILD=cmake|gyp   force a builder
//   KILN_CUDA=ON|OFF       force the CUDA backend on or off (cmake only; default: when found)
//   KILN_OPENBLAS=0        build without OpenBLAS (built-in GEMM; also OFF, false, no)
//   KILN_GLOO=0            build without the Gloo process group (also OFF, false, no)
// cmake-js configures on every run with every switch spelled out, so a rebuild follows the current
// environment (an unset switch means its default), not whatever an earlier build cached.
const { spawnSync } = require('child_process');
const path = require('path');
const fs = require('fs');

const root = path.join(__dirname, '..');
const which = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
const forced = process.env.KILN_BUILD;
if (forced && forced !== 'cmake' && forced !== 'gyp') fail(`kiln: KILN_BUILD must be 'cmake' or 'gyp', got '${forced}'`);
const builder = forced || (which('cmake') ? 'cmake' : 'gyp');

/** Whether switch `name` is set to 0, off, false or no. */
function off(name) {
  return /^(0|off|false|no)$/i.test(process.env[name] ?? '');
}

function fail(message) {
  console.error(message);
  process.exit(1);
}

/**
 * node-gyp's entry script: this checkout's devDependency, else the one npm runs install scripts with
 * (npm_config_node_gyp, or the copy beside npm itself), else 'node-gyp' when one is on PATH; null when
 * there is none.
 */
function findNodeGyp() {
  const candidates = [];
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not a checkout with devDependencies: look for npm's own
  }
  candidates.push(process.env.npm_config_node_gyp);
  if (process.env.npm_execpath) candidates.push(path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const found = candidates.find((f) => f && fs.existsSync(f));
  if (found) return found;
  return which('node-gyp') ? 'node-gyp' : null;
}

function attempt(cmd, args) {
  console.log(`kiln: ${cmd} ${args.join(' ')}`);
  return spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: process.env }).status;
}

function run(cmd, args) {
  const status = attempt(cmd, args);
  if (status !== 0) {
    console.error(`kiln: native build failed (${cmd} exited with ${status}).`);
    process.exit(status || 1);
  }
}

const jobs = String(Math.max(1, require('os').cpus().length));
if (builder === 'cmake') {
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  const switches = [
    `--CDKILN_CUDA=${process.env.KILN_CUDA || 'AUTO'}`,
    `--CDKILN_OPENBLAS=${off('KILN_OPENBLAS') ? 'OFF' : 'ON'}`,
    `--CDKILN_GLOO=${off('KILN_GLOO') ? 'OFF' : 'ON'}`,
  ];
  const configure = [cmakeJs, 'configure', '--out', 'build', ...switches];
  if (attempt(process.execPath, configure) !== 0) {
    // A build folder left by another checkout, path or generator cannot be reconfigured: start afresh once.
    if (!fs.existsSync(path.join(root, 'build', 'CMakeCache.txt'))) fail('kiln: native build failed (cmake-js configure).');
    console.log('kiln: configuring the existing build/ failed; removing it and configuring afresh');
    fs.rmSync(path.join(root, 'build'), { recursive: true, force: true });
    run(process.execPath, configure);
  }
  run(process.execPath, [cmakeJs, 'build', '--out', 'build', '--parallel', jobs]);
  const info = path.join(root, 'build', 'kiln-build.txt');
  if (fs.existsSync(info)) console.log(`kiln: built with cmake-js: ${fs.readFileSync(info, 'utf8').trim()}`);
} else {
  const gyp = findNodeGyp();
  if (!which('make') || !(which('python3') || which('python') || process.env.PYTHON)) {
    fail('kiln: cmake is not installed, and building without it (node-gyp) needs python3 and make: install cmake (e.g. apt-get install cmake), or python3 and make, then run npm install again.');
  }
  if (!gyp) fail('kiln: cmake is not installed and no node-gyp was found: install cmake (e.g. apt-get install cmake), or node-gyp (npm install -g node-gyp), then run npm install again.');
  // Use the installed Node's own headers when present, so node-gyp downloads nothing.
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  const nodedir = process.env.npm_config_nodedir ||
    (fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi')) ? prefix : null);
  const args = ['rebuild', '--jobs', jobs];
  if (nodedir) args.push(`--nodedir=${nodedir}`);
  if (gyp === 'node-gyp') run('node-gyp', args);
  else run(process.execPath, [gyp, ...args]);
  const found = (what) => spawnSync(process.execPath, [path.join(__dirname, 'find-library.js'), what], { encoding: 'utf8' }).stdout;
  console.log(`kiln: built with node-gyp: cpu, openmp, ${found('openblas') ? 'openblas' : 'builtin-gemm'}, ${found('gloo') ? 'gloo' : 'no-gloo'}`);
}
