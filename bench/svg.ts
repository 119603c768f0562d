// A small SVG chart writer for the benchmark report: grouped bar charts with min–max whiskers and
// line charts (optionally with a logarithmic x axis). Plain strings, no dependencies.

export interface BarSeries {
  name: string;
  color: string;
  /** One value per group (null: no bar). */
  values: (number | null)[];
  /** Whiskers per group (e.g. min and max over rounds). */
  lo?: (number | null)[];
  hi?: (number | null)[];
}

export interface BarChart {
  title: string;
  yLabel: string;
  groups: string[];
  series: BarSeries[];
  width?: number;
  height?: number;
  /** Print each bar's value above it. */
  labels?: boolean;
  note?: string;
}

export interface LineSeries {
  name: string;
  color: string;
  dashed?: boolean;
  points: [number, number][];
}

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: LineSeries[];
  logX?: boolean;
  logY?: boolean;
  yMin?: number;
  yMax?: number;
  width?: number;
  height?: number;
  note?: string;
}

export const MODE_COLORS: Record<string, string> = { none: '#7f8c8d', kernel: '#2e86de', agent: '#e67e22' };
export const PALETTE = ['#2e86de', '#e67e22', '#27ae60', '#8e44ad', '#c0392b', '#16a085', '#7f8c8d'];

const FONT = 'font-family="Helvetica, Arial, sans-serif"';

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** 1, 2, 5 × 10^k ticks covering [0, max]. */
function niceTicks(max: number, count = 5): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let v = 0; v <= max * 1.0001 + step && ticks.length < 20; v += step) {
    ticks.push(Number(v.toPrecision(12)));
    if (v >= max) break;
  }
  return ticks;
}

/** Short tick text: 1.5k, 20M, 0.25. */
export function shortNum(v: number): string {
  const a = Math.abs(v);
  const trim = (x: number): string => String(Number(x.toPrecision(3)));
  if (a >= 1e9) return `${trim(v / 1e9)}G`;
  if (a >= 1e6) return `${trim(v / 1e6)}M`;
  if (a >= 1000) return `${trim(v / 1e3)}k`;
  return trim(v);
}

function text(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${FONT} ${attrs}>${esc(s)}</text>`;
}

function legend(items: { name: string; color: string; dashed?: boolean }[], x: number, y: number): string {
  let out = '';
  let cx = x;
  for (const it of items) {
    out += it.dashed
      ? `<line x1="${cx}" y1="${y - 4}" x2="${cx + 18}" y2="${y - 4}" stroke="${it.color}" stroke-width="2.5" stroke-dasharray="5 3"/>`
      : `<rect x="${cx}" y="${y - 10}" width="18" height="11" fill="${it.color}"/>`;
    out += text(cx + 23, y, it.name, 'font-size="12" fill="#333"');
    cx += 30 + it.name.length * 6.8;
  }
  return out;
}

export function barChart(c: BarChart): string {
  const W = c.width ?? 760;
  const H = c.height ?? 380;
  const labelLines = Math.max(1, ...c.groups.map((g) => g.split('\n').length));
  const m = { left: 70, right: 20, top: 56, bottom: (c.note ? 66 : 48) + (labelLines - 1) * 14 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const all: number[] = [];
  for (const s of c.series) {
    for (const v of s.values) if (v !== null && Number.isFinite(v)) all.push(v);
    for (const v of s.hi ?? []) if (v !== null && Number.isFinite(v)) all.push(v);
  }
  const ticks = niceTicks(Math.max(0, ...all) * 1.08);
  const ymax = ticks[ticks.length - 1]!;
  const y = (v: number): number => m.top + ph - (v / ymax) * ph;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`);
  parts.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  parts.push(text(W / 2, 22, c.title, 'font-size="15" font-weight="bold" text-anchor="middle" fill="#222"'));
  parts.push(legend(c.series, m.left, 42));
  for (const t of ticks) {
    parts.push(`<line x1="${m.left}" y1="${y(t).toFixed(1)}" x2="${W - m.right}" y2="${y(t).toFixed(1)}" stroke="#e5e5e5"/>`);
    parts.push(text(m.left - 6, y(t) + 4, shortNum(t), 'font-size="11" text-anchor="end" fill="#555"'));
  }
  parts.push(text(16, m.top + ph / 2, c.yLabel, `font-size="12" fill="#333" text-anchor="middle" transform="rotate(-90 16 ${m.top + ph / 2})"`));
  const gw = pw / Math.max(1, c.groups.length);
  const bw = Math.min(48, (gw * 0.8) / Math.max(1, c.series.length));
  c.groups.forEach((g, gi) => {
    const x0 = m.left + gi * gw + (gw - bw * c.series.length) / 2;
    c.series.forEach((s, si) => {
      const v = s.values[gi];
      if (v === null || v === undefined || !Number.isFinite(v)) return;
      const x = x0 + si * bw;
      parts.push(`<rect x="${(x + 1).toFixed(1)}" y="${y(v).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(m.top + ph - y(v)).toFixed(1)}" fill="${s.color}"><title>${esc(`${s.name} ${g}: ${v}`)}</title></rect>`);
      const lo = s.lo?.[gi];
      const hi = s.hi?.[gi];
      if (lo !== null && lo !== undefined && hi !== null && hi !== undefined && hi > lo) {
        const cx = x + bw / 2;
        parts.push(`<line x1="${cx.toFixed(1)}" y1="${y(lo).toFixed(1)}" x2="${cx.toFixed(1)}" y2="${y(hi).toFixed(1)}" stroke="#222" stroke-width="1.2"/>`);
        for (const w of [lo, hi]) parts.push(`<line x1="${(cx - 4).toFixed(1)}" y1="${y(w).toFixed(1)}" x2="${(cx + 4).toFixed(1)}" y2="${y(w).toFixed(1)}" stroke="#222" stroke-width="1.2"/>`);
      }
      if (c.labels) parts.push(text(x + bw / 2, y(Math.max(v, hi ?? v)) - 4, shortNum(v), 'font-size="10" text-anchor="middle" fill="#333"'));
    });
    g.split('\n').forEach((ln, li) => parts.push(text(m.left + gi * gw + gw / 2, m.top + ph + 18 + li * 14, ln, 'font-size="12" text-anchor="middle" fill="#333"')));
  });
  parts.push(`<line x1="${m.left}" y1="${m.top + ph}" x2="${W - m.right}" y2="${m.top + ph}" stroke="#333"/>`);
  if (c.note) parts.push(text(m.left, H - 10, c.note, 'font-size="11" fill="#666"'));
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

