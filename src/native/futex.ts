// Sleeping on a 32-bit word of a mapped region, and waking its sleepers, across processes (shared
// futexes through the ivshmem addon). Only for buffers from memory.ts map() of a shared-memory file.
import { ivshmem, type FutexWaitResult } from './ivshmem.js';

/**
 * Sleep while the 32-bit word at byteOffset equals `expected`, at most timeoutMs (negative or
 * Infinity: no limit). Shared futex: a futexWake from any process mapping the file wakes it.
 * 'ok' may be spurious (a signal): re-check the condition.
 */
export function futexWait(buf: ArrayBuffer, byteOffset: number, expected: number, timeoutMs: number): FutexWaitResult {
  return ivshmem.need().futexWait(buf, byteOffset, expected, timeoutMs);
}

/** Wake up to `count` sleepers on the word at byteOffset; returns how many were woken. */
export function futexWake(buf: ArrayBuffer, byteOffset: number, count = 1): number {
  return ivshmem.need().futexWake(buf, byteOffset, count);
}
