// `kiln classify`: labels texts with a classifier written by `kiln finetune --task classify` (full,
// LoRA or soft prompt). One text (--text) prints its classes by probability; a JSON Lines file
// (--data) prints accuracy, per-class precision and recall and the confusion matrix when its records
// carry labels, and writes each record's prediction with --predictions.
import * as fs from 'fs';
import * as path from 'path';
import * as kiln from '../index';
import { noGrad } from '../autograd/grad_mode';
import { dispose, tidy } from '../memory';
import { softmax } from '../ops/softmax';
import { writeFileAtomic } from '../io/atomic';
import { CommandSpec, UsageError, helpText, parse } from './args';
import { classNames, encodeExamples, exampleLoader, readLabelled } from './labelled';
import type { Example } from './labelled';
import { DEVICE_OPTION, checkpointFile, lenientTokenizer, loadRun, resolveDevice, warnDropped } from './model';

export const CLASSIFY: CommandSpec = {
  name: 'classify',
  usage: 'kiln classify --checkpoint <dir or file> (--text <text> | --data <file.jsonl>) [options]',
  summary: 'Labels texts with a classifier fine-tuned by kiln finetune --task classify.',
  options: [
    { name: 'checkpoint', kind: 'string', value: '<path>', help: 'a run folder of kiln finetune --task classify, or its checkpoint file' },
    { name: 'text', kind: 'string', value: '<text>', help: 'one text to classify' },
    { name: 'data', kind: 'string', value: '<file>', help: 'JSON Lines of {"text": ...} records; with "label"s, the accuracy is reported' },
    { name: 'predictions', kind: 'string', value: '<file>', help: 'write one JSON line per --data record: its predicted label and class probabilities' },
    { name: 'json', kind: 'boolean', help: 'print the results as one JSON object' },
    { name: 'text-field', kind: 'string', value: '<name>', help: 'the text field of the records', defaultText: 'text' },
    { name: 'label-field', kind: 'string', value: '<name>', help: 'the label field of the records', defaultText: 'label' },
    { name: 'batch-size', kind: 'int', value: '<n>', min: 1, help: 'texts per forward pass', defaultText: '32' },
    DEVICE_OPTION,
    { name: 'threads', kind: 'int', value: '<n>', min: 1, help: 'CPU threads', defaultText: 'all cores' },
  ],
  epilog: 'Examples:\n  kiln classify --checkpoint spam --text "WIN a FREE cruise, reply now"\n  kiln classify --checkpoint spam --data test.jsonl --predictions predicted.jsonl',
};

const pc = (x: number) => `${(100 * x).toFixed(1)}%`;

