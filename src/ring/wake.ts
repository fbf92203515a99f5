// Waking a sleeping peer: the one thing a ring does after commit/release besides its stores.
// The sleeper writes into its sleeping flag how it sleeps; the waker uses that mechanism if it can.
import { nativeAddon } from '../native/ivshmem.js';

/** A 32-bit word of shared memory that a side may sleep on. */
export interface SharedWord {
  readonly i32: Int32Array;
  readonly index: number;
  /** Byte offset of the word from the start of the buffer (for futex). */
  readonly byteOffset: number;
}

/**
 * Sleeping-flag values: not asleep, asleep in futex(2), asleep in Atomics.wait, asleep until its
 * ivshmem doorbell rings (an interrupt in a guest, an eventfd on the host: the waker's ring's WakeFn
 * rings it; vrpc/ivshmem-server.ts, guest-agent/pci-doorbell.ts).
 */
export const SLEEP_NONE = 0;
export const SLEEP_FUTEX = 1;
export const SLEEP_ATOMICS = 2;
export const SLEEP_DOORBELL = 3;

export type WakeFn = (word: SharedWord, how: number) => void;

const hasSab = typeof SharedArrayBuffer === 'function';
const noFutex = new WeakSet<ArrayBufferLike>();

/**
 * Wake whoever sleeps on `word` the way `how` (the peer's sleeping flag) says: a shared futex wake
 * through the addon (works across processes mapping one file), or Atomics.notify (threads of this
 * process over a SharedArrayBuffer). Anything else (a doorbell: only a ring given a doorbell's WakeFn
 * rings it), or a mechanism not available here: no-op.
 */
export function wakePeer(word: SharedWord, how: number): void {
  const buf = word.i32.buffer;
  if (how === SLEEP_FUTEX) {
    const addon = nativeAddon();
    if (!addon || (hasSab && buf instanceof SharedArrayBuffer) || noFutex.has(buf)) return;
    try {
      addon.futexWake(buf as ArrayBuffer, word.byteOffset, 1);
    } catch {
      // A device mapping (a PCI BAR in a guest) has no futexes (EFAULT), and a peer in another
      // kernel could not be woken anyway: it polls. Not tried again on this buffer.
      noFutex.add(buf);
    }
  } else if (how === SLEEP_ATOMICS) {
    if (hasSab && buf instanceof SharedArrayBuffer) Atomics.notify(word.i32, word.index, 1);
  }
}
