import type { Time } from '../posix/types.js';

// Wall-clock time with nanosecond resolution: a realtime base plus the monotonic high-resolution clock.
const base = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();

export function now(): Time {
  const ns = base + process.hrtime.bigint();
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
}

export function timeFromMs(ms: number): Time {
  const s = Math.floor(ms / 1000);
  return [s, Math.round((ms - s * 1000) * 1e6)];
}

/** From fs.Stats' bigint nanosecond fields. */
export function timeFromNs(ns: bigint): Time {
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
}

/** Order of two times: negative, zero or positive as `a` is before, at or after `b`. */
export function cmpTime(a: Time, b: Time): number {
  return a[0] - b[0] || a[1] - b[1];
}
