// The agent's I/O thread for shared memory: it connects, attaches the volume, mounts it and serves
// FUSE requests in its own event loop, making blocking VRPC calls (SyncLink). Nothing else runs on
// this loop, so a call blocks nothing that could have run; the main thread only handles signals.
// With a metadata table it also runs the cache notifier thread (cache-notifier.ts), stopped before the
// /dev/fuse descriptor it writes to is closed. Messages to the main thread: { mounted } once serving
// (and the notifier listening), { error: { code, detail } } if it could not mount, { done } when
// unmounted.
import { MessageChannel, Worker, parentPort, workerData } from 'node:worker_threads';
import type { DropReply, DropRequest, ForgetReply, ForgetRequest, NotifierData } from './cache-notifier.js';
import { PrismError, fromNodeError } from '../errors.js';
import { SyncShmClient } from '../vrpc/shm-sync-client.js';
import { connectIvshmem, type PeerDoorbell } from '../vrpc/ivshmem-peer.js';
import { log } from '../log.js';
import { openPciDoorbell } from './pci-doorbell.js';
import { attachMetaTable } from '../metadata-share/file.js';
import { LOG_HEAD_OFFSET } from '../metadata-share/table.js';
import { futexWake } from '../native/futex.js';
import { AgentCounters } from './counters.js';
import { umount } from '../native/mount.js';
import { kernelRelease, kernelTakesPrune, kernelWritesBackWithoutFlush } from './fuse/protocol.js';
import { mountAndServe } from './fuse/session.js';
import { SyncLink } from './sync-link.js';
import { VrpcFs } from './vrpc-fs.js';

export interface IoThreadData {
  region: string;
  /** futex: the host shares our kernel and wakes us; poll: a VM guest (the region is a PCI BAR), nobody can wake us. */
  wait: 'futex' | 'poll';
  vm: string;
  volume: string;
  mountpoint: string;
  timeoutMs: number;
  entrySec: number;
  attrSec: number;
  /** The VM's metadata table (read-only), if the host shares one. */
  metaFile?: string;
  counters: SharedArrayBuffer;
  /** The kernel's writeback cache (agent.ts, AgentOptions.writebackCache). */
  writebackCache: boolean | 'auto';
  /** The VM's ivshmem doorbell: its server's socket (an agent on the host's kernel) or its PCI device's sysfs directory (a guest). */
  doorbell?: { socket: string } | { device: string };
}

/** How the I/O thread tells the main thread which way it waits for replies (after each connection). */
export interface TransportMessage { transport: string }

const d = workerData as IoThreadData;
/** How long a close reporting a failed posted create waits for the notifier to make the kernel forget the name. */
const FORGET_WAIT_MS = 1000;
const port = parentPort!;