export function lineChart(c: LineChart): string {
  const W = c.width ?? 760;
  const H = c.height ?? 380;
  const m = { left: 70, right: 20, top: 56, bottom: c.note ? 70 : 52 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const pts = c.series.flatMap((s) => s.points).filter(([x, yv]) => Number.isFinite(x) && Number.isFinite(yv) && (!c.logX || x > 0) && (!c.logY || yv > 0));
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const tx = (v: number): number => (c.logX ? Math.log10(v) : v);
  const ty = (v: number): number => (c.logY ? Math.log10(v) : v);
  let x0 = xs.length ? Math.min(...xs.map(tx)) : 0;
  let x1 = xs.length ? Math.max(...xs.map(tx)) : 1;
  if (c.logX) {
    x0 = Math.floor(x0);
    x1 = Math.ceil(x1);
  }
  if (x1 <= x0) x1 = x0 + 1;
  let y0: number;
  let y1: number;
  let yTicks: number[];
  if (c.logY) {
    y0 = Math.floor(ys.length ? Math.min(...ys.map(ty)) : 0);
    y1 = Math.ceil(ys.length ? Math.max(...ys.map(ty)) : 1);
    if (y1 <= y0) y1 = y0 + 1;
    yTicks = [];
    for (let e = y0; e <= y1; e++) yTicks.push(10 ** e);
  } else {
    yTicks = niceTicks(c.yMax ?? Math.max(0, ...ys) * 1.05);
    y0 = c.yMin ?? 0;
    y1 = c.yMax ?? yTicks[yTicks.length - 1]!;
  }
  const X = (v: number): number => m.left + ((tx(v) - x0) / (x1 - x0)) * pw;
  const Y = (v: number): number => m.top + ph - ((ty(v) - y0) / (y1 - y0)) * ph;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`);
  parts.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  parts.push(text(W / 2, 22, c.title, 'font-size="15" font-weight="bold" text-anchor="middle" fill="#222"'));
  parts.push(legend(c.series, m.left, 42));
  for (const t of yTicks) {
    if (!c.logY && (t < y0 || t > y1)) continue;
    parts.push(`<line x1="${m.left}" y1="${Y(t).toFixed(1)}" x2="${W - m.right}" y2="${Y(t).toFixed(1)}" stroke="#e5e5e5"/>`);
    parts.push(text(m.left - 6, Y(t) + 4, shortNum(t), 'font-size="11" text-anchor="end" fill="#555"'));
  }
  const xTicks: number[] = [];
  if (c.logX) for (let e = x0; e <= x1; e++) xTicks.push(10 ** e);
  else xTicks.push(...niceTicks(x1));
  for (const t of xTicks) {
    const px = X(t);
    if (px < m.left - 0.5 || px > W - m.right + 0.5) continue;
    parts.push(`<line x1="${px.toFixed(1)}" y1="${m.top}" x2="${px.toFixed(1)}" y2="${m.top + ph}" stroke="#f0f0f0"/>`);
    parts.push(text(px, m.top + ph + 16, shortNum(t), 'font-size="11" text-anchor="middle" fill="#555"'));
  }
  parts.push(text(m.left + pw / 2, m.top + ph + 34, c.xLabel, 'font-size="12" text-anchor="middle" fill="#333"'));
  parts.push(text(16, m.top + ph / 2, c.yLabel, `font-size="12" fill="#333" text-anchor="middle" transform="rotate(-90 16 ${m.top + ph / 2})"`));
  for (const s of c.series) {
    const sp = s.points.filter(([x, yv]) => Number.isFinite(x) && Number.isFinite(yv) && (!c.logX || x > 0) && (!c.logY || yv > 0));
    if (sp.length === 0) continue;
    const d = sp.map(([x, yv], i) => `${i === 0 ? 'M' : 'L'}${X(x).toFixed(1)},${Y(yv).toFixed(1)}`).join(' ');
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}><title>${esc(s.name)}</title></path>`);
    if (sp.length <= 12) for (const [x, yv] of sp) parts.push(`<circle cx="${X(x).toFixed(1)}" cy="${Y(yv).toFixed(1)}" r="3" fill="${s.color}"/>`);
  }
  parts.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  if (c.note) parts.push(text(m.left, H - 10, c.note, 'font-size="11" fill="#666"'));
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

/** A latency histogram ([upper bound µs, count]) as CDF points (x: µs, y: fraction ≤ x). */
export function histToCdf(hist: readonly [number, number][]): [number, number][] {
  const total = hist.reduce((a, [, n]) => a + n, 0);
  if (total === 0) return [];
  let acc = 0;
  return hist.map(([ub, n]) => {
    acc += n;
    return [ub, acc / total] as [number, number];
  });
}
