// Waiting for a ring: spin briefly while checking the condition, then sleep.
//
//   'futex'   both sides on one kernel, the region mapped through the addon: sleep in futex(2) on
//             the peer's counter word (shared futex, so another process's wake reaches us).
//   'atomics' a SharedArrayBuffer inside one process (threads, tests): Atomics.wait / notify.
//   'poll'    guest <-> host, where no futex crosses: sleep with exponential backoff, 20 us doubling
//             up to maxPollMs (default 1 ms), re-checking in between. The peer is never asked to wake us.
//   'spin'    never sleep (benchmarks, dedicated cores).
//   'interrupt' a guest with an ivshmem doorbell: sleep until the host rings it (an interrupt the
//             InterruptLine waits for), the sleeping flag saying SLEEP_DOORBELL.
//
// Sleeping protocol (no lost wake-up): the sleeper stores its sleeping flag (how to wake it), then
// loads the peer's counter, re-checks its condition, and sleeps only while the counter still holds
// the value it loaded. The peer stores its counter, then loads the flag and wakes if it is set
// (ring.ts: commit/release). Atomics are sequentially consistent, so either the sleeper sees the new
// counter or the peer sees the flag. The flag means a wake costs a syscall only when someone sleeps.
import { futexWait } from '../native/futex.js';
import { nativeAvailable } from '../native/ivshmem.js';
import type { RingConsumer, RingProducer } from './ring.js';
import { SLEEP_ATOMICS, SLEEP_DOORBELL, SLEEP_FUTEX, SLEEP_NONE, type SharedWord } from './wake.js';

export type WaitMode = 'futex' | 'atomics' | 'poll' | 'spin' | 'interrupt';

/** An interrupt a peer raises when our sleeping flag says SLEEP_DOORBELL (guest-agent/pci-doorbell.ts). */
export interface InterruptLine {
  /** Block until the interrupt comes (true) or `ms` pass (false), and make it ready to come again. */
  wait(ms: number): boolean;
}

export interface WaitOptions {
  mode: WaitMode;
  /** The interrupt to sleep on, in 'interrupt' mode. */
  line?: InterruptLine;
  /** Spin (checking the condition) this long before sleeping. Default 50 us; 0: sleep at once. */
  spinUs?: number;
  /** Longest poll sleep in 'poll' mode (ms). Default 1. */
  maxPollMs?: number;
  /**
   * Longest single futex/atomics sleep (ms) before re-checking, in case a peer never wakes us
   * (a hostile or misconfigured peer). Default 1000: costs nothing measurable when idle.
   */
  maxSleepMs?: number;
  /** waitAsync: after the spin, how long to poll with setImmediate before timer backoff (ms). */
  yieldMs?: number;
}

const hasSab = typeof SharedArrayBuffer === 'function';
const now = (): number => performance.now();
let sleepCell: Int32Array | undefined;

/** Block the calling thread for `ms` milliseconds (fractions allowed). */
function sleepMs(ms: number): void {
  sleepCell ??= new Int32Array(new SharedArrayBuffer(4));
  Atomics.wait(sleepCell, 0, 0, ms);
}

/** Busy-check ready() until spinEnd: true when ready, false past the deadline, undefined when the spin ends. */
function spin(ready: () => boolean, deadline: number, spinEnd: number): boolean | undefined {
  for (let i = 1; ; i++) {
    if (ready()) return true;
    if ((i & 63) === 0) {
      const t = now();
      if (t >= deadline) return false;
      if (t >= spinEnd) return undefined;
    }
  }
}

/**
 * Announce that we are about to sleep (so the peer wakes us), then look once more. Returns the word's
 * value to sleep on, or the answer when sleeping is not needed (ready, or past the deadline).
 */
function arm(how: number, word: SharedWord, flag: SharedWord, ready: () => boolean, deadline: number): number | boolean {
  Atomics.store(flag.i32, flag.index, how);
  const seen = Atomics.load(word.i32, word.index);
  if (ready() || deadline - now() <= 0) {
    Atomics.store(flag.i32, flag.index, SLEEP_NONE);
    return ready();
  }
  return seen;
}

