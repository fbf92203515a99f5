// Typed access to the native shared-memory addon (native/ivshmem, built by `npm run build:native`
// into build/Release/prism_ivshmem.node). Loading never throws: without the addon, callers ask
// nativeAvailable() and fall back to TCP.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

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
}

export type FutexWaitResult = 'ok' | 'not-equal' | 'timed-out';

interface Addon {
  map(pathOrFd: string | number, opts?: MapOptions): ArrayBuffer;
  lock(fd: number, byte: number, exclusive: boolean): boolean;
  lost(buf: ArrayBuffer): boolean;
  unmap(buf: ArrayBuffer): boolean;
  futexWait(buf: ArrayBuffer, byteOffset: number, expected: number, timeoutMs: number): FutexWaitResult;
  futexWake(buf: ArrayBuffer, byteOffset: number, count: number): number;
  pageSize: number;
}

/** Where the addon is looked for: $PRISM_IVSHMEM_ADDON, else build/Release of the package root. */
function addonPath(): string {
  const fromEnv = process.env.PRISM_IVSHMEM_ADDON;
  if (fromEnv) return path.resolve(fromEnv);
  // This file runs as dist/src/ring/native.js (or src/ring/native.ts under a TS loader): walk up to
  // the directory holding binding.gyp / package.json.
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'binding.gyp')) || fs.existsSync(path.join(dir, 'package.json'))) break;
    dir = path.dirname(dir);
  }
  return path.join(dir, 'build', 'Release', 'prism_ivshmem.node');
}

let addon: Addon | undefined;
let failure: string | undefined;

function load(): Addon | undefined {
  if (addon || failure) return addon;
  const file = addonPath();
  if (process.platform !== 'linux') {
    failure = `the ivshmem addon needs Linux (this is ${process.platform})`;
  } else if (!fs.existsSync(file)) {
    failure = `the native addon is not built (${file} is missing; run npm run build:native)`;
  } else {
    try {
      addon = createRequire(import.meta.url)(file) as Addon;
    } catch (e) {
      failure = `the native addon failed to load: ${(e as Error).message}`;
    }
  }
  return addon;
}

function need(): Addon {
  const a = load();
  if (!a) throw new Error(`shared memory is unavailable: ${failure}`);
  return a;
}

/** Whether shared memory (map + futex) can be used here, and if not, why. */
export function nativeAvailable(): { ok: true } | { ok: false; reason: string } {
  return load() ? { ok: true } : { ok: false, reason: failure ?? 'unknown' };
}

/**
 * Map a file (a /dev/shm region, a PCI BAR such as /sys/bus/pci/devices/X/resource2) MAP_SHARED
 * and return an ArrayBuffer over it. Atomics work on it (as on any ArrayBuffer); it cannot be
 * posted to a worker: a worker maps the same file itself.
 */
export function map(file: string | number, opts: MapOptions = {}): ArrayBuffer {
  return need().map(file, opts);
}

/**
 * Take an open-file-description lock (F_OFD_SETLK) on one byte of an open file: true when taken,
 * false when another open of the file holds a conflicting one. Released when the last descriptor
 * and mapping of this open go (a killed process releases it).
 */
export function lockByte(fd: number, byte: number, exclusive: boolean): boolean {
  return need().lock(fd, byte, exclusive);
}

/** Whether a mapping made with `guard` lost its file (truncated under it): it now holds zeros of its own. */
export function mappingLost(buf: ArrayBuffer): boolean {
  return need().lost(buf);
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

/** Unmap now (the buffer is detached: its length becomes 0). Otherwise GC unmaps it. */
export function unmap(buf: ArrayBuffer): boolean {
  return need().unmap(buf);
}

/**
 * Sleep while the 32-bit word at byteOffset equals `expected`, at most timeoutMs (negative or
 * Infinity: no limit). Shared futex: a futexWake from any process mapping the file wakes it.
 * 'ok' may be spurious (a signal): re-check the condition.
 */
export function futexWait(buf: ArrayBuffer, byteOffset: number, expected: number, timeoutMs: number): FutexWaitResult {
  return need().futexWait(buf, byteOffset, expected, timeoutMs);
}

/** Wake up to `count` sleepers on the word at byteOffset; returns how many were woken. */
export function futexWake(buf: ArrayBuffer, byteOffset: number, count = 1): number {
  return need().futexWake(buf, byteOffset, count);
}

/** The addon when it is loaded, for hot paths that already checked nativeAvailable(). */
export function nativeAddon(): Addon | undefined {
  return load();
}
