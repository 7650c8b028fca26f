// The command dispatcher behind bin/kiln: picks the command, prints help, and turns errors into one
// line on stderr and an exit code: 2 for misuse (bad flags or values, missing files), 1 for failures
// (a corrupt checkpoint, a failed operation). KILN_DEBUG=1 prints stack traces too.
import * as fs from 'fs';
import * as path from 'path';
import { UsageError } from './args';
import { CLASSIFY, classify } from './classify';
import { FINETUNE, finetune } from './finetune';
import { GENERATE, generate } from './generate';
import { LAUNCH, launchCommand } from './launch';
import { TRAIN, train } from './train';

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; summary: string }> = {
  train: { run: train, summary: 'train a GPT on the CPU or a GPU (on a generated toy language, or your text with --data)' },
  finetune: { run: finetune, summary: 'fine-tune a kiln or Hugging Face GPT-2 model (all weights, LoRA or a soft prompt) on text or labelled texts' },
  generate: { run: generate, summary: 'sample text from a checkpoint written by kiln train or kiln finetune' },
  classify: { run: classify, summary: 'label texts with a classifier written by kiln finetune --task classify' },
  launch: { run: launchCommand, summary: 'start N worker processes with rank variables set (like torchrun)' },
};

const USAGE =
  'Usage: kiln <command> [options]\n\nCommands:\n' +
  Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(10)}${c.summary}`).join('\n') +
  "\n\nRun 'kiln <command> --help' for a command's options.\n";

function version(): string {
  const pkg = path.join(__dirname, '..', '..', 'package.json');
  return fs.existsSync(pkg) ? (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { version: string }).version : 'unknown';
}

/** Runs `kiln <argv>` and resolves to the process exit code. */
export async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? rest[0] : undefined;
    if (topic && COMMANDS[topic]) return COMMANDS[topic].run(['--help']);
    process.stdout.write(USAGE);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`kiln: unknown command '${name}' (commands: ${Object.keys(COMMANDS).join(', ')}; see kiln --help)\n`);
    return 2;
  }
  try {
    return await cmd.run(rest);
  } catch (e) {
    const err = e as Error;
    if (process.env.KILN_DEBUG) process.stderr.write(`${err.stack}\n`);
    if (err instanceof UsageError) {
      process.stderr.write(`kiln ${name}: ${err.message}\nRun 'kiln ${name} --help' for usage.\n`);
      return 2;
    }
    const kind = err.name && err.name !== 'Error' ? `${err.name}: ` : '';
    process.stderr.write(`kiln ${name}: ${kind}${err.message.split('\n')[0]}\n`);
    return 1;
  }
}

export { TRAIN, FINETUNE, GENERATE, CLASSIFY, LAUNCH };
