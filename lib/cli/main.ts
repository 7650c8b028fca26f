#!/usr/bin/env node
// bin/kiln: the entry point of kiln's command line (`kiln train`, `kiln generate`; see commands.ts).
import type * as Commands from './commands';

// OpenMP's default spin-waiting lets kiln's idle threads hold the cores that OpenBLAS's threads and
// other processes need; on a busy machine that makes training many times slower. The policy is read
// when the native addon loads, so it is set here, first, unless the user chose one.
process.env.OMP_WAIT_POLICY ??= 'passive';

const { run } = require('./commands') as typeof Commands;
run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: Error) => {
    process.stderr.write(`kiln: ${e.stack ?? e.message}\n`);
    process.exitCode = 1;
  },
);
