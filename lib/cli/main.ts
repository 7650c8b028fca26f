#!/usr/bin/env node
// bin/kiln: the entry point of kiln's command line (`kiln train`, `kiln finetune`, `kiln generate`, `kiln classify`, `kiln launch`; see commands.ts).
import { run } from './commands';

// Output piped into a command that stops reading (`kiln classify ... | head -1`) ends quietly.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE') throw e;
  process.exit(0);
});

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: Error) => {
    process.stderr.write(`kiln: ${e.stack ?? e.message}\n`);
    process.exitCode = 1;
  },
);
