// Calling a host's Dispatcher directly in tests (no VM listens: nothing to wait for), and the POSIX
// code a call fails with.
import { PrismError, type PosixCode } from '../../src/errors.js';
import type { Dispatcher } from '../../src/host/dispatch.js';
import type { Proc } from '../../src/protocol/procs.js';

export function callNow(d: Dispatcher, proc: Proc, args: unknown[]): unknown[] {
  const r = d.call(proc, args);
  if (r instanceof Promise) throw new Error('no VM listens here: nothing to wait for');
  return r;
}

/** 'ok', or the code `fn` fails with. */
export function codeOf(fn: () => unknown): PosixCode | 'ok' {
  try { fn(); return 'ok'; } catch (e) { if (e instanceof PrismError) return e.code; throw e; }
}
