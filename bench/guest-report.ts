// The report of `npm run bench -- guest`: the guest's markers turned into medians and spreads per
// target, phase and workload, ratios against ext4 on the raw disk, as a text table, Markdown and SVG.
import { table } from '../src/cli/format.js';
import { barChartSvg } from './chart.js';
import { TARGETS, WORKLOADS, type GuestMarker, type GuestPlan, type Workload } from './guest-plan.js';

export interface PhaseStats { runs: number[]; median: number; min: number; max: number }
export interface TargetOut { label: string; skipped?: string; failures: string[]; phases: Record<string, PhaseStats>; workloads: Partial<Record<Workload, PhaseStats>> }

export function stats(runs: number[]): PhaseStats {
  const s = [...runs].sort((a, b) => a - b);
  const median = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return { runs, median, min: s[0]!, max: s[s.length - 1]! };
}

export function collect(markers: GuestMarker[], plan: GuestPlan, skipped: Map<string, string>): Record<string, TargetOut> {
  const out: Record<string, TargetOut> = {};
  for (const t of TARGETS) {
    const o: TargetOut = { label: t.label, failures: [], phases: {}, workloads: {} };
    out[t.id] = o;
    if (skipped.has(t.id)) { o.skipped = skipped.get(t.id); continue; }
    if (!plan.targets.some((p) => p.id === t.id)) { o.skipped = 'not in this run (--quick or --targets)'; continue; }
    const runs = new Map<string, number[]>();
    const perRep = new Map<string, number>(); // workload@rep -> total seconds
    let ran = false;
    for (const m of markers) {
      if (m.kind === 'skip' && m.target === t.id) o.skipped = m.reason;
      if (m.kind === 'fail' && m.target === t.id) o.failures.push(`${m.workload} #${m.rep}: ${m.reason}`);
      if (m.kind !== 'result' || m.target !== t.id) continue;
      ran = true;
      const key = `${m.workload}: ${m.phase}`;
      runs.set(key, [...(runs.get(key) ?? []), m.seconds]);
      perRep.set(`${m.workload}@${m.rep}`, (perRep.get(`${m.workload}@${m.rep}`) ?? 0) + m.seconds);
    }
    for (const [k, v] of runs) o.phases[k] = stats(v);
    for (const w of plan.workloads) {
      // a workload's total per repetition, only where every phase of it ran
      const failedReps = new Set(markers.filter((m) => m.kind === 'fail' && m.target === t.id && m.workload === w).map((m) => (m as { rep: number }).rep));
      const totals = [...perRep].filter(([k]) => k.startsWith(`${w}@`) && !failedReps.has(Number(k.split('@')[1]))).map(([, v]) => v);
      if (totals.length) o.workloads[w] = stats(totals);
    }
    if (!ran && !o.skipped) o.skipped = o.failures.length ? 'every workload failed' : 'the guest did not report it (see the console log)';
  }
  return out;
}

function secs(v: number): string { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }
function cell(s: PhaseStats | undefined, base: PhaseStats | undefined): string {
  if (!s) return '-';
  const spread = s.runs.length > 1 ? ` ±${(((s.max - s.min) / 2 / s.median) * 100).toFixed(0)}%` : '';
  return `${secs(s.median)} s${spread}${base ? ` (${(s.median / base.median).toFixed(2)}x)` : ''}`;
}

export function render(res: Record<string, TargetOut>): { text: string; markdown: string; rows: string[][] } {
  const ids = TARGETS.map((t) => t.id).filter((id) => !res[id]!.skipped);
  const base = res.raw!.skipped ? undefined : res.raw!;
  const phaseNames = [...new Set(ids.flatMap((id) => Object.keys(res[id]!.phases)))];
  const head = ['', ...ids.map((id) => res[id]!.label)];
  const rows: string[][] = [];
  for (const w of WORKLOADS) {
    if (!ids.some((id) => res[id]!.workloads[w])) continue;
    rows.push([`**${w}** (total)`, ...ids.map((id) => cell(res[id]!.workloads[w], base?.workloads[w]))]);
    for (const p of phaseNames.filter((n) => n.startsWith(`${w}: `))) rows.push([`  ${p.slice(w.length + 2)}`, ...ids.map((id) => cell(res[id]!.phases[p], base?.phases[p]))]);
  }
  const skippedLines = TARGETS.filter((t) => res[t.id]!.skipped).map((t) => `${t.label}: skipped (${res[t.id]!.skipped})`);
  const failLines = TARGETS.flatMap((t) => res[t.id]!.failures.map((f) => `${t.label}: failed ${f}`));
  const notes = [...skippedLines, ...failLines];
  const md = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  return {
    rows: [head, ...rows],
    text: `${table([head, ...rows.map((r) => [r[0]!.replace(/\*\*/g, ''), ...r.slice(1)])])}${notes.length ? `\n\n${notes.join('\n')}` : ''}`,
    markdown: `${md}${notes.length ? `\n\n${notes.map((n) => `- ${n}`).join('\n')}` : ''}\n`,
  };
}

export function chart(res: Record<string, TargetOut>, accel: string): string {
  const ids = TARGETS.map((t) => t.id).filter((id) => id !== 'raw' && !res[id]!.skipped);
  const base = res.raw!;
  const rows = WORKLOADS.filter((w) => base.workloads[w]);
  return barChartSvg({
    title: 'Inside a QEMU guest: time relative to ext4 on a raw virtio-blk disk',
    subtitle: `median of each workload's total; lower is better; ${accel}`,
    rows: [...rows],
    series: ids.map((id) => res[id]!.label),
    values: rows.map((w) => ids.map((id) => { const s = res[id]!.workloads[w]; return s ? s.median / base.workloads[w]!.median : undefined; })),
    baseline: 1,
    format: (v) => `${v.toFixed(2)}x`,
  });
}