export class WaitStrategy {
  readonly mode: WaitMode;
  readonly spinMs: number;
  readonly maxPollMs: number;
  readonly maxSleepMs: number;
  readonly yieldMs: number;
  private readonly line: InterruptLine | undefined;

  constructor(opts: WaitOptions) {
    this.mode = opts.mode;
    this.line = opts.line;
    if (this.mode === 'interrupt' && !this.line) throw new Error('interrupt wait mode needs an InterruptLine');
    this.spinMs = (opts.spinUs ?? 50) / 1000;
    this.maxPollMs = opts.maxPollMs ?? 1;
    this.maxSleepMs = opts.maxSleepMs ?? 1000;
    this.yieldMs = opts.yieldMs ?? 2;
    if (this.mode === 'futex') {
      const n = nativeAvailable();
      if (!n.ok) throw new Error(`futex wait mode: shared memory is unavailable: ${n.reason}`);
    }
  }

  /** The best mode for a buffer when both sides share this kernel. */
  static auto(buffer: ArrayBufferLike, opts: Omit<WaitOptions, 'mode'> = {}): WaitStrategy {
    if (hasSab && buffer instanceof SharedArrayBuffer) return new WaitStrategy({ ...opts, mode: 'atomics' });
    return new WaitStrategy({ ...opts, mode: nativeAvailable().ok ? 'futex' : 'poll' });
  }

  /**
   * Block until ready() returns true (true) or timeoutMs passes (false; negative or Infinity: no
   * limit). `word` is the peer's counter whose change may make ready() true; `flag` is our
   * sleeping flag in the same buffer. `spinMs` overrides the strategy's spin for this wait.
   */
  waitSync(ready: () => boolean, word: SharedWord, flag: SharedWord, timeoutMs = -1, spinMs = this.spinMs): boolean {
    if (ready()) return true;
    const start = now();
    const deadline = timeoutMs < 0 ? Infinity : start + timeoutMs;
    const spun = spin(ready, deadline, this.mode === 'spin' ? Infinity : start + spinMs);
    if (spun !== undefined) return spun;
    if (this.mode === 'poll') {
      for (let pause = 0.02; ; pause = Math.min(pause * 2, this.maxPollMs)) {
        const left = deadline - now();
        if (left <= 0) return ready();
        sleepMs(Math.min(pause, left));
        if (ready()) return true;
      }
    }
    const how = this.mode === 'futex' ? SLEEP_FUTEX : this.mode === 'interrupt' ? SLEEP_DOORBELL : SLEEP_ATOMICS;
    for (;;) {
      const seen = arm(how, word, flag, ready, deadline);
      if (typeof seen === 'boolean') return seen;
      const ms = Math.min(deadline - now(), this.maxSleepMs);
      if (how === SLEEP_FUTEX) futexWait(word.i32.buffer as ArrayBuffer, word.byteOffset, seen, ms);
      else if (how === SLEEP_DOORBELL) this.line!.wait(ms);
      else Atomics.wait(word.i32, word.index, seen, ms);
      Atomics.store(flag.i32, flag.index, SLEEP_NONE);
      if (ready()) return true;
    }
  }

  /**
   * Like waitSync, without blocking the event loop: after the spin, 'atomics' uses
   * Atomics.waitAsync; the other modes poll on timers (setImmediate, then setTimeout backoff up to
   * maxPollMs; a futex cannot be awaited), never setting the sleeping flag.
   */
  async waitAsync(ready: () => boolean, word: SharedWord, flag: SharedWord, timeoutMs = -1): Promise<boolean> {
    if (ready()) return true;
    const start = now();
    const deadline = timeoutMs < 0 ? Infinity : start + timeoutMs;
    const spun = spin(ready, deadline, start + this.spinMs);
    if (spun !== undefined) return spun;
    const waitAsync = (Atomics as unknown as { waitAsync?: AtomicsWaitAsync }).waitAsync;
    if (this.mode === 'atomics' && waitAsync && hasSab && word.i32.buffer instanceof SharedArrayBuffer) {
      for (;;) {
        const seen = arm(SLEEP_ATOMICS, word, flag, ready, deadline);
        if (typeof seen === 'boolean') return seen;
        const ms = Math.min(deadline - now(), this.maxSleepMs);
        const r = waitAsync(word.i32, word.index, seen, ms);
        if (r.async) {
          // A pending Atomics.waitAsync does not keep Node's event loop alive: a timer does.
          const keepAlive = setTimeout(() => {}, Math.ceil(ms) + 1);
          await r.value;
          clearTimeout(keepAlive);
        }
        Atomics.store(flag.i32, flag.index, SLEEP_NONE);
        if (ready()) return true;
      }
    }
    // Keep yielding with setImmediate for a while (a peer busy with a reply answers within it), then
    // back off on timers so an idle side costs almost nothing.
    const yieldEnd = start + this.yieldMs;
    for (let pause = 1; ;) {
      const t = now();
      if (t >= deadline) return ready();
      if (t < yieldEnd || this.mode === 'spin') {
        await new Promise<void>((resolve) => setImmediate(resolve));
      } else {
        await new Promise<void>((resolve) => setTimeout(resolve, pause));
        pause = Math.min(pause * 2, Math.max(1, this.maxPollMs));
      }
      if (ready()) return true;
    }
  }
}

