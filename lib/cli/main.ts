#!/usr/bin/env node
// bin/kiln: the entry point of kiln's command line (`kiln train`, `kiln finetune`, `kiln generate`, `kiln classify`, `kiln launch`; see commands.ts).
import { run } from './commands';

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: Error) => {
    process.stderr.write(`kiln: ${e.stack ?? e.message}\n`);
    process.exitCode = 1;
  },
);
