// `kiln launch`: starts N copies of a script (or of kiln's own CLI) with the rank variables a process
// group reads, like torchrun; the process logic is lib/dist/launch.ts, this file parses the command
// line. Launcher options come before the script; everything from the script on belongs to it.
import * as fs from 'fs';
import * as path from 'path';
import { launch, planWorkers } from '../dist/launch';
import { CommandSpec, UsageError, helpText, parse } from './args';

export const LAUNCH: CommandSpec = {
  name: 'launch',
  usage: 'kiln launch [options] <script.js | kiln> [args...]',
  summary:
    'Starts --nproc-per-node worker processes on this node, each running the script (or, given the word kiln, kiln\'s own command line) with RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT and CUDA_VISIBLE_DEVICES set, like torchrun.',
  options: [
    { name: 'nproc-per-node', kind: 'int', value: '<n>', min: 1, help: 'worker processes on this node', defaultText: '1' },
    { name: 'nnodes', kind: 'int', value: '<m>', min: 1, help: 'nodes taking part (run kiln launch once on each)', defaultText: '1' },
    { name: 'node-rank', kind: 'int', value: '<r>', min: 0, help: "this node's index, 0 to nnodes - 1", defaultText: '0' },
    { name: 'master-addr', kind: 'string', value: '<host>', help: "address of rank 0's node", defaultText: '127.0.0.1' },
    { name: 'master-port', kind: 'int', value: '<port>', min: 1, max: 65535, help: 'port rank 0 listens on', defaultText: '29500' },
    { name: 'no-gpu-binding', kind: 'boolean', help: 'leave CUDA_VISIBLE_DEVICES as it is instead of giving each local rank one GPU' },
    { name: 'grace-period', kind: 'number', value: '<s>', min: 0, help: 'seconds between SIGTERM and SIGKILL when stopping workers', defaultText: '10' },
  ],
  epilog: [
    'Each line a worker prints is prefixed with [rank R]. GPU binding: local rank i gets CUDA_VISIBLE_DEVICES=i, or',
    "the i-th entry of this shell's CUDA_VISIBLE_DEVICES when it is set (it must list at least --nproc-per-node GPUs).",
    'SIGINT, SIGTERM and SIGHUP are forwarded to every worker. When a worker exits non-zero or is killed,',
    'the others get SIGTERM (SIGKILL after the grace period) and kiln launch exits 1 naming the rank;',
    'stopped by a signal, it exits 128 + the signal number; it exits 0 when every worker exits 0.',
    '',
    'Examples:',
    '  kiln launch --nproc-per-node 2 train.js --lr 3e-4',
    '  kiln launch --nproc-per-node 4 kiln train --data input.txt',
    '  kiln launch --nnodes 2 --node-rank 0 --master-addr node0 --nproc-per-node 8 train.js   (and --node-rank 1 on node1)',
  ].join('\n'),
};

const TAKES_VALUE = new Set(LAUNCH.options.filter((o) => o.kind !== 'boolean').map((o) => `--${o.name}`));

/** Splits argv at the script: [launcher options, the script and its arguments]. */
function splitAtScript(argv: string[]): [string[], string[]] {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') return [argv.slice(0, i), argv.slice(i + 1)];
    if (!a.startsWith('-') || a === '-') return [argv.slice(0, i), argv.slice(i)];
    if (TAKES_VALUE.has(a)) i++;
  }
  return [argv, []];
}

export async function launchCommand(argv: string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const [opts, command] = splitAtScript(argv);
  const { values: v, help } = parse(LAUNCH, opts);
  if (help) {
    out.write(helpText(LAUNCH));
    return 0;
  }
  if (command.length === 0) throw new UsageError('missing the script to run (kiln launch [options] script.js [args...], or kiln launch [options] kiln <command> ...)');
  let [script, ...args] = command;
  if (script === 'kiln') script = path.join(__dirname, 'main.js');
  else if (!fs.existsSync(script)) throw new UsageError(`script not found: ${script}`);
  const options = {
    nprocPerNode: (v.nprocPerNode as number | undefined) ?? 1,
    nnodes: v.nnodes as number | undefined,
    nodeRank: v.nodeRank as number | undefined,
    masterAddr: v.masterAddr as string | undefined,
    masterPort: v.masterPort as number | undefined,
    gpuBinding: v.noGpuBinding !== true,
    gracePeriodMs: ((v.gracePeriod as number | undefined) ?? 10) * 1000,
    script,
    args,
    stdout: out,
  };
  try {
    planWorkers(options);
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/^(nproc-per-node|nnodes|node-rank|master-port|master-addr)/, '--$1'));
  }
  const result = await launch(options);
  if (result.exitCode !== 0) process.stderr.write(`${result.message}\n`);
  return result.exitCode;
}
