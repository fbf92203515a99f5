// A VM's VRPC region file: where it lives, its size, and mapping it: the host creates (or takes over)
// and initializes it, a guest attaches to one a host is serving. docs/shm-layout.md has the layout.
import fs from 'node:fs';
import { PrismError, fromNodeError } from '../errors.js';
import { nativeAvailable } from '../native/ivshmem.js';
import { map, unmap } from '../native/memory.js';
import { LIVE_STOPPING, LIVE_UP, PID_OFFSET, Region, fitGeometry, openServedFile, ownFile, type FileProblem } from '../ring/index.js';

/** Size of a VM's VRPC region: a power of two (QEMU's ivshmem wants one), room for 1 MiB replies. */
export const REGION_SIZE = 16 * 1024 * 1024;

export function shmPath(vm: string, dir = '/dev/shm'): string {
  return `${dir}/prism-${vm}`;
}

/** The Unix socket of a VM's ivshmem server (its `ivshmem-doorbell` device connects there), beside its region. */
export function ivshmemPath(vm: string, dir = '/dev/shm'): string {
  return `${shmPath(vm, dir)}.ivshmem`;
}

export interface OpenRegion {
  region: Region;
  buffer: ArrayBuffer;
  close(): void;
  /** Host side: what happened to the file since (truncated, replaced, removed), if anything. */
  problem?(): FileProblem | undefined;
  /** Host side: the file's inode, for threads that map it again by name (they check it is the same file). */
  ino?: number;
}

export interface CreateRegionOptions {
  /** A group that may map the region too (QEMU running as another user): mode 0660 instead of 0600. */
  group?: number;
}

/**
 * Map a region file; the host creates (or takes over its own leftover), locks and initializes it, a
 * client attaches to it. See ownFile for what the host refuses.
 */
export function openRegion(path: string, create: boolean, opts: CreateRegionOptions = {}): OpenRegion {
  const n = nativeAvailable();
  if (!n.ok) throw new PrismError('ENOSYS', `shared memory is unavailable: ${n.reason}`);
  if (create) {
    const f = ownFile(path, {
      size: REGION_SIZE, group: opts.group,
      holder: (fd) => pidWord(fd, PID_OFFSET.host, 'host'),
      // A region of another size (an older build): whoever still maps it is told the host left.
      retire: (old) => { try { Region.attach(old).setLiveness('host', LIVE_STOPPING); } catch { /* not a region */ } },
    });
    try {
      const region = Region.create(f.buffer, fitGeometry(REGION_SIZE, 1));
      return { region, buffer: f.buffer, close: () => f.close(), problem: () => f.problem(), ino: fs.fstatSync(f.fd).ino };
    } catch (e) {
      f.close();
      throw new PrismError('EINVAL', `${path} is not a Prism region: ${(e as Error).message}`);
    }
  }
  let buffer: ArrayBuffer;
  const fd = openServedFile(path, true);
  try {
    buffer = map(fd, { guard: true }); // a file truncated under us reads as zeros (a changed generation), not SIGBUS
  } catch (e) {
    throw fromNodeError(e, `cannot map ${path}`);
  } finally {
    fs.closeSync(fd);
  }
  let region: Region;
  try {
    region = Region.attach(buffer);
  } catch (e) {
    unmap(buffer);
    throw new PrismError('EINVAL', `${path} is not a Prism region: ${(e as Error).message}`);
  }
  return { region, buffer, close: () => { unmap(buffer); } };
}

/** "pid N", as a side's liveness word in a region file says (for messages only: a guest may write it). */
export function pidWord(fd: number, offset: number, side: string): string {
  const b = Buffer.alloc(4);
  try {
    if (fs.readSync(fd, b, 0, 4, offset) === 4 && b.readUInt32LE(0) !== 0) return `${side} pid ${b.readUInt32LE(0)}`;
  } catch { /* unreadable: no name */ }
  return `${side} pid unknown`;
}

/** Attach to a region a host is serving now (EIO if it says it is not). */
export function openServedRegion(path: string): OpenRegion {
  const r = openRegion(path, false);
  if (r.region.liveness('host').state !== LIVE_UP) {
    r.close();
    throw new PrismError('EIO', `no host is serving ${path}`);
  }
  return r;
}
