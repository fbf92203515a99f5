// `npm run bench -- SUITE [options]`: runs one benchmark suite, prints a table, saves JSON (and the
// files a suite adds, e.g. Markdown and SVG) in bench/results/.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface BenchReport {
  suite: string;
  date: string;
  machine: { cpus: number; node: string; kernel: string };
  results: Record<string, unknown>;
  table: string;
}

/** What a suite returns: its report's results and table, and files saved beside the JSON (by extension). */
type SuiteOutput = Omit<BenchReport, 'date' | 'machine' | 'suite'> & { files?: Record<string, string> };

const suites: Record<string, () => Promise<SuiteOutput>> = {
  store: async () => (await import('./store.js')).run(),
  vrpc: async () => (await import('./vrpc.js')).run(),
  fs: async () => (await import('./fs.js')).run(),
  metadata: async () => (await import('./metadata.js')).run(),
  host: async () => (await import('./host-dispatch.js')).run(),
  guest: async () => (await import('./guest.js')).run(),
};

async function main(): Promise<void> {
  const name = process.argv[2] ?? 'store';
  const suite = suites[name];
  if (!suite) {
    process.stderr.write(`unknown suite ${JSON.stringify(name)}; suites: ${Object.keys(suites).join(', ')}\n`);
    process.exit(2);
  }
  const os = await import('node:os');
  const { files, ...r } = await suite();
  const report: BenchReport = {
    suite: name, date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, node: process.version, kernel: os.release() }, ...r,
  };
  const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bench/results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}-${report.date.replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, JSON.stringify(report, null, 2));
  fs.writeFileSync(path.join(dir, `${name}-latest.json`), JSON.stringify(report, null, 2));
  const saved = [file];
  for (const [ext, text] of Object.entries(files ?? {})) {
    const f = file.replace(/\.json$/, `.${ext}`);
    fs.writeFileSync(f, text);
    fs.writeFileSync(path.join(dir, `${name}-latest.${ext}`), text);
    saved.push(f);
  }
  process.stdout.write(`${report.table}\n\nsaved ${saved.map((f) => path.relative(process.cwd(), f)).join(', ')}\n`);
}

main().catch((e) => {
  process.stderr.write(`bench: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
