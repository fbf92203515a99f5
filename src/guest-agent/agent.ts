// What `prism agent mount` runs: connect to the host, attach the volume, mount it with FUSE, serve
// until unmounted. SIGTERM/SIGINT unmount (lazily if the mount is busy, serving until it is released).
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { PrismError, fromName, fromNodeError } from '../errors.js';
import { log } from '../log.js';
import { connectTcp } from '../vrpc/client.js';
import * as native from '../native/mount.js';
import { mountAndServe } from './fuse/session.js';
import { HostLink, type Dial } from './host-link.js';
import { barHolding, ivshmemBars } from './pci.js';
import { isDeviceMemory } from '../native/memory.js';
import { PID_OFFSET, lockAsAgent } from '../ring/index.js';
import { pidWord } from '../vrpc/shm-region.js';
import type { IoThreadData, TransportMessage } from './io-thread.js';
import { hasDoorbell } from './pci-doorbell.js';
import { VrpcFs } from './vrpc-fs.js';
import { AgentCounters } from './counters.js';
import { serveStats } from './stats.js';
import { MAX_LEASE_MS } from '../metadata-share/table.js';

const DEFAULT_TIMEOUT_MS = 60_000;
/** Kernel cache times (s) without a metadata table: how stale another VM's change may be seen. */
const CACHE_SEC = 1;
/**
 * With a table, another VM's change reaches the kernel's cache as an invalidation before that VM gets
 * its reply, so the cache may keep answers longer (docs/benchmarks.md measured 1, 10 and 0 s).
 */
const COHERENT_CACHE_SEC = 10;
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
  /** Kernel cache lifetimes (seconds; default 10 with a metadata table, 1 without). */
  entrySec?: number;
  attrSec?: number;
  /** Use the host's metadata table when there is one (shared memory only; default true). */
  meta?: boolean;
  /**
   * The kernel's writeback cache: the kernel then keeps its own size and times of files, so it is only
   * for a volume nothing else changes while it is mounted here (docs/agent.md, "Writeback cache").
   * 'auto' (the default) turns it on where the host's metadata table marks the volume as this VM's
   * alone and the kernel takes FUSE_NOTIFY_PRUNE (vrpc-fs.ts VrpcFsOptions).
   */
  writebackCache?: boolean | 'auto';
  /** Use the VM's ivshmem doorbell when it has one (shared memory only; default true: docs/doorbell.md). */
  doorbell?: boolean;
}

export interface Mounted {
  /** Settles when the volume is unmounted. */
  done: Promise<void>;
  unmount(): void;
  counters: AgentCounters;
  /** The metadata table in use, if any. */
  metaFile?: string;
  /** Whether the kernel's writeback cache is on. */
  writebackCache: boolean;
  /** How it reaches the host now (AgentStats.transport). */
  transport(): string;
}

/** Connect, attach and mount; throws (with nothing mounted) if any step fails. */
export async function mountVolume(o: AgentOptions): Promise<Mounted> {
  const mp = path.resolve(o.mountpoint);
  checkMountpoint(mp);
  const fuse = native.available();
  if (!fuse.ok) throw new PrismError('ENODEV', fuse.reason);
  const t = o.transport;
  const m = 'tcp' in t ? await mountOverTcp(o, t, mp) : await mountInIoThread(o, mp);
  setReadahead(mp, READAHEAD_KB);
  log.info({ mountpoint: mp, volume: o.volume }, 'mounted');
  return m;
}

/** Shared memory: an I/O thread connects, mounts and serves with blocking calls (io-thread.ts). */
async function mountInIoThread(o: AgentOptions, mp: string): Promise<Mounted> {
  const t = o.transport;
  const region = 'shm' in t ? t.shm : regionBar();
  const device = isDeviceMemory(region);
  // One agent per region file (a PCI BAR is one device per VM): a second is refused, naming the first.
  const lock = device ? undefined : lockAsAgent(region, (fd) => pidWord(fd, PID_OFFSET.guest, 'agent'));
  try {
    const m = await startIoThread(o, mp, region, device);
    return { ...m, done: m.done.finally(() => lock?.close()) };
  } catch (e) {
    lock?.close();
    throw e;
  }
}

async function startIoThread(o: AgentOptions, mp: string, region: string, device: boolean): Promise<Mounted> {
  const metaFile = o.meta === false ? undefined : device ? metaBar() : localMetaFile(region);
  const counters = new AgentCounters();
  const cache = metaFile ? COHERENT_CACHE_SEC : CACHE_SEC;
  const entrySec = o.entrySec ?? cache, attrSec = o.attrSec ?? cache;
  if (metaFile && Math.max(entrySec, attrSec) * 1000 > MAX_LEASE_MS) {
    throw new PrismError('EINVAL', `kernel cache times above ${MAX_LEASE_MS / 1000} s are not allowed with a metadata table (the lease an agent may announce): lower them or use --no-meta`);
  }
  const data: IoThreadData = {
    region, wait: device ? 'poll' : 'futex', vm: o.vm ?? '', volume: o.volume, mountpoint: mp,
    timeoutMs: o.timeoutMs ?? DEFAULT_TIMEOUT_MS, entrySec, attrSec, metaFile, counters: counters.buffer,
    writebackCache: o.writebackCache ?? 'auto', doorbell: o.doorbell === false ? undefined : doorbellOf(region, device),
  };
  const worker = new Worker(new URL('./io-thread.js', import.meta.url), { workerData: data });
  let finished!: () => void;
  const done = new Promise<void>((r) => { finished = r; });
  let writebackCache = false;
  let transport = 'shared memory';
  await new Promise<void>((resolve, reject) => {
    worker.on('message', (msg: { mounted?: true; writebackCache?: boolean; error?: { code: string; detail: string }; done?: true } & Partial<TransportMessage>) => {
      if (msg.transport) transport = msg.transport;
      else if (msg.mounted) {
        writebackCache = msg.writebackCache === true;
        resolve();
      } else if (msg.error) reject(fromName(msg.error.code, msg.error.detail));
      else if (msg.done) finished();
    });
    worker.once('error', (e) => { reject(e); finished(); });
    worker.once('exit', () => { reject(new PrismError('EIO', 'the I/O thread stopped before mounting')); finished(); });
  });
  return { done: done.then(() => worker.terminate()).then(() => undefined), unmount: () => unmount(mp, 'busy-lazy'), counters, metaFile, writebackCache, transport: () => transport };
}

