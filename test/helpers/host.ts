// Start `prism host serve` as a real child process and wait until it listens.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const prismBin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/prism.js');

export function prism(store: string, args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [prismBin, '--store', store, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A time in ns as `prism stat --json` prints it (ISO 8601, nine digits of fraction). */
export function isoNs(ns: bigint): string {
  const sec = ns / 1_000_000_000n;
  return `${new Date(Number(sec) * 1000).toISOString().slice(0, 19)}.${String(ns % 1_000_000_000n).padStart(9, '0')}Z`;
}

export interface RunningHost { child: ChildProcess; port: number; out(): string; stop(): Promise<number | null>; stderr(): string }

/** Start the host with a TCP listener on a free port plus `args`; resolves once it prints "ready". */
export function startHost(store: string, args: string[]): Promise<RunningHost> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [prismBin, '--store', store, 'host', 'serve', '--tcp', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stderr!.on('data', (d) => { err += d; });
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on [^:]+:(\d+)/.exec(out);
      if (m && /^ready$/m.test(out)) {
        resolve({
          child, port: Number(m[1]), stderr: () => err, out: () => out,
          stop: () => new Promise((res) => {
            if (child.exitCode !== null || child.signalCode !== null) { res(child.exitCode); return; }
            child.once('exit', (code) => res(code));
            child.kill('SIGTERM');
          }),
        });
      }
    });
    child.once('exit', (code) => reject(new Error(`host exited with ${code}: ${err}`)));
  });
}

/** Resident memory of a process in MiB (from /proc; Linux only). */
export function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}
