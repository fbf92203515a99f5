// The shared-memory addon (native/ivshmem -> prism_ivshmem.node): its typed surface and its loader.
// memory.ts (mapping) and futex.ts (sleeping on a word) wrap it; callers use those.
import { addonLoader, type AddonStatus } from './loader.js';

/** How memory.ts map() maps a file. */
export interface MapOptions {
  /** Bytes to map. Default: the file's size. Required with `create`. */
  size?: number;
  /** Create the file if needed and grow it to `size` (never shrinks it). */
  create?: boolean;
  /** Map PROT_READ only. Writing to such a buffer from JS kills the process (SIGSEGV). */
  readonly?: boolean;
  /**
   * Survive the file being truncated under the mapping (by whoever may write it): the addon's SIGBUS
   * handler swaps in zero pages and mappingLost() turns true, instead of the process dying.
   */
  guard?: boolean;
  /** Where in the file the mapping starts (a multiple of the page size; with a descriptor and a size), e.g. a VFIO region. */
  offset?: number;
}

export type FutexWaitResult = 'ok' | 'not-equal' | 'timed-out';

export interface IvshmemAddon {
  map(pathOrFd: string | number, opts?: MapOptions): ArrayBuffer;
  lock(fd: number, byte: number, exclusive: boolean): boolean;
  lost(buf: ArrayBuffer): boolean;
  unmap(buf: ArrayBuffer): boolean;
  futexWait(buf: ArrayBuffer, byteOffset: number, expected: number, timeoutMs: number): FutexWaitResult;
  futexWake(buf: ArrayBuffer, byteOffset: number, count: number): number;
  pageSize: number;
}

export const ivshmem = addonLoader<IvshmemAddon>('prism_ivshmem', 'PRISM_IVSHMEM_ADDON', 'shared memory');

/** Whether shared memory (map + futex) can be used here, and if not, why. Without it VRPC uses TCP. */
export function nativeAvailable(): AddonStatus {
  return ivshmem.status();
}

/** The addon when it is loaded, for hot paths that already checked nativeAvailable(). */
export function nativeAddon(): IvshmemAddon | undefined {
  return ivshmem.load();
}
