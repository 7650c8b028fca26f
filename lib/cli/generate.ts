// `kiln generate`: samples text from a checkpoint written by `kiln train` or by a language-model
// `kiln finetune` (full, LoRA or soft prompt); the checkpoint holds the model configuration, the
// tokenizer and the fine-tuning, so nothing else is needed.
import * as kiln from '../index';
import { CommandSpec, UsageError, helpText, parse } from './args';
import { DEVICE_OPTION, TextGenerator, checkpointFile, loadRun, resolveDevice, sampleText } from './model';

export const GENERATE: CommandSpec = {
  name: 'generate',
  usage: 'kiln generate --checkpoint <dir or file> [--prompt text] [options]',
  summary: 'Samples text from a model trained with kiln train or fine-tuned with kiln finetune --task lm.',
  options: [
    { name: 'checkpoint', kind: 'string', value: '<path>', help: 'a run folder of kiln train or kiln finetune (holding checkpoint.safetensors) or a checkpoint file' },
    { name: 'prompt', kind: 'string', value: '<text>', help: 'text to continue', defaultText: 'the start of a line (char models) or <|endoftext|> (gpt2)' },
    { name: 'max-tokens', kind: 'int', value: '<n>', min: 0, help: 'tokens to generate', defaultText: '200' },
    { name: 'temperature', kind: 'number', value: '<t>', min: 0, help: 'sampling temperature; 0 picks the most likely token', defaultText: '0.8' },
    { name: 'top-k', kind: 'int', value: '<k>', min: 1, help: 'sample among the k most likely tokens only' },
    { name: 'top-p', kind: 'number', value: '<p>', min: 0, minExclusive: true, max: 1, help: 'sample among the most likely tokens covering probability p' },
    { name: 'seed', kind: 'int', value: '<n>', min: 0, help: 'seed of the sampling (repeatable output)', defaultText: 'random' },
    { name: 'num-samples', kind: 'int', value: '<n>', min: 1, help: 'independent samples', defaultText: '1' },
    DEVICE_OPTION,
    { name: 'threads', kind: 'int', value: '<n>', min: 1, help: 'CPU threads', defaultText: 'all cores' },
  ],
  epilog: 'Example:\n  kiln generate --checkpoint kiln-run --prompt "two dogs" --max-tokens 60 --num-samples 3',
};

export async function generate(argv: string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const { values: v, help } = parse(GENERATE, argv);
  if (help) {
    out.write(helpText(GENERATE));
    return 0;
  }
  if (v.checkpoint === undefined) throw new UsageError('--checkpoint is required (a folder written by kiln train, or its checkpoint.safetensors)');
  const device = resolveDevice((v.device as string | undefined) ?? 'cpu');
  const file = checkpointFile(v.checkpoint as string);
  if (v.threads) kiln.setNumThreads(v.threads as number);
  kiln.manualSeed((v.seed as number | undefined) ?? Math.floor(Math.random() * 2 ** 32));
  const { module: model, finetune, tokenizer, tokenizerState, config, step } = loadRun(file, device, 'kiln generate');
  try {
    if (finetune?.task === 'classify') throw new UsageError(`${file} holds a classifier (kiln finetune --task classify): use kiln classify --checkpoint ${v.checkpoint as string}`);
    let prompt: number[];
    if (v.prompt !== undefined) {
      try {
        prompt = tokenizer.encode(v.prompt as string);
      } catch (e) {
        throw new UsageError(`--prompt: ${(e as Error).message.replace(/^[\w.]+: /, '')} (the model's vocabulary comes from its training text)`);
      }
      if (prompt.length === 0) throw new UsageError('--prompt is empty after tokenization');
    } else {
      prompt = tokenizerState.type === 'gpt2' ? [50256] : tokenizerState.chars.includes('\n') ? tokenizer.encode('\n') : [0];
    }
    // A soft prompt takes positions of the context too.
    const room = config.blockSize - (finetune?.prompt?.numVirtualTokens ?? 0);
    if (prompt.length > room) prompt = prompt.slice(prompt.length - room);
    const n = (v.numSamples as number) ?? 1;
    const texts = sampleText(model as TextGenerator, tokenizer, prompt, n, {
      maxTokens: (v.maxTokens as number) ?? 200,
      temperature: (v.temperature as number) ?? 0.8,
      topK: (v.topK as number) ?? null,
      topP: (v.topP as number) ?? null,
    });
    process.stderr.write(`kiln generate: ${file} (step ${step})\n`);
    // Without a prompt the text starts after the start token (a newline, or <|endoftext|>).
    const skip = v.prompt === undefined ? tokenizer.decode(prompt).length : 0;
    texts.forEach((t, i) => out.write(`${i ? '---\n' : ''}${t.slice(skip).replace(/\n+$/, '')}\n`));
    return 0;
  } finally {
    model.dispose();
  }
}
