// The agent's I/O thread for shared memory: it connects, attaches the volume, mounts it and serves
// FUSE requests in its own event loop, making blocking VRPC calls (SyncLink). Nothing else runs on
// this loop, so a call blocks nothing that could have run; the main thread only handles signals.
// Messages to the main thread: { mounted } once serving, { error: { code, message } } if it could not
// mount, { done } when unmounted.
import { parentPort, workerData } from 'node:worker_threads';
import { PrismError } from '../errors.js';
import { SyncShmClient } from '../vrpc/shm.js';
import { mountAndServe } from './fuse/session.js';
import { SyncLink } from './sync-link.js';
import { VrpcFs } from './vrpc-fs.js';

export interface IoThreadData {
  region: string;
  /** futex: the host shares our kernel and wakes us; poll: a VM guest, nobody can wake us. */
  wait: 'futex' | 'poll';
  vm: string;
  volume: string;
  mountpoint: string;
  timeoutMs: number;
  entrySec?: number;
  attrSec?: number;
}

const d = workerData as IoThreadData;
const port = parentPort!;

async function main(): Promise<void> {
  let link: SyncLink;
  let vfs: VrpcFs;
  try {
    link = SyncLink.open((handshakeMs) => new SyncShmClient(d.region, d.vm, d.wait, d.timeoutMs, handshakeMs), d.timeoutMs);
    try {
      vfs = await VrpcFs.attach(link, d.volume);
    } catch (e) {
      link.close();
      throw e;
    }
  } catch (e) {
    port.postMessage({ error: describe(e) });
    return;
  }
  let m;
  try {
    m = mountAndServe(d.mountpoint, vfs, { fsname: `prism:${d.volume}`, entrySec: d.entrySec, attrSec: d.attrSec });
  } catch (e) {
    link.close();
    port.postMessage({ error: { code: 'EIO', message: `cannot mount ${d.mountpoint}: ${(e as Error).message}` } });
    return;
  }
  port.postMessage({ mounted: true });
  try {
    await m.done;
  } finally {
    link.close();
    port.postMessage({ done: true });
  }
}

function describe(e: unknown): { code: string; message: string } {
  return e instanceof PrismError ? { code: e.code, message: e.message.replace(/^[A-Z0-9]+: /, '') } : { code: 'EIO', message: String((e as Error).message ?? e) };
}

void main();
