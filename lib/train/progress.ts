// Progress of a training run on the terminal: a live bar (cli-progress) with loss, validation loss,
// learning rate, throughput and ETA when the output is a terminal, else one plain line every few steps
// (logs, CI, pipes), or nothing. Language models show nats per token (or char) and tokens/s, other
// models a plain loss and samples/s.
import { MultiBar, SingleBar } from 'cli-progress';

/**
 * How a run shows progress: 'bar' (a live bar on a terminal), 'log' (a line every logInterval steps) or
 * 'none'.
 */
export type ProgressMode = 'bar' | 'log' | 'none';

/**
 * Where progress goes: process.stderr (the default), process.stdout, a file stream, or anything with a
 * write(text) method (a structural type, so that kiln's declarations need no Node.js types). A live
 * bar needs a terminal stream.
 */
export interface ProgressStream {
  /** Writes text (lines end in "\n"); the return value is ignored. */
  write(text: string): unknown;
  /** True for a terminal: progress 'auto' then shows a live bar, else plain lines. */
  isTTY?: boolean;
}

/**
 * What a batch is counted in, which also names what the Trainer reports: 'token' and 'char' are for
 * language models (throughput in tokens/s or chars/s, losses in nats per token or per char), 'sample'
 * for everything else (samples/s, a plain loss).
 */
export type BatchUnit = 'token' | 'char' | 'sample';

/** The metrics.jsonl field of the throughput. */
export type ThroughputField = 'tokens_per_s' | 'chars_per_s' | 'samples_per_s';

/** How a unit reads in progress lines, metrics.jsonl and the loss chart. */
export function unitLabels(unit: BatchUnit): { rate: string; loss: string | null; metricsField: ThroughputField } {
  return { rate: `${unit}s/s`, loss: unit === 'sample' ? null : `nats/${unit}`, metricsField: `${unit}s_per_s` };
}

/** What a progress update shows. */
export interface ProgressInfo {
  /** Optimizer steps done. */
  step: number;
  /** Steps the run will do in all. */
  total: number;
  /** Training loss of the last step. */
  loss: number;
  /** Last validation loss (null before the first evaluation or without validation data). */
  valLoss: number | null;
  /** Learning rate of the last step. */
  lr: number;
  /** What throughput counts, and what losses are per for language models. */
  unit: BatchUnit;
  /** Units per second. */
  throughput: number;
  /** Seconds since the run started (including earlier runs of a resumed one). */
  elapsed: number;
  /** Seconds left, estimated from the recent pace. */
  eta: number;
}

/** 75 -> "1:15", 3725 -> "1:02:05". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h ? String(m).padStart(2, '0') : String(m);
  return `${h ? `${h}:` : ''}${mm}:${String(r).padStart(2, '0')}`;
}

/** 1234567 -> "1.23M", 25300 -> "25.3k". */
export function formatCount(n: number): string {
  if (!Number.isFinite(n)) return '?';
  if (n >= 1e6) return `${(n / 1e6).toPrecision(3)}M`;
  if (n >= 1e3) return `${(n / 1e3).toPrecision(3)}k`;
  return n.toFixed(0);
}

const fmtLoss = (v: number | null) => (v === null || !Number.isFinite(v) ? '-' : v.toFixed(4));
const fmtLr = (v: number) => v.toExponential(2);

/** One run's progress display. */
export class ProgressReporter {
  private readonly multi: MultiBar | null = null;
  private readonly bar: SingleBar | null = null;
  private lastLogged = -1;

  /**
   * A display of a run of total steps starting at start (above 0 when resumed), writing a line every
   * logInterval steps in 'log' mode, to stream (default process.stderr).
   */
  constructor(
    /** 'bar', 'log' or 'none'. */
    readonly mode: ProgressMode,
    total: number,
    start: number,
    private readonly logInterval: number,
    private readonly stream: ProgressStream = process.stderr,
  ) {
    if (mode !== 'bar') return;
    this.multi = new MultiBar({
      format: '{bar} {value}/{total} | loss {loss} | val {val} | lr {lr} | {rate} | {elapsed} < {remaining}',
      barsize: 24,
      hideCursor: true,
      stream: stream as NodeJS.WritableStream,
      fps: 5,
      linewrap: false,
      gracefulExit: true,
    });
    this.bar = this.multi.create(total, start, { loss: '-', val: '-', lr: '-', rate: '-', elapsed: '0:00', remaining: '?' });
  }

  /**
   * Shows step p: moves the bar, or writes a line when the step is a multiple of logInterval (or the
   * last).
   */
  update(p: ProgressInfo): void {
    if (this.mode === 'none') return;
    const labels = unitLabels(p.unit);
    const loss = `${fmtLoss(p.loss)}${labels.loss ? ` ${labels.loss}` : ''}`;
    const rate = `${formatCount(p.throughput)} ${labels.rate}`;
    if (this.bar) {
      this.bar.update(p.step, { loss, val: fmtLoss(p.valLoss), lr: fmtLr(p.lr), rate, elapsed: formatDuration(p.elapsed), remaining: formatDuration(p.eta) });
      return;
    }
    if (p.step % this.logInterval !== 0 && p.step !== p.total) return;
    if (p.step === this.lastLogged) return;
    this.lastLogged = p.step;
    const width = String(p.total).length;
    this.stream.write(
      `step ${String(p.step).padStart(width)}/${p.total} | loss ${loss} | val ${fmtLoss(p.valLoss)} | lr ${fmtLr(p.lr)} | ` +
        `${rate} | ${formatDuration(p.elapsed)} elapsed, ETA ${formatDuration(p.eta)}\n`,
    );
  }

  /** A message line (above the bar when there is one). */
  log(line: string): void {
    if (this.mode === 'none') return;
    if (this.multi) this.multi.log(`${line}\n`);
    else this.stream.write(`${line}\n`);
  }

  /** Stops the live bar (leaving its last state on the terminal); call once at the end of a run. */
  stop(): void {
    this.multi?.stop();
  }
}
