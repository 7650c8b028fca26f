// Line charts as self-contained SVG (no scripts, fonts or external files), for the loss curve a
// training run leaves behind: axes with round-number ticks, one polyline per series, a legend.
/** One line of a chart. */
export interface Series {
  /** Label in the legend. */
  name: string;
  /** [x, y] points; non-finite y values are skipped. */
  points: ReadonlyArray<readonly [number, number]>;
  /** Stroke color (any SVG color: '#1f77b4', 'red'). */
  color: string;
  /** Stroke width in pixels (default 2). */
  width?: number;
  /** Stroke opacity (default 1). */
  opacity?: number;
  /** Draw a dot at each point (for sparse series such as validation loss). */
  markers?: boolean;
  /** Leave the series out of the legend. */
  hideInLegend?: boolean;
}

/** Options of lineChartSVG. */
export interface ChartOptions {
  /** Heading above the plot. */
  title?: string;
  /** Label of the x axis. */
  xLabel?: string;
  /** Label of the y axis. */
  yLabel?: string;
  /** Width of the SVG in pixels (default 860). */
  width?: number;
  /** Height of the SVG in pixels (default 500). */
  height?: number;
  /** A line of small print under the title (run settings, final values). */
  subtitle?: string;
  /** A logarithmic y axis (when every y is positive), which spreads out the late part of a loss curve. */
  logY?: boolean;
}

const escapeXml = (s: string): string =>
  s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);

/** About `count` evenly spaced round numbers (1, 2 or 5 times a power of ten apart) covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 6): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count - 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  // Multiples of step, rounded to step's precision so that 3 * 0.2 reads 0.6.
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) out.push(Number((k * step).toPrecision(12)));
  return out;
}

/** Round values (1-9 times powers of ten, or 1, 2, 5 over wide ranges) in [lo, hi] for a log axis. */
export function logTicks(lo: number, hi: number): number[] {
  const decades = Math.log10(hi / lo);
  const mults = decades > 3 ? [1] : decades > 1.2 ? [1, 2, 5] : [1, 2, 3, 4, 5, 6, 7, 8, 9];
  const out: number[] = [];
  for (let k = Math.floor(Math.log10(lo)); k <= Math.ceil(Math.log10(hi)); k++) {
    for (const m of mults) {
      const v = Number((m * 10 ** k).toPrecision(12));
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out.push(v);
    }
  }
  return out.length >= 3 ? out : niceTicks(lo, hi);
}

/** v with as many decimals as the tick step needs (0.25 steps: two). */
function fmtTick(v: number, step: number): string {
  if (Math.abs(v) >= 1e5) return v.toExponential(1);
  let d = 0;
  while (d < 6 && Math.abs(step * 10 ** d - Math.round(step * 10 ** d)) > 1e-6) d++;
  return v.toFixed(d);
}

/** An SVG document drawing the series against shared axes. */
export function lineChartSVG(series: readonly Series[], opts: ChartOptions = {}): string {
  const W = opts.width ?? 860, H = opts.height ?? 500;
  const top = opts.title ? (opts.subtitle ? 70 : 50) : 20;
  const m = { left: 72, right: 24, top, bottom: 56 };
  const pw = W - m.left - m.right, ph = H - m.top - m.bottom;
  const pts = series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)));
  const logY = !!opts.logY && pts.length > 0 && pts.every(([, y]) => y > 0);
  const fy = logY ? Math.log10 : (y: number) => y;
  let [x0, x1] = pts.length ? [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))] : [0, 1];
  let [y0, y1] = pts.length ? [Math.min(...pts.map((p) => fy(p[1]))), Math.max(...pts.map((p) => fy(p[1])))] : [0, 1];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const pad = (y1 - y0) * 0.05;
  y0 = logY || y0 < 0 ? y0 - pad : Math.max(0, y0 - pad);
  y1 += pad;
  const xt = niceTicks(x0, x1);
  const yt = logY ? logTicks(10 ** y0, 10 ** y1) : niceTicks(y0, y1);
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.top + ph - ((fy(y) - y0) / (y1 - y0)) * ph;
  const f = (v: number) => v.toFixed(1);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="13">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  if (opts.title) out.push(`<text x="${W / 2}" y="28" text-anchor="middle" font-size="18" font-weight="bold">${escapeXml(opts.title)}</text>`);
  if (opts.subtitle) out.push(`<text x="${W / 2}" y="50" text-anchor="middle" font-size="12" fill="#555">${escapeXml(opts.subtitle)}</text>`);
  const xStep = xt.length > 1 ? xt[1] - xt[0] : 1, yStep = yt.length > 1 ? yt[1] - yt[0] : 1;
  for (const v of yt) {
    if (fy(v) < y0 || fy(v) > y1) continue;
    const label = logY ? String(Number(v.toPrecision(3))) : fmtTick(v, yStep);
    out.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${f(sy(v))}" y2="${f(sy(v))}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.left - 8}" y="${f(sy(v) + 4)}" text-anchor="end" fill="#333">${label}</text>`);
  }
  for (const v of xt) {
    if (v < x0 || v > x1) continue;
    out.push(`<line x1="${f(sx(v))}" x2="${f(sx(v))}" y1="${m.top}" y2="${m.top + ph}" stroke="#f0f0f0"/>`);
    out.push(`<text x="${f(sx(v))}" y="${m.top + ph + 20}" text-anchor="middle" fill="#333">${fmtTick(v, xStep)}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  if (opts.xLabel) out.push(`<text x="${m.left + pw / 2}" y="${H - 12}" text-anchor="middle">${escapeXml(opts.xLabel)}</text>`);
  if (opts.yLabel) out.push(`<text transform="translate(18 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(opts.yLabel)}</text>`);
  for (const s of series) {
    const p = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (!p.length) continue;
    const style = `fill="none" stroke="${s.color}" stroke-width="${s.width ?? 2}" stroke-opacity="${s.opacity ?? 1}" stroke-linejoin="round"`;
    out.push(`<polyline ${style} points="${p.map(([x, y]) => `${f(sx(x))},${f(sy(y))}`).join(' ')}"/>`);
    if (s.markers) for (const [x, y] of p) out.push(`<circle cx="${f(sx(x))}" cy="${f(sy(y))}" r="3.5" fill="${s.color}"/>`);
  }
  const legend = series.filter((s) => !s.hideInLegend);
  if (legend.length) out.push(`<rect x="${m.left + pw - 200}" y="${m.top + 4}" width="192" height="${legend.length * 20 + 8}" fill="#ffffff" fill-opacity="0.85"/>`);
  legend.forEach((s, i) => {
    const y = m.top + 18 + i * 20, x = m.left + pw - 192;
    out.push(`<line x1="${x}" x2="${x + 24}" y1="${y - 4}" y2="${y - 4}" stroke="${s.color}" stroke-width="${Math.max(2, s.width ?? 2)}" stroke-opacity="${s.opacity ?? 1}"/>`);
    out.push(`<text x="${x + 32}" y="${y}">${escapeXml(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
