// Running the programs a benchmark sets up its targets with, and waiting for the servers it starts.
import { spawnSync, type ChildProcess } from 'node:child_process';

/** Runs a program to the end; its stdout, or an error with its stderr. */
export function sh(cmd: string, args: string[], opts: { cwd?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error || r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}`);
  return r.stdout;
}

/** Polls `ok` until it holds; fails when `child` exits first or `ms` pass. */
export async function waitFor(what: string, ok: () => boolean | Promise<boolean>, child?: ChildProcess, o: { ms?: number; everyMs?: number } = {}): Promise<void> {
  const until = Date.now() + (o.ms ?? 20_000);
  while (!(await ok())) {
    if (child && child.exitCode !== null) throw new Error(`${what}: the process exited with ${child.exitCode}`);
    if (Date.now() > until) throw new Error(`${what}: timed out`);
    await new Promise((r) => setTimeout(r, o.everyMs ?? 20));
  }
}
