// `prism agent mount|umount`: the guest side. `mount` runs as a daemon unless --foreground: the parent
// waits until the volume is mounted (or mounting failed) and reports it, so a failure never leaves a
// half-made mount behind a zero exit status.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { PrismError, fromName, fromNodeError } from '../errors.js';
import type { AgentOptions, Transport } from '../guest-agent/agent.js';

/** The daemon tells its parent on this fd: "ok" once mounted, or "error CODE message". */
const NOTIFY_ENV = 'PRISM_AGENT_NOTIFY_FD';

interface MountFlags {
  shm?: string; pci?: string; tcp?: string; tokenFile?: string; vm?: string; volume: string;
  timeout: string; attrTimeout?: string; entryTimeout?: string; foreground?: boolean; log?: string; meta: boolean;
  writebackCache?: boolean; doorbell: boolean;
}

function seconds(v: string, what: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new PrismError('EINVAL', `${what} must be a number of seconds, got ${JSON.stringify(v)}`);
  return n;
}

function transport(o: MountFlags): Transport {
  const given = [o.shm, o.pci, o.tcp].filter((x) => x !== undefined).length;
  if (given !== 1) throw new PrismError('EINVAL', 'give exactly one of --shm PATH, --pci auto, --tcp HOST:PORT');
  if (o.shm !== undefined) return { shm: o.shm };
  if (o.pci !== undefined) {
    if (o.pci !== 'auto') throw new PrismError('EINVAL', '--pci takes "auto"');
    return { pci: 'auto' };
  }
  if (!o.tokenFile) throw new PrismError('EINVAL', '--tcp needs --token-file (the host prints where it is)');
  return { tcp: o.tcp!, tokenFile: o.tokenFile };
}

