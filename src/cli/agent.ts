// `prism agent mount|umount`: the guest side. `mount` runs as a daemon unless --foreground: the parent
// waits until the volume is mounted (or mounting failed) and reports it, so a failure never leaves a
// half-made mount behind a zero exit status.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { PrismError, type PosixCode } from '../errors.js';
import type { AgentOptions, Transport } from '../guest-agent/agent.js';

/** The daemon tells its parent on this fd: "ok" once mounted, or "error CODE message". */
const NOTIFY_ENV = 'PRISM_AGENT_NOTIFY_FD';

interface MountFlags {
  shm?: string; pci?: string; tcp?: string; tokenFile?: string; vm?: string; volume: string;
  timeout: string; attrTimeout: string; entryTimeout: string; foreground?: boolean; log?: string;
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
    .option('--attr-timeout <seconds>', 'how long the kernel caches attributes', '1')
    .option('--entry-timeout <seconds>', 'how long the kernel caches names', '1')
    .option('-f, --foreground', 'stay in the foreground')
    .option('--log <file>', 'where the daemon writes its log (default: nowhere)')
    .action(async (mountpoint: string, o: MountFlags) => {
      const opts: AgentOptions = {
        transport: transport(o), vm: o.vm, volume: o.volume, mountpoint: path.resolve(mountpoint),
        timeoutMs: seconds(o.timeout, '--timeout') * 1000,
        attrSec: seconds(o.attrTimeout, '--attr-timeout'), entrySec: seconds(o.entryTimeout, '--entry-timeout'),
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
        tell(e instanceof PrismError ? `error ${e.code} ${e.message.replace(/^[A-Z0-9]+: /, '')}` : `error EIO ${(e as Error).message}`);
        throw e;
      }
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
      reject(m ? new PrismError(m[1] as PosixCode, m[2]!) : new PrismError('EIO', `the agent exited before mounting${logFile ? ` (see ${logFile})` : ''}`));
    });
  });
}
