// `prism scan [VOLUMES...] --exec CMD | --hash-list FILE`: each distinct file content of the volumes
// is scanned once (src/store/unique-contents.ts), however many files in however many volumes hold it,
// and every holder of a flagged content is reported. CMD runs under `sh -c`, several at once, with
// the content on its stdin, or in a temporary file whose path replaces `{}`; it exits 0 for clean, 1
// for flagged, anything else for an error (clamscan's convention). Exit status: 0 when nothing was
// flagged, 1 when something was, EIO (5) when a scan failed.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { PrismError, fromNodeError } from '../errors.js';
import type { Store } from '../store/store.js';
import type { Reading } from './main.js';
import { contentPieces, uniqueContents, type Holder, type UniqueContent } from '../store/unique-contents.js';
import { bytes } from './format.js';
import { progress } from './progress.js';

interface ScanOptions { exec?: string; hashList?: string; jobs: string; json?: boolean }

interface Flagged { size: number; sha256?: string; why: string; holders: Holder[] }

export interface ScanReport {
  volumes: number;
  files: number;
  bytes: number;
  uniqueContents: number;
  bytesScanned: number;
  flagged: Flagged[];
  errors: Array<{ holders: Holder[]; error: string }>;
}

export function scanCommand(p: Command, reading: Reading, print: (s: string) => void): void {
  p.command('scan [volumes...]').description('scan each distinct file content once for all the volumes holding it (all volumes by default)')
    .option('--exec <cmd>', 'run CMD (sh -c) on each content, on stdin or in a file whose path replaces {}; exit 0 clean, 1 flagged')
    .option('--hash-list <file>', 'flag the contents whose SHA-256 is listed in FILE (hex, one per line, as sha256sum prints)')
    .option('-j, --jobs <n>', 'scans at once', String(os.availableParallelism()))
    .option('--json', 'machine-readable output')
    .addHelpText('after', "\nExample:\n  prism scan --exec 'clamscan --no-summary -'    # every VM's files, each distinct content once")
    .action(async (volumes: string[], o: ScanOptions, cmd: Command) => {
      if (!o.exec && !o.hashList) throw new PrismError('EINVAL', 'give --exec CMD, --hash-list FILE, or both');
      const jobs = Number(o.jobs);
      if (!Number.isInteger(jobs) || jobs < 1) throw new PrismError('EINVAL', `--jobs takes a whole number, not ${JSON.stringify(o.jobs)}`);
      const listed = o.hashList ? readHashList(o.hashList) : undefined;
      // beside a serving host, the volumes are read through its pins of them, and reported by their names
      const r = await reading(cmd, volumes.length ? volumes : null, async (s, pinned, names) => {
        const asked = new Map(names.map((n) => [pinned(n), n]));
        const report = await scan(s, [...asked.keys()], { exec: o.exec, listed, jobs });
        for (const h of [...report.flagged, ...report.errors].flatMap((f) => f.holders)) h.volume = asked.get(h.volume) ?? h.volume;
        return report;
      });
      if (o.json) print(JSON.stringify(r, null, 2));
      else {
        print(`${r.files} files (${bytes(r.bytes)}) in ${r.volumes} volumes hold ${r.uniqueContents} distinct contents (${bytes(r.bytesScanned)}): `
          + `scanned ${r.uniqueContents} times instead of ${r.files}, ${(r.bytes / Math.max(r.bytesScanned, 1)).toFixed(1)}x fewer bytes read`);
        for (const f of r.flagged) print(`FLAGGED (${f.why}, ${bytes(f.size)}): ${f.holders.map((h) => `${h.volume}:${h.path}`).join(' ')}`);
        for (const e of r.errors) print(`ERROR (${e.error}): ${e.holders.map((h) => `${h.volume}:${h.path}`).join(' ')}`);
        if (!r.flagged.length && !r.errors.length) print('nothing flagged');
      }
      if (r.errors.length) throw new PrismError('EIO', `${r.errors.length} contents could not be scanned`);
      if (r.flagged.length) process.exitCode = 1;
    });
}