export function agentCommand(p: Command, print: (s: string) => void): void {
  const agent = p.command('agent').description('the guest agent: mount a volume served by the host');
  agent.command('mount <mountpoint>').description('mount a volume with FUSE (as a daemon unless --foreground)')
    .requiredOption('--volume <name>', 'the volume to mount')
    .option('--shm <path>', 'the shared-memory region (a /dev/shm file or a PCI BAR)')
    .option('--pci <auto>', 'find the ivshmem device in /sys/bus/pci/devices (inside a QEMU guest)')
    .option('--tcp <host:port>', 'the host over TCP (unix:/path for a Unix socket)')
    .option('--token-file <file>', "the VM's token (with --tcp; the VM name defaults to the file name)")
    .option('--vm <name>', "the VM's name (needed over TCP only)")
    .option('--timeout <seconds>', 'how long a request waits for an absent host before failing with EIO', '60')
    .option('--attr-timeout <seconds>', 'how long the kernel caches attributes (default 10 with a metadata table, else 1)')
    .option('--entry-timeout <seconds>', 'how long the kernel caches names (default 10 with a metadata table, else 1)')
    .option('--no-meta', "do not use the host's metadata table (every LOOKUP and GETATTR is an RPC)")
    .option('--no-doorbell', "do not use the VM's ivshmem doorbell (wait for replies by polling, or a futex on the host's kernel)")
    .option('--writeback-cache', 'let the kernel cache writes and send them merged, even on a volume others may change (default: only where the host marks the volume as this VM\'s alone: docs/agent.md)')
    .option('--no-writeback-cache', 'never let the kernel cache writes (each write() reaches the agent)')
    .option('-f, --foreground', 'stay in the foreground')
    .option('--log <file>', 'where the daemon writes its log (default: nowhere)')
    .action(async (mountpoint: string, o: MountFlags) => {
      const opts: AgentOptions = {
        transport: transport(o), vm: o.vm, volume: o.volume, mountpoint: path.resolve(mountpoint),
        timeoutMs: seconds(o.timeout, '--timeout') * 1000,
        attrSec: o.attrTimeout === undefined ? undefined : seconds(o.attrTimeout, '--attr-timeout'),
        entrySec: o.entryTimeout === undefined ? undefined : seconds(o.entryTimeout, '--entry-timeout'), meta: o.meta,
        writebackCache: o.writebackCache ?? 'auto', doorbell: o.doorbell,
      };
      if (!o.foreground) {
        const pid = await daemonize(o.log);
        print(`mounted ${o.volume} on ${opts.mountpoint} (agent pid ${pid})`);
        return;
      }
      const { runAgent } = await import('../guest-agent/agent.js');
      const notify = process.env[NOTIFY_ENV] ? Number(process.env[NOTIFY_ENV]) : undefined;
      let told = false;
      const tell = (line: string) => {
        if (notify === undefined || told) return;
        told = true;
        try { fs.writeSync(notify, `${line}\n`); fs.closeSync(notify); } catch { /* the parent is gone */ }
      };
      try {
        await runAgent(opts, () => tell('ok'));
      } catch (e) {
        const p = fromNodeError(e);
        tell(`error ${p.code} ${p.detail}`);
        throw e;
      }
    });

  agent.command('stats <mountpoint>').description("an agent's counters: LOOKUPs and GETATTRs answered locally, misses, RPCs sent")
    .option('--json', 'machine-readable output')
    .action(async (mountpoint: string, o: { json?: boolean }) => {
      const { queryStats } = await import('../guest-agent/stats.js');
      const s = await queryStats(mountpoint);
      if (o.json) { print(JSON.stringify(s, null, 2)); return; }
      const c = s.counters;
      const rows: Array<[string, string]> = [
        ['volume', s.volume], ['metadata table', s.metaTable ?? 'none (every LOOKUP and GETATTR is an RPC)'],
        ['transport', s.transport],
        ['writeback cache', s.writebackCache ? 'on' : 'off'],
        ...(c.doorbellRings + c.doorbellInterrupts > 0 ? [['doorbell rings / interrupts', `${c.doorbellRings} / ${c.doorbellInterrupts}`] as [string, string]] : []),
        ['lookups local / misses', `${c.lookupsLocal} / ${c.lookupMisses}`],
        ['getattrs local / misses', `${c.getattrsLocal} / ${c.getattrMisses}`],
        ['xattr requests local', String(c.xattrsLocal)],
        ['kernel cache invalidations', String(c.invalidations)],
        ...(c.prunes > 0 ? [['nodes pruned (writeback cache)', String(c.prunes)] as [string, string]] : []),
        ['metadata changes posted', String(c.postedMeta)],
        ['waits for posted replies', String(c.settles)],
        ['FLUSH requests (closes)', String(c.flushes)],
        ['RPCs sent', `${c.rpcs}${Object.keys(c.rpcsByProc).length ? ` (${Object.entries(c.rpcsByProc).map(([k, v]) => `${k} ${v}`).join(', ')})` : ''}`],
      ];
      for (const [k, v] of rows) print(`${k.padEnd(28)}${v}`);
    });

  agent.command('umount <mountpoint>').description('unmount a volume (the agent then exits)')
    .option('--lazy', 'detach even if files are open (they keep working until closed)')
    .action(async (mountpoint: string, o: { lazy?: boolean }) => {
      const { unmount } = await import('../guest-agent/agent.js');
      unmount(path.resolve(mountpoint), o.lazy ? 'lazy' : 'strict');
    });
}

/** Start this same command again in the foreground, detached; resolve once it reports mounted. */
function daemonize(logFile?: string): Promise<number> {
  const out = fs.openSync(logFile ?? '/dev/null', 'a');
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1), '--foreground'], {
    detached: true,
    stdio: ['ignore', out, out, 'pipe'],
    env: { ...process.env, [NOTIFY_ENV]: '3' },
  });
  fs.closeSync(out);
  return new Promise((resolve, reject) => {
    let said = '';
    const pipe = child.stdio[3] as NodeJS.ReadableStream;
    pipe.setEncoding('utf8');
    pipe.on('data', (d: string) => { said += d; });
    pipe.on('end', () => {
      const line = said.split('\n')[0] ?? '';
      if (line === 'ok') {
        child.unref();
        resolve(child.pid!);
        return;
      }
      const m = /^error (\S+) (.*)$/.exec(line);
      child.once('exit', () => {});
      reject(m ? fromName(m[1], m[2]!) : new PrismError('EIO', `the agent exited before mounting${logFile ? ` (see ${logFile})` : ''}`));
    });
  });
}
