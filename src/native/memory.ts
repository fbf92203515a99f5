// Mapping shared memory (a /dev/shm region file, a PCI BAR) through the ivshmem addon.
import fs from 'node:fs';
import { ivshmem, type MapOptions } from './ivshmem.js';

/**
 * Map a file (a /dev/shm region, a PCI BAR such as /sys/bus/pci/devices/X/resource2) MAP_SHARED
 * and return an ArrayBuffer over it. Atomics work on it (as on any ArrayBuffer); it cannot be
 * posted to a worker: a worker maps the same file itself.
 */
export function map(file: string | number, opts: MapOptions = {}): ArrayBuffer {
  return ivshmem.need().map(file, opts);
}

/** Unmap now (the buffer is detached: its length becomes 0). Otherwise GC unmaps it. */
export function unmap(buf: ArrayBuffer): boolean {
  return ivshmem.need().unmap(buf);
}

/**
 * Take an open-file-description lock (F_OFD_SETLK) on one byte of an open file: true when taken,
 * false when another open of the file holds a conflicting one. Released when the last descriptor
 * and mapping of this open go (a killed process releases it).
 */
export function lockByte(fd: number, byte: number, exclusive: boolean): boolean {
  return ivshmem.need().lock(fd, byte, exclusive);
}

/** Whether a mapping made with `guard` lost its file (truncated under it): it now holds zeros of its own. */
export function mappingLost(buf: ArrayBuffer): boolean {
  return ivshmem.need().lost(buf);
}

/**
 * Whether a file is device memory (a PCI BAR in sysfs, as a guest sees ivshmem) rather than a
 * shared-memory file: no futexes work on its mapping (the peer is another kernel: poll), and the
 * kernel cannot take its pages as a write(2) buffer (EFAULT), so data in it is copied out first.
 */
export function isDeviceMemory(file: string): boolean {
  try {
    return fs.realpathSync(file).startsWith('/sys/');
  } catch {
    return false;
  }
}
