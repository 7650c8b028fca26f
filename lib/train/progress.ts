// Progress of a training run on the terminal: a live bar (cli-progress) with loss, validation loss,
// learning rate, tokens/s and ETA when the output is a terminal, else one plain line every few steps
// (logs, CI, pipes), or nothing.
import { MultiBar, SingleBar } from 'cli-progress';

export type ProgressMode = 'bar' | 'log' | 'none';

export interface ProgressInfo {
  step: number;
  total: number;
  loss: number;
  valLoss: number | null;
  lr: number;
  tokensPerSec: number;
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

  constructor(
    readonly mode: ProgressMode,
    total: number,
    start: number,
    private readonly logInterval: number,
    private readonly stream: NodeJS.WritableStream = process.stderr,
  ) {
    if (mode !== 'bar') return;
    this.multi = new MultiBar({
      format: '{bar} {value}/{total} | loss {loss} | val {val} | lr {lr} | {tps} tok/s | {elapsed} < {remaining}',
      barsize: 24,
      hideCursor: true,
      stream,
      fps: 5,
      linewrap: false,
      gracefulExit: true,
    });
    this.bar = this.multi.create(total, start, { loss: '-', val: '-', lr: '-', tps: '-', elapsed: '0:00', remaining: '?' });
  }

  update(p: ProgressInfo): void {
    if (this.mode === 'none') return;
    if (this.bar) {
      this.bar.update(p.step, {
        loss: fmtLoss(p.loss), val: fmtLoss(p.valLoss), lr: fmtLr(p.lr), tps: formatCount(p.tokensPerSec),
        elapsed: formatDuration(p.elapsed), remaining: formatDuration(p.eta),
      });
      return;
    }
    if (p.step % this.logInterval !== 0 && p.step !== p.total) return;
    if (p.step === this.lastLogged) return;
    this.lastLogged = p.step;
    const width = String(p.total).length;
    this.stream.write(
      `step ${String(p.step).padStart(width)}/${p.total} | loss ${fmtLoss(p.loss)} | val ${fmtLoss(p.valLoss)} | lr ${fmtLr(p.lr)} | ` +
        `${formatCount(p.tokensPerSec)} tok/s | ${formatDuration(p.elapsed)} elapsed, ETA ${formatDuration(p.eta)}\n`,
    );
  }

  /** A message line (above the bar when there is one). */
  log(line: string): void {
    if (this.mode === 'none') return;
    if (this.multi) this.multi.log(`${line}\n`);
    else this.stream.write(`${line}\n`);
  }

  stop(): void {
    this.multi?.stop();
  }
}