type AtomicsWaitAsync = (
  i32: Int32Array,
  index: number,
  value: number,
  timeoutMs?: number,
) => { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };

/** Wait until the consumer has a record (true) or the timeout passes (false); spin spinMs (default: the strategy's) first. */
export function waitReadable(c: RingConsumer, w: WaitStrategy, timeoutMs = -1, spinMs?: number): boolean {
  return w.waitSync(() => c.hasRecord(), c.headWord, c.consumerFlag, timeoutMs, spinMs);
}

/** Wait until the producer can make progress on a record of `len` bytes. */
export function waitWritable(p: RingProducer, len: number, w: WaitStrategy, timeoutMs = -1): boolean {
  return w.waitSync(() => p.canReserve(len), p.tailWord, p.producerFlag, timeoutMs);
}

export function waitReadableAsync(c: RingConsumer, w: WaitStrategy, timeoutMs = -1): Promise<boolean> {
  return w.waitAsync(() => c.hasRecord(), c.headWord, c.consumerFlag, timeoutMs);
}

export function waitWritableAsync(p: RingProducer, len: number, w: WaitStrategy, timeoutMs = -1): Promise<boolean> {
  return w.waitAsync(() => p.canReserve(len), p.tailWord, p.producerFlag, timeoutMs);
}

/**
 * Reserve `len` bytes, waiting for space; null on timeout. The deadline covers the whole call
 * (including a wrap, where the first attempt publishes a PAD and waits again). A consumer asleep
 * (left so by commits that did not wake it) is woken before waiting: only it can make room.
 */
export function reserveBlocking(p: RingProducer, len: number, w: WaitStrategy, timeoutMs = -1): Uint8Array | null {
  const deadline = timeoutMs < 0 ? Infinity : now() + timeoutMs;
  for (;;) {
    const view = p.reserve(len);
    if (view) return view;
    p.wakeConsumer();
    const left = deadline === Infinity ? -1 : Math.max(0, deadline - now());
    if (!waitWritable(p, len, w, left) && now() >= deadline) return null;
  }
}

/**
 * Write one record, waiting for space; false on timeout. `wake` false leaves a sleeping consumer
 * asleep (RingProducer.commit) unless it has to make room first (reserveBlocking).
 */
export function writeBlocking(p: RingProducer, bytes: Uint8Array, w: WaitStrategy, timeoutMs = -1, wake = true): boolean {
  const view = reserveBlocking(p, bytes.byteLength, w, timeoutMs);
  if (!view) return false;
  view.set(bytes);
  p.commit(bytes.byteLength, wake);
  return true;
}

/** Peek the next record, waiting for one; null on timeout. Release it when done. */
export function peekBlocking(c: RingConsumer, w: WaitStrategy, timeoutMs = -1, spinMs?: number): Uint8Array | null {
  if (!waitReadable(c, w, timeoutMs, spinMs)) return null;
  return c.peek();
}

/** Read (copy and release) the next record, waiting for one; null on timeout. */
export function readBlocking(c: RingConsumer, w: WaitStrategy, timeoutMs = -1): Uint8Array | null {
  if (!waitReadable(c, w, timeoutMs)) return null;
  return c.read();
}