/** Where the VM's doorbell is: the PCI device holding the region, or the host's ivshmem server beside a region file. */
function doorbellOf(region: string, device: boolean): IoThreadData['doorbell'] {
  if (device) {
    const dir = path.dirname(region);
    return hasDoorbell(dir) ? { device: dir } : undefined;
  }
  const socket = `${region}.ivshmem`;
  return fs.existsSync(socket) ? { socket } : undefined;
}

/** TCP: the event loop serves FUSE requests and calls the host asynchronously (HostLink). */
async function mountOverTcp(o: AgentOptions, t: { tcp: string; tokenFile: string }, mp: string): Promise<Mounted> {
  const link = await HostLink.open(dialer(o, t), { timeoutMs: o.timeoutMs ?? DEFAULT_TIMEOUT_MS });
  let vfs: VrpcFs;
  try {
    vfs = await VrpcFs.attach(link, o.volume, { writebackCache: o.writebackCache ?? 'auto' });
  } catch (e) {
    link.close();
    throw e;
  }
  let m;
  try {
    m = mountAndServe(mp, vfs, {
      fsname: `prism:${o.volume}`, entrySec: o.entrySec ?? CACHE_SEC, attrSec: o.attrSec ?? CACHE_SEC, writebackCache: vfs.writebackCache,
    });
  } catch (e) {
    vfs.close();
    link.close();
    throw new PrismError('EIO', `cannot mount ${mp}: ${(e as Error).message}`);
  }
  const done = m.done.finally(() => { vfs.close(); link.close(); });
  return { done, unmount: () => unmount(mp, 'busy-lazy'), counters: vfs.counters, writebackCache: vfs.writebackCache, transport: () => 'tcp' };
}

/**
 * Unmount. 'busy-lazy' detaches a busy mount at once and lets the kernel finish with open files
 * (the agent serves on until then); 'strict' fails with EBUSY instead; 'lazy' always detaches.
 */
export function unmount(mountpoint: string, how: 'strict' | 'lazy' | 'busy-lazy' = 'strict'): void {
  try {
    native.umount(mountpoint, how === 'lazy');
  } catch (e) {
    const { code, detail } = fromNodeError(e);
    if (code === 'EBUSY') {
      if (how === 'busy-lazy') {
        log.warn({ mountpoint }, 'mount is busy: detaching it lazily');
        native.umount(mountpoint, true);
        return;
      }
      throw new PrismError('EBUSY', `${mountpoint} is busy (files are open there); --lazy detaches it now`);
    }
    if (code === 'EINVAL') throw new PrismError('EINVAL', `${mountpoint} is not a mount point`);
    if (code === 'ENOENT') throw new PrismError('ENOENT', `${mountpoint} does not exist`);
    throw new PrismError('EIO', `cannot unmount ${mountpoint}: ${detail}`);
  }
}

/** Run in the foreground until unmounted (by `prism agent umount`, umount(8) or a signal). */
export async function runAgent(o: AgentOptions, onReady: () => void = () => {}): Promise<void> {
  const m = await mountVolume(o);
  const closeStats = serveStats(o.mountpoint, () => ({
    mountpoint: path.resolve(o.mountpoint), volume: o.volume, metaTable: m.metaFile ?? null,
    writebackCache: m.writebackCache, transport: m.transport(), counters: m.counters.snapshot(),
  }));
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
    closeStats();
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

/** How to (re)connect over TCP: each call dials the host once. */
function dialer(o: AgentOptions, t: { tcp: string; tokenFile: string }): Dial {
  const opts = { timeoutMs: o.timeoutMs ?? DEFAULT_TIMEOUT_MS, handshakeMs: 5000 };
  let token: string;
  try {
    token = fs.readFileSync(t.tokenFile, 'utf8').trim();
  } catch (e) {
    throw fromNodeError(e, `cannot read the token file ${t.tokenFile}`);
  }
  const vm = o.vm ?? path.basename(t.tokenFile).replace(/\.token$/, '');
  return () => connectTcp(t.tcp, vm, token, opts);
}

/** The host's table next to a region file (prism-NAME -> prism-NAME-meta), if it shares one. */
function localMetaFile(region: string): string | undefined {
  const file = `${region}-meta`;
  return fs.existsSync(file) ? file : undefined;
}

/** `--pci auto`: the ivshmem device holding the VRPC region. */
function regionBar(): string {
  const bars = ivshmemBars();
  if (bars.length === 0) throw new PrismError('ENODEV', 'no ivshmem device (PCI 1af4:1110): start the VM with the options `prism qemu-args` prints');
  const bar = barHolding('region', bars);
  if (!bar) throw new PrismError('ENODEV', `no ivshmem device holds a Prism region (${bars.join(', ')}): is the host serving this VM?`);
  return bar;
}

/** `--pci auto`: the ivshmem device holding the metadata table, if the VM has one. */
function metaBar(): string | undefined {
  return barHolding('meta', ivshmemBars());
}
