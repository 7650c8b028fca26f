// What `kiln finetune` keeps in a checkpoint besides the weights (the task, the method and its
// settings, the class names) and how the trained module is rebuilt from it. The same function wraps
// the base GPT when fine-tuning starts and rebuilds the module when --resume, `kiln generate` or
// `kiln classify` read the checkpoint, so the weights' names always match.
import { FormatError } from '../errors';
import { GPT } from '../nn/gpt';
import { GPTForSequenceClassification } from '../nn/gpt_classify';
import * as lora from '../nn/lora';
import type { Module } from '../nn/module';
import { PromptTuning } from '../nn/prompt_tuning';

export const TASKS = ['lm', 'classify'] as const;
export const MODES = ['full', 'lora', 'prompt'] as const;

/** The fine-tuning of a run, saved under state.extra.finetune. */
export interface FinetuneState {
  /** Language modelling (next token) or sequence classification. */
  task: (typeof TASKS)[number];
  /** Which parameters train: all, LoRA adapters, or a soft prompt. */
  mode: (typeof MODES)[number];
  /** What the run started from (the --base path), for the record. */
  base: string;
  /** classify: the class names; class i is labels[i]. */
  labels?: string[];
  /** classify: tokens read per text (longer texts are cut). */
  maxLength?: number;
  /** lora: the adapters' settings (nn.lora.apply). */
  lora?: { targets: string[]; rank: number; alpha: number; dropout: number };
  /** prompt: the soft prompt's length. */
  prompt?: { numVirtualTokens: number };
}

/** The module a fine-tuning trains and checkpoints, and its parts. */
export interface Tuned {
  /** What trains and is saved: the GPT, the classifier, or the PromptTuning around either. */
  module: Module;
  /** The GPT inside. */
  gpt: GPT;
  /** The classifier (task classify), else null. */
  classifier: GPTForSequenceClassification | null;
}

/**
 * Wraps gpt for ft: a classification head (classify), LoRA adapters (lora; the head stays trainable,
 * as PEFT's modules_to_save), or a soft prompt (prompt, initialized from initTokens when given).
 */
export function wrapForFinetune(gpt: GPT, ft: FinetuneState, initTokens?: number[]): Tuned {
  const classifier = ft.task === 'classify' ? new GPTForSequenceClassification(gpt, { numLabels: ft.labels!.length }) : null;
  const body: Module = classifier ?? gpt;
  if (ft.mode === 'lora') {
    lora.apply(body, ft.lora!);
    if (classifier) classifier.score.weight.requiresGrad = true;
  }
  const module = ft.mode === 'prompt' ? new PromptTuning(classifier ?? gpt, { numVirtualTokens: ft.prompt!.numVirtualTokens, initTokens }) : body;
  return { module, gpt, classifier };
}

/** The FinetuneState saved in file, checked (files are untrusted); null when the run was not a fine-tuning. */
export function readFinetuneState(raw: unknown, file: string, op: string): FinetuneState | null {
  if (raw === undefined) return null;
  const bad = (what: string): never => {
    throw new FormatError(op, `${file}: invalid fine-tuning state: ${what}`);
  };
  const ft = raw as Partial<FinetuneState>;
  if (ft === null || typeof ft !== 'object') bad('not an object');
  if (!TASKS.includes(ft.task!)) bad(`task ${JSON.stringify(ft.task)}`);
  if (!MODES.includes(ft.mode!)) bad(`mode ${JSON.stringify(ft.mode)}`);
  if (typeof ft.base !== 'string') bad('base is not a string');
  const posInt = (x: unknown) => Number.isInteger(x) && (x as number) > 0;
  if (ft.task === 'classify') {
    if (!Array.isArray(ft.labels) || ft.labels.length < 2 || !ft.labels.every((l) => typeof l === 'string')) bad('labels must be two or more strings');
    if (!posInt(ft.maxLength)) bad('maxLength must be a positive integer');
  }
  if (ft.mode === 'lora') {
    const l = ft.lora;
    if (!l || !Array.isArray(l.targets) || !l.targets.every((t) => typeof t === 'string') || !posInt(l.rank) || !(l.alpha > 0) || !(l.dropout >= 0 && l.dropout < 1)) {
      bad('lora must hold targets, rank, alpha and dropout');
    }
  }
  if (ft.mode === 'prompt' && !posInt(ft.prompt?.numVirtualTokens)) bad('prompt.numVirtualTokens must be a positive integer');
  return ft as FinetuneState;
}
