// Mount a volume with `prism agent mount --foreground` as a real child process, and the checks the
// FUSE tests share.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import * as native from '../../src/native/mount.js';
import type { AgentStats } from '../../src/guest-agent/stats.js';
import { prismBin } from './host.js';

/**
 * Why FUSE mounts cannot be tested here, or undefined when they can. A missing addon is not a reason
 * to skip: it is a failure (test/native-addons.test.ts), and the mounts then fail too.
 */
export function fuseSkipReason(): string | undefined {
  if (!fs.existsSync('/dev/fuse')) return '/dev/fuse is missing';
  if (process.getuid?.() !== 0) return 'mounting needs root';
  return undefined;
}

export const mounted = native.isMounted;

export interface Agent { child: ChildProcess; mp: string; stderr(): string; umount(): Promise<void> }

/** Start an agent in the foreground (with more environment variables, if given); resolves once the mount is there. */
export async function mountAgent(store: string, args: string[], mp: string, env?: NodeJS.ProcessEnv): Promise<Agent> {
  const child = spawn(process.execPath, [prismBin, '--store', store, 'agent', 'mount', '--foreground', ...args, mp], { stdio: ['ignore', 'pipe', 'pipe'], env: env && { ...process.env, ...env } });
  let err = '';
  child.stderr!.on('data', (d) => { err += d; });
  child.stdout!.resume();
  let exited: number | null | undefined;
  child.once('exit', (c) => { exited = c; });
  const until = Date.now() + 15_000;
  while (!mounted(mp)) {
    if (exited !== undefined) throw new Error(`agent exited with ${exited} before mounting: ${err}`);
    if (Date.now() > until) { child.kill('SIGKILL'); throw new Error(`agent did not mount in 15 s: ${err}`); }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    child, mp, stderr: () => err,
    umount: async () => {
      if (exited !== undefined) { if (mounted(mp)) spawnSync('umount', ['-l', mp]); return; }
      const gone = new Promise((r) => child.once('exit', r));
      const r = spawnSync(process.execPath, [prismBin, 'agent', 'umount', mp], { encoding: 'utf8' });
      if (r.status !== 0) spawnSync('umount', ['-l', mp]);
      await gone;
    },
  };
}

/** Run a command; throws with its output if it fails. */
export function run(cmd: string, args: string[], opts: { cwd?: string; uid?: number; gid?: number; input?: string; env?: NodeJS.ProcessEnv } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}${r.error ?? ''}`);
  return r.stdout;
}

/** `prism agent stats --json` of a mount; its stats socket comes up just after the mount, so retry a while. */
export async function agentStats(a: Agent): Promise<AgentStats> {
  for (let i = 0; ; i++) {
    let r = '';
    try {
      r = run(process.execPath, [prismBin, 'agent', 'stats', a.mp, '--json']).trim();
    } catch (e) {
      if (i > 100) throw e;
    }
    if (r) return JSON.parse(r) as AgentStats;
    if (i > 100) throw new Error('no stats');
    await new Promise((res) => setTimeout(res, 50));
  }
}
