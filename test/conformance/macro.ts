// The ava macro that runs one POSIX check on a backend and on the local file system in the same test
// and compares them, and the registration of every check for a backend (one test file per backend,
// so ava runs the backends in parallel processes).
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { missingProgramsReason } from '../helpers/programs.js';
import { tmpDir } from '../helpers/tmp.js';
import { NodeFs } from './node-fs.js';
import { checks, type PosixCheck } from './posix-checks.js';
import { outcome, UMASK } from './posix-fs.js';

const runCheckJs = fileURLToPath(new URL('./run-check.js', import.meta.url));
const NOBODY = 65534;

// Every backend and the local file system make new files under the same umask.
process.umask(UMASK);

export interface Backend {
  name: string;
  /** A mount, where the kernel answers what only it can (permissions, symlinks): every check runs. */
  kernel: boolean;
  /** Set up and run the check in a fresh directory of the backend; what it gave. */
  run(check: PosixCheck): Promise<unknown>;
}

/** Outcomes as they cross a process boundary, so values from a child and from this process compare alike. */
const plain = (v: unknown): unknown => JSON.parse(JSON.stringify(v)) as unknown;

let serial = 0;

/**
 * Run a check in a fresh subdirectory of `base` on a real file system (local or a mount): setup and
 * root's part in this process, nobody's part in a child process with that uid and gid.
 */
export async function runInDir(base: string, check: PosixCheck): Promise<unknown> {
  const dir = path.join(base, `check-${serial++}`);
  fs.mkdirSync(dir);
  fs.chmodSync(dir, 0o755); // nobody must reach it
  check.setup?.(new NodeFs(dir));
  if ((check.as ?? 'root') === 'root') return plain(outcome(() => check.run(new NodeFs(dir))));
  const r = await promisify(execFile)(process.execPath, [runCheckJs, dir, check.title], { uid: NOBODY, gid: NOBODY, encoding: 'utf8' });
  return JSON.parse(r.stdout) as unknown;
}

/** Run `check` on the backend and on a local directory: errno for errno, value for value. */
export const conforms = test.macro({
  async exec(t: ExecutionContext, backend: Backend, check: PosixCheck) {
    const local = tmpDir(t, 'prism-local-');
    fs.chmodSync(local, 0o755);
    const mine = plain(await backend.run(check));
    const theirs = await runInDir(local, check);
    if ('expect' in check) t.deepEqual(theirs, check.expect, 'the local file system gives what the check expects');
    t.deepEqual(mine, theirs, `${backend.name} gives what the local file system gives`);
  },
  title: (_provided, backend: Backend, check: PosixCheck) => `${backend.name}: ${check.title}`,
});

/** Register every check the backend can answer, skipping (with the reason printed) what this machine cannot run. */
export function registerChecks(backend: Backend, skipReason?: string): void {
  const base = skipReason ?? missingProgramsReason(['python3']);
  const root = process.geteuid?.() === 0;
  let skipped = 0;
  for (const check of checks) {
    // Without a kernel in between nobody checks permissions or follows symlinks: not the store's to answer.
    if (check.kernel && !backend.kernel) continue;
    const why = base ?? (!root && (check.privileged || check.as === 'nobody') ? 'running as another user and chown need root' : undefined);
    if (why) skipped++;
    (why ? test.skip : test)(conforms, backend, check);
  }
  if (skipped) console.error(`${backend.name} conformance: ${skipped} checks skipped: ${base ?? 'running as another user and chown need root'}`);
}