/** SHA-256s from a file: the first word of each line (sha256sum's output works as it is). */
function readHashList(file: string): Set<string> {
  let text: string;
  try { text = fs.readFileSync(file, 'utf8'); } catch (e) { throw fromNodeError(e, file); }
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const w = line.trim().split(/\s+/)[0]?.toLowerCase() ?? '';
    if (w === '' || w.startsWith('#')) continue;
    if (!/^[0-9a-f]{64}$/.test(w)) throw new PrismError('EINVAL', `${file}: not a SHA-256: ${JSON.stringify(w.slice(0, 80))}`);
    out.add(w);
  }
  return out;
}

async function scan(s: Store, volumes: string[], o: { exec?: string; listed?: Set<string>; jobs: number }): Promise<ScanReport> {
  const bar = progress('scan', ' contents');
  const u = uniqueContents(s, volumes, (n) => bar.update(0, 1, `${n} files walked`));
  const report: ScanReport = { volumes: volumes.length, files: u.files, bytes: u.bytes, uniqueContents: u.contents.length, bytesScanned: 0, flagged: [], errors: [] };
  const tmp = o.exec?.includes('{}') ? fs.mkdtempSync(path.join(os.tmpdir(), 'prism-scan-')) : undefined;
  let next = 0, done = 0;
  const worker = async () => {
    while (next < u.contents.length) {
      const c = u.contents[next++]!;
      try {
        const why: string[] = [];
        let sha: string | undefined;
        if (o.listed) {
          const h = crypto.createHash('sha256');
          for (const piece of contentPieces(s, c)) h.update(piece);
          sha = h.digest('hex');
          if (o.listed.has(sha)) why.push('SHA-256 listed');
        }
        if (o.exec && await runScanner(s, c, o.exec, tmp)) why.push('flagged by --exec');
        report.bytesScanned += c.size;
        if (why.length) report.flagged.push({ size: c.size, sha256: sha, why: why.join(', '), holders: c.holders });
      } catch (e) {
        report.errors.push({ holders: c.holders, error: (e as Error).message });
      }
      bar.update(++done, u.contents.length);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(o.jobs, Math.max(u.contents.length, 1)) }, worker));
  } finally {
    bar.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }
  return report;
}

/** Runs the scanner on one content: true when it flags it (exit 1); throws when it fails otherwise. */
async function runScanner(s: Store, c: UniqueContent, cmd: string, tmp: string | undefined): Promise<boolean> {
  let file: string | undefined;
  if (tmp) {
    file = path.join(tmp, c.id.slice(0, 32));
    const fd = fs.openSync(file, 'w', 0o600);
    try { for (const piece of contentPieces(s, c)) fs.writeSync(fd, piece); } finally { fs.closeSync(fd); }
  }
  const child = spawn('sh', ['-c', file ? cmd.replaceAll('{}', `'${file}'`) : cmd], { stdio: [file ? 'ignore' : 'pipe', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-500); });
  const exited = new Promise<number | null>((resolve, reject) => { child.once('error', reject); child.once('close', (code) => resolve(code)); });
  try {
    if (!file) {
      // a scanner that stops reading early (it has seen enough) is not an error
      child.stdin!.on('error', () => undefined);
      for (const piece of contentPieces(s, c)) {
        if (child.stdin!.destroyed) break;
        if (!child.stdin!.write(piece)) await new Promise((r) => { child.stdin!.once('drain', r); child.stdin!.once('close', r); });
      }
      child.stdin!.end();
    }
    const code = await exited;
    if (code === 0) return false;
    if (code === 1) return true;
    throw new Error(`the scanner exited with ${code}${err.trim() ? `: ${err.trim().split('\n').pop()}` : ''}`);
  } finally {
    if (file) fs.rmSync(file, { force: true });
  }
}