async function main(): Promise<void> {
  let link: SyncLink;
  let vfs: VrpcFs;
  let meta: ReturnType<typeof attachMetaTable> | undefined;
  // Names of failed posted creates, for the notifier thread to make the kernel forget (once it runs).
  let unmade: ((dir: bigint, name: Buffer) => Promise<void>) | undefined;
  try {
    const counters = new AgentCounters(d.counters);
    link = SyncLink.open((handshakeMs) => {
      const c = new SyncShmClient(d.region, d.vm, d.wait, d.timeoutMs, handshakeMs, () => openDoorbell(counters));
      counters.onMeta = (hit) => c.countMetaAnswer(hit);
      port.postMessage({ transport: `shared memory, ${c.waitsWith}` } satisfies TransportMessage);
      return c;
    }, d.timeoutMs);
    try {
      meta = d.metaFile ? attachMetaTable(d.metaFile) : undefined;
      vfs = await VrpcFs.attach(link, d.volume, {
        shared: meta?.table, counters, writebackCache: d.writebackCache,
        unmade: (dir, name) => unmade?.(dir, name) ?? Promise.resolve(),
        kernelPrunes: kernelTakesPrune(kernelRelease()), kernelWritesBackAtClose: kernelWritesBackWithoutFlush(kernelRelease()),
      });
    } catch (e) {
      link.close();
      meta?.close();
      throw e;
    }
  } catch (e) {
    port.postMessage({ error: describe(e) });
    return;
  }
  let m;
  let notifier: Notifier | undefined;
  try {
    m = mountAndServe(d.mountpoint, vfs, {
      fsname: `prism:${d.volume}`, entrySec: d.entrySec, attrSec: d.attrSec,
      // Listings and file pages stay in the kernel only where the notifier below tells it of other VMs' changes.
      keepCaches: d.metaFile !== undefined, writebackCache: vfs.writebackCache,
      beforeClose: () => notifier?.stop() ?? Promise.resolve(),
    });
  } catch (e) {
    vfs.close();
    link.close();
    meta?.close();
    port.postMessage({ error: { code: 'EIO', detail: `cannot mount ${d.mountpoint}: ${(e as Error).message}` } });
    return;
  }
  if (d.metaFile) {
    // The kernel may cache answers for the longer of the two times: that is the lease the host honours.
    const leaseMs = Math.max(d.entrySec, d.attrSec) * 1000;
    // The notifier asks here, on a port of its own, what the kernel may cache when it must drop it all.
    const { port1, port2 } = new MessageChannel();
    const control = new SharedArrayBuffer(8);
    const forgetting = new Map<number, () => void>();
    let forgets = 0;
    port1.on('message', (req: DropRequest | ForgetReply) => {
      if ('forgotten' in req) { forgetting.get(req.forgotten)?.(); return; }
      port1.postMessage({ drop: req.drop, ...vfs.kernelCacheKeys() } satisfies DropReply);
      const c = new Int32Array(control);
      Atomics.store(c, 1, req.drop);
      Atomics.notify(c, 1);
    });
    port1.unref();
    const table = meta;
    unmade = (dir, name) => new Promise<void>((resolve) => {
      const seq = ++forgets;
      // Not for ever: a notifier that stopped (unmounting) answers nothing.
      const timer = setTimeout(done, FORGET_WAIT_MS);
      function done(): void { clearTimeout(timer); forgetting.delete(seq); resolve(); }
      forgetting.set(seq, done);
      port1.postMessage({ forget: [[dir, name]], seq } satisfies ForgetRequest);
      // It sleeps on the log's head (on one machine; in a VM it looks every millisecond): a spurious wake-up is harmless.
      if (d.wait === 'futex' && table) futexWake(table.buffer, LOG_HEAD_OFFSET);
    });
    try {
      notifier = await startNotifier({
        metaFile: d.metaFile, regionFile: d.region, fuseFd: m.fd, volumeId: vfs.volumeId, rootIno: vfs.rootIno,
        leaseMs, wait: d.wait, counters: d.counters, control, port: port2, writebackCache: vfs.writebackCache,
      });
    } catch (e) {
      // Without it the kernel's cache could go stale unseen: no mount rather than an incoherent one.
      port.postMessage({ error: { code: 'EIO', detail: `cannot follow the metadata table's changes: ${(e as Error).message}` } });
      umount(d.mountpoint, true);
      await m.done.catch(() => {});
      vfs.close();
      link.close();
      meta?.close();
      return;
    }
  }
  port.postMessage({ mounted: true, writebackCache: vfs.writebackCache });
  try {
    await m.done;
    // Closes no longer wait for what they posted (docs/agent.md): the unmount does, so what the VM
    // wrote is on the host once it returns.
    try { link.settle(); } catch (e) { log.warn({ err: e }, 'unmounted with posted changes unanswered'); }
  } finally {
    vfs.close();
    link.close();
    meta?.close();
    port.postMessage({ done: true });
  }
}

interface Notifier { stop(): Promise<void> }

/**
 * The VM's doorbell for a new connection (a restarted host serves a new one), counted; none when
 * there is none or it cannot be opened (then the client polls or sleeps on a futex, as before).
 */
function openDoorbell(counters: AgentCounters): PeerDoorbell | undefined {
  const where = d.doorbell;
  if (!where) return undefined;
  let bell: PeerDoorbell;
  try {
    bell = 'socket' in where ? connectIvshmem(where.socket) : openPciDoorbell(where.device);
  } catch (e) {
    log.warn({ doorbell: where, err: (e as Error).message }, 'no doorbell: waiting for replies without it');
    return undefined;
  }
  return {
    kind: bell.kind,
    connectedNow: bell.connectedNow,
    ring() { counters.add('doorbellRings'); bell.ring(); },
    wait(ms) { const rang = bell.wait(ms); if (rang) counters.add('doorbellInterrupts'); return rang; },
    close() { bell.close(); },
  };
}

/** Start the cache notifier thread (cache-notifier.ts); resolves once it listens. */
function startNotifier(data: NotifierData): Promise<Notifier> {
  const w = new Worker(new URL('./cache-notifier.js', import.meta.url), { workerData: data, transferList: [data.port] });
  const exited = new Promise<void>((r) => w.once('exit', () => r()));
  const stop = async () => {
    const control = new Int32Array(data.control);
    Atomics.store(control, 0, 1);
    Atomics.notify(control, 0);
    await exited;
  };
  return new Promise((resolve, reject) => {
    w.once('message', () => resolve({ stop }));
    w.once('error', reject);
    void exited.then(() => reject(new PrismError('EIO', 'the cache notifier stopped before it started')));
  });
}

function describe(e: unknown): { code: string; detail: string } {
  const p = fromNodeError(e);
  return { code: p.code, detail: p.detail };
}

void main();
