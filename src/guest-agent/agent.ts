// What `prism agent mount` runs: connect to the host, attach the volume, mount it with FUSE, serve
// until unmounted. SIGTERM/SIGINT unmount (lazily if the mount is busy, serving until it is released).
import fs from 'node:fs';
import path from 'node:path';
import { PrismError } from '../errors.js';
import { log } from '../log.js';
import { connectTcp } from '../vrpc/client.js';
import { connectShm, openRegion } from '../vrpc/shm.js';
import * as native from './fuse/native.js';
import { mountAndServe } from './fuse/session.js';
import { HostLink, type Dial } from './host-link.js';
import { ivshmemBars } from './pci.js';
import { VrpcFs } from './vrpc-fs.js';

const DEFAULT_TIMEOUT_MS = 60_000;
const READAHEAD_KB = 1024;

export type Transport = { shm: string } | { pci: 'auto' } | { tcp: string; tokenFile: string };

export interface AgentOptions {
  transport: Transport;
  /** The VM's name (over TCP: default from the token file's name; over shared memory: not needed). */
  vm?: string;
  volume: string;
  mountpoint: string;
  /** How long a request waits for an absent host before it fails with EIO. */
  timeoutMs?: number;
  /** Kernel cache lifetimes (seconds). */
  entrySec?: number;
  attrSec?: number;
}

export interface Mounted {
  fs: VrpcFs;
  link: HostLink;
  /** Settles when the volume is unmounted. */
  done: Promise<void>;
  unmount(): void;
}

/** Connect, attach and mount; throws (with nothing mounted) if any step fails. */
export async function mountVolume(o: AgentOptions): Promise<Mounted> {
  const mp = path.resolve(o.mountpoint);
  checkMountpoint(mp);
  const fuse = native.available();
  if (!fuse.ok) throw new PrismError('ENODEV', fuse.reason);
  if (process.getuid?.() !== 0) throw new PrismError('EPERM', 'mounting needs root (fusermount3 mounts are not supported yet)');
  const link = await HostLink.open(dialer(o), { timeoutMs: o.timeoutMs ?? DEFAULT_TIMEOUT_MS });
  let vfs: VrpcFs;
  try {
    vfs = await VrpcFs.attach(link, o.volume);
  } catch (e) {
    link.close();
    throw e;
  }
  let m;
  try {
    m = mountAndServe(mp, vfs, { fsname: `prism:${o.volume}`, entrySec: o.entrySec, attrSec: o.attrSec });
  } catch (e) {
    link.close();
    throw new PrismError('EIO', `cannot mount ${mp}: ${(e as Error).message}`);
  }
  const done = m.done.finally(() => link.close());
  setReadahead(mp, READAHEAD_KB);
  log.info({ mountpoint: mp, volume: o.volume }, 'mounted');
  return { fs: vfs, link, done, unmount: () => unmount(mp, 'busy-lazy') };
}

/**
 * Unmount. 'busy-lazy' detaches a busy mount at once and lets the kernel finish with open files
 * (the agent serves on until then); 'strict' fails with EBUSY instead; 'lazy' always detaches.
 */
export function unmount(mountpoint: string, how: 'strict' | 'lazy' | 'busy-lazy' = 'strict'): void {
  try {
    native.umount(mountpoint, how === 'lazy');
  } catch (e) {
    const msg = (e as Error).message;
    const errno = (e as { errno?: number }).errno;
    if (errno === 16 /* EBUSY */) {
      if (how === 'busy-lazy') {
        log.warn({ mountpoint }, 'mount is busy: detaching it lazily');
        native.umount(mountpoint, true);
        return;
      }
      throw new PrismError('EBUSY', `${mountpoint} is busy (files are open there); --lazy detaches it now`);
    }
    if (errno === 22) throw new PrismError('EINVAL', `${mountpoint} is not a mount point`);
    if (errno === 2) throw new PrismError('ENOENT', `${mountpoint} does not exist`);
    throw new PrismError('EIO', `cannot unmount ${mountpoint}: ${msg}`);
  }
}

/** Run in the foreground until unmounted (by `prism agent umount`, umount(8) or a signal). */
export async function runAgent(o: AgentOptions, onReady: () => void = () => {}): Promise<void> {
  const m = await mountVolume(o);
  const stop = (sig: string) => {
    log.info({ sig }, 'unmounting');
    try { m.unmount(); } catch (e) { log.error({ err: (e as Error).message }, 'unmount failed'); }
  };
  const onTerm = () => stop('SIGTERM');
  const onInt = () => stop('SIGINT');
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onInt);
  onReady();
  try {
    await m.done;
  } finally {
    process.off('SIGTERM', onTerm);
    process.off('SIGINT', onInt);
  }
}

/**
 * FUSE mounts start with the default 128 KiB readahead, whatever max_readahead says; sequential reads
 * need larger requests to amortize a round trip. Found via mountinfo: a stat of the mountpoint would
 * wait on this very process.
 */
function setReadahead(mp: string, kb: number): void {
  try {
    const line = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === mp);
    const dev = line?.split(' ')[2];
    if (dev) fs.writeFileSync(`/sys/class/bdi/${dev}/read_ahead_kb`, String(kb));
  } catch (e) {
    log.debug({ err: (e as Error).message }, 'cannot set readahead');
  }
}

function checkMountpoint(mp: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(mp);
  } catch {
    throw new PrismError('ENOENT', `mountpoint ${mp} does not exist`);
  }
  if (!st.isDirectory()) throw new PrismError('ENOTDIR', `mountpoint ${mp} is not a directory`);
}

/** How to (re)connect: each call dials the host once. */
function dialer(o: AgentOptions): Dial {
  const t = o.transport;
  const opts = { timeoutMs: o.timeoutMs ?? DEFAULT_TIMEOUT_MS, handshakeMs: 5000 };
  if ('tcp' in t) {
    let token: string;
    try {
      token = fs.readFileSync(t.tokenFile, 'utf8').trim();
    } catch (e) {
      throw new PrismError('ENOENT', `cannot read the token file ${t.tokenFile}: ${(e as Error).message}`);
    }
    const vm = o.vm ?? path.basename(t.tokenFile).replace(/\.token$/, '');
    return () => connectTcp(t.tcp, vm, token, opts);
  }
  const file = 'shm' in t ? t.shm : regionBar();
  return () => connectShm(file, o.vm ?? '', { ...opts, file });
}

/** `--pci auto`: the first ivshmem BAR that holds a VRPC region. */
function regionBar(): string {
  const bars = ivshmemBars();
  if (bars.length === 0) throw new PrismError('ENODEV', 'no ivshmem device (PCI 1af4:1110): start the VM with the options `prism qemu-args` prints');
  for (const bar of bars) {
    try {
      openRegion(bar, false).close();
      return bar;
    } catch (e) {
      log.debug({ bar, err: (e as Error).message }, 'not a VRPC region');
    }
  }
  throw new PrismError('ENODEV', `no ivshmem device holds a Prism region (${bars.join(', ')}): is the host serving this VM?`);
}
