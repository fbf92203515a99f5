// A grouped horizontal bar chart as SVG text, drawn by hand: one group per row label, one bar per
// series, a dashed line at the baseline value. Enough for ratio charts in reports; no browser needed.

export interface BarChart {
  title: string;
  /** What the numbers mean, under the title. */
  subtitle?: string;
  rows: string[];
  series: string[];
  /** values[row][series]; undefined = no bar (skipped or failed). */
  values: (number | undefined)[][];
  /** Where the reference line goes (1 for ratios against a baseline). */
  baseline?: number;
  /** How a value is written at the end of its bar. */
  format?: (v: number) => string;
}

const PALETTE = ['#4c78a8', '#f58518', '#54a24b', '#e45756', '#72b7b2', '#b279a2', '#eeca3b', '#9d755d', '#bab0ac'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function barChartSvg(c: BarChart): string {
  const fmt = c.format ?? ((v: number) => v.toFixed(2));
  const bar = 14, gap = 10, labelW = 190, plotW = 520, valueW = 60, top = c.subtitle ? 58 : 40;
  const legendH = 22 * Math.ceil(c.series.length / 3);
  const groupH = c.series.length * bar + gap;
  const height = top + c.rows.length * groupH + 30 + legendH;
  const width = labelW + plotW + valueW + 20;
  const all = c.values.flat().filter((v): v is number => v !== undefined && Number.isFinite(v));
  const max = Math.max(c.baseline ?? 0, ...all, 1e-9) * 1.05;
  const x = (v: number) => labelW + (v / max) * plotW;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="10" y="22" font-size="15" font-weight="bold">${esc(c.title)}</text>`);
  if (c.subtitle) out.push(`<text x="10" y="42" fill="#555">${esc(c.subtitle)}</text>`);
  c.rows.forEach((row, r) => {
    const y0 = top + r * groupH;
    out.push(`<text x="${labelW - 8}" y="${y0 + (c.series.length * bar) / 2 + 4}" text-anchor="end">${esc(row)}</text>`);
    c.series.forEach((_, s) => {
      const v = c.values[r]?.[s];
      const y = y0 + s * bar;
      if (v === undefined || !Number.isFinite(v)) {
        out.push(`<text x="${labelW + 4}" y="${y + bar - 3}" fill="#999" font-size="10">n/a</text>`);
        return;
      }
      out.push(`<rect x="${labelW}" y="${y + 1}" width="${Math.max(1, x(v) - labelW).toFixed(1)}" height="${bar - 2}" fill="${PALETTE[s % PALETTE.length]}"/>`);
      out.push(`<text x="${(x(v) + 4).toFixed(1)}" y="${y + bar - 3}" font-size="10">${esc(fmt(v))}</text>`);
    });
  });
  const plotBottom = top + c.rows.length * groupH;
  out.push(`<line x1="${labelW}" y1="${top - 4}" x2="${labelW}" y2="${plotBottom}" stroke="#333"/>`);
  if (c.baseline !== undefined) {
    const bx = x(c.baseline).toFixed(1);
    out.push(`<line x1="${bx}" y1="${top - 4}" x2="${bx}" y2="${plotBottom}" stroke="#333" stroke-dasharray="4 3"/>`);
    out.push(`<text x="${bx}" y="${plotBottom + 14}" text-anchor="middle" fill="#333" font-size="10">${esc(fmt(c.baseline))}</text>`);
  }
  c.series.forEach((s, i) => {
    const lx = 10 + (i % 3) * 250, ly = plotBottom + 30 + Math.floor(i / 3) * 22;
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`);
    out.push(`<text x="${lx + 18}" y="${ly}">${esc(s)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