export async function classify(argv: string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const { values: v, help } = parse(CLASSIFY, argv);
  if (help) {
    out.write(helpText(CLASSIFY));
    return 0;
  }
  if (v.checkpoint === undefined) throw new UsageError('--checkpoint is required (a folder written by kiln finetune --task classify)');
  if ((v.text === undefined) === (v.data === undefined)) throw new UsageError('give either --text or --data');
  if (v.predictions !== undefined && v.data === undefined) throw new UsageError('--predictions needs --data');
  if (v.predictions !== undefined) {
    const dir = path.dirname(path.resolve(v.predictions as string));
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UsageError(`--predictions: no such folder: ${path.dirname(v.predictions as string)}`);
  }
  const device = resolveDevice((v.device as string | undefined) ?? 'cpu');
  const file = checkpointFile(v.checkpoint as string);
  const fields = { text: (v.textField as string) ?? 'text', label: (v.labelField as string) ?? 'label' };
  const input = v.text !== undefined ? { texts: [v.text as string], labels: [null] } : readLabelled(v.data as string, fields, false);
  if (v.threads) kiln.setNumThreads(v.threads as number);
  const run = loadRun(file, device, 'kiln classify');
  try {
    const ft = run.finetune;
    if (ft?.task !== 'classify') throw new UsageError(`${file} holds a language model, not a classifier: use kiln generate --checkpoint ${v.checkpoint as string}`);
    const classes = ft.labels!;
    const given = classNames(input.labels);
    const unknown = given.filter((l) => !classes.includes(l));
    if (unknown.length) throw new UsageError(`${v.data as string}: labels ${unknown.map((l) => JSON.stringify(l)).join(', ')} are not among the classifier's classes (${classes.join(', ')})`);
    const { tokenizer, dropped } = lenientTokenizer(run.tokenizerState);
    const { examples } = encodeExamples(tokenizer, input, classes, ft.maxLength!, (v.data as string) ?? '--text');
    warnDropped('classify', dropped);
    const probs = predict(run.module, examples, (v.batchSize as number) ?? 32, device);
    const predicted = new Map<number, number[]>(examples.map((e, i) => [e.record, probs[i]]));
    const argmax = (p: number[]) => p.indexOf(Math.max(...p));

    if (v.text !== undefined) {
      const p = predicted.get(0);
      if (!p) throw new UsageError('--text has no tokens the model knows');
      const ranked = classes.map((c, i) => [c, p[i]] as const).sort((a, b) => b[1] - a[1]);
      if (v.json) out.write(`${JSON.stringify({ label: ranked[0][0], probabilities: Object.fromEntries(classes.map((c, i) => [c, p[i]])) })}\n`);
      else out.write(`${ranked.map(([c, x]) => `${c} ${pc(x)}`).join('  ')}\n`);
      return 0;
    }

    if (v.predictions !== undefined) {
      const lines = input.texts.map((_, r) => {
        const p = predicted.get(r);
        return JSON.stringify(p ? { label: classes[argmax(p)], probabilities: Object.fromEntries(classes.map((c, i) => [c, p[i]])) } : { label: null, error: 'no tokens' });
      });
      writeFileAtomic(v.predictions as string, `${lines.join('\n')}\n`);
    }
    const labelled = examples.filter((e) => e.label >= 0);
    const skipped = input.texts.length - examples.length;
    const report: Record<string, unknown> = { checkpoint: file, records: input.texts.length, classified: examples.length, withoutTokens: skipped };
    if (labelled.length) {
      const K = classes.length;
      const confusion = Array.from({ length: K }, () => new Array<number>(K).fill(0));   // [true][predicted]
      examples.forEach((e, i) => e.label >= 0 && confusion[e.label][argmax(probs[i])]++);
      const correct = classes.reduce((n, _, k) => n + confusion[k][k], 0);
      const perClass = Object.fromEntries(classes.map((c, k) => {
        const predictedK = confusion.reduce((n, row) => n + row[k], 0);
        const actualK = confusion[k].reduce((a, b) => a + b, 0);
        return [c, { precision: predictedK ? confusion[k][k] / predictedK : null, recall: actualK ? confusion[k][k] / actualK : null, count: actualK }];
      }));
      Object.assign(report, { accuracy: correct / labelled.length, correct, labelled: labelled.length, perClass, confusion: { classes, counts: confusion } });
      if (!v.json) {
        out.write(`accuracy ${pc(correct / labelled.length)} (${correct} of ${labelled.length})${skipped ? `; ${skipped} records without tokens left out` : ''}\n`);
        const w = Math.max(5, ...classes.map((c) => c.length));
        out.write(`\n${'class'.padEnd(w)}  precision  recall  count   predicted as: ${classes.join(' / ')}\n`);
        classes.forEach((c, k) => {
          const m = perClass[c];
          const f = (x: number | null) => (x === null ? '-' : pc(x)).padStart(9);
          out.write(`${c.padEnd(w)}  ${f(m.precision)}  ${f(m.recall).slice(2)}  ${String(m.count).padStart(5)}   ${confusion[k].join(' / ')}\n`);
        });
      }
    } else if (!v.json) {
      const counts = classes.map((c, k) => `${c} ${probs.filter((p) => argmax(p) === k).length}`).join(', ');
      out.write(`classified ${examples.length} records: ${counts}${skipped ? `; ${skipped} without tokens left out` : ''}\n`);
    }
    if (v.json) out.write(`${JSON.stringify(report)}\n`);
    if (v.predictions !== undefined && !v.json) out.write(`predictions written to ${v.predictions as string}\n`);
    return 0;
  } finally {
    run.module.dispose();
  }
}

/** Class probabilities of each example, in batches, in eval mode without gradients. */
function predict(model: kiln.nn.Module, examples: Example[], batchSize: number, device: string): number[][] {
  model.eval();
  const out: number[][] = [];
  noGrad(() => {
    for (const batch of exampleLoader(examples, batchSize, false)) {
      const [x, , o] = batch;
      const p = tidy(() => softmax((model.forward(x.to({ device }), null, o) as { logits: kiln.Tensor }).logits, -1).dataSync() as Float32Array);
      dispose(batch);
      const K = p.length / o.lengths.length;
      for (let b = 0; b < o.lengths.length; b++) out.push(Array.from(p.subarray(b * K, (b + 1) * K)));
    }
  });
  return out;
}
