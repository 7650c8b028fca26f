#!/usr/bin/env node
// Builds the native addon: cmake-js when cmake is on PATH, else node-gyp from binding.gyp.
//   KILN_BUILD=cmake|gyp   force a builder
//   KILN_CUDA=ON|OFF       force the CUDA backend on or off (cmake only; default: when found)
//   KILN_OPENBLAS=0        build without OpenBLAS (built-in GEMM; also OFF, false, no)
// cmake-js configures on every run with every switch spelled out, so a rebuild follows the current
// environment (an unset switch means its default), not whatever an earlier build cached.
const { spawnSync } = require('child_process');
const path = require('path');
const fs = require('fs');

const root = path.join(__dirname, '..');
const which = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
const forced = process.env.KILN_BUILD;
if (forced && forced !== 'cmake' && forced !== 'gyp') {
  console.error(`kiln: KILN_BUILD must be 'cmake' or 'gyp', got '${forced}'`);
  process.exit(1);
}
const builder = forced || (which('cmake') ? 'cmake' : 'gyp');

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
    `--CDKILN_OPENBLAS=${/^(0|off|false|no)$/i.test(process.env.KILN_OPENBLAS ?? '') ? 'OFF' : 'ON'}`,
  ];
  const configure = [cmakeJs, 'configure', '--out', 'build', ...switches];
  if (attempt(process.execPath, configure) !== 0) {
    // A build folder left by another checkout, path or generator cannot be reconfigured: start afresh once.
    if (!fs.existsSync(path.join(root, 'build', 'CMakeCache.txt'))) {
      console.error('kiln: native build failed (cmake-js configure).');
      process.exit(1);
    }
    console.log('kiln: configuring the existing build/ failed; removing it and configuring afresh');
    fs.rmSync(path.join(root, 'build'), { recursive: true, force: true });
    run(process.execPath, configure);
  }
  run(process.execPath, [cmakeJs, 'build', '--out', 'build', '--parallel', jobs]);
  const info = path.join(root, 'build', 'kiln-build.txt');
  if (fs.existsSync(info)) console.log(`kiln: built with cmake-js: ${fs.readFileSync(info, 'utf8').trim()}`);
} else {
  const gyp = require.resolve('node-gyp/bin/node-gyp.js');
  // Use the installed Node's own headers when present, so node-gyp downloads nothing.
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  const nodedir = process.env.npm_config_nodedir ||
    (fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi')) ? prefix : null);
  const args = [gyp, 'rebuild', '--jobs', jobs];
  if (nodedir) args.push(`--nodedir=${nodedir}`);
  run(process.execPath, args);
  const blas = spawnSync(process.execPath, [path.join(__dirname, 'find-openblas.js')], { encoding: 'utf8' }).stdout;
  console.log(`kiln: built with node-gyp: cpu, openmp, ${blas ? 'openblas' : 'builtin-gemm'}`);
}
