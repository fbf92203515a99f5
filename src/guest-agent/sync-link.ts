// The I/O thread's connection to the host over shared memory: blocking calls (spin, then sleep on the
// ring's futex), so a call costs microseconds instead of event-loop turns. Like HostLink, it survives
// host restarts: a call that finds the host gone waits (on timers) while one dialer reconnects with
// backoff, is sent again, and fails with EIO at its deadline.
import type { Proc } from '../protocol/procs.js';
import type { SyncShmClient } from '../vrpc/shm-sync-client.js';
import type { Link } from './host-link.js';
import { Reconnector } from './reconnector.js';

const REDIAL_HANDSHAKE_MS = 200;

interface Posted { proc: Proc; args: unknown[]; resolve(r: unknown[]): void; reject(e: Error): void; deadline: number }

export class SyncLink implements Link {
  private readonly conn: Reconnector<SyncShmClient>;

  private constructor(dial: (handshakeMs: number) => SyncShmClient, first: SyncShmClient, readonly timeoutMs: number) {
    // A short handshake when redialing: a dead host's region still says "up", and this thread must not block long.
    this.conn = new Reconnector(first, () => dial(REDIAL_HANDSHAKE_MS), timeoutMs, { onLost: () => this.resendPosted() });
  }

  /** Connect once (failing at once if the host is not there). `dial` blocks for up to handshakeMs. */
  static open(dial: (handshakeMs: number) => SyncShmClient, timeoutMs: number): SyncLink {
    return new SyncLink(dial, dial(5000), timeoutMs);
  }

  /**
   * With the host there, the call blocks (microseconds) and the promise is already settled. With
   * the host gone, calls wait without blocking, so the thread goes on answering what needs no host
   * (FLUSH of a closing file, FORGET, INTERRUPT), which a process exiting or exec-ing may wait on.
   */
  call(proc: Proc, args?: unknown[]): Promise<unknown[]>;
  call<T>(proc: Proc, args: unknown[], take: (r: unknown[]) => T): Promise<T>;
  call(proc: Proc, args: unknown[] = [], take?: (r: unknown[]) => unknown): Promise<unknown> {
    const c = this.conn.current;
    if (c) {
      try {
        return Promise.resolve(take ? c.call(proc, args, take) : c.call(proc, args));
      } catch (e) {
        if (!this.conn.dropIfGone(c, e)) return Promise.reject(e);
      }
    }
    return this.callLater(proc, args, take, Date.now() + this.timeoutMs);
  }

  /** Posted calls not answered yet: sent again (as calls) if their connection is lost. */
  private readonly outstanding = new Set<Posted>();

  /**
   * Send a call without waiting for its reply (a write sent behind): the promise settles when the
   * reply is read, by a later call or by settle().
   */
  post(proc: Proc, args: unknown[]): Promise<unknown[]> {
    return new Promise((resolve, reject) => {
      const p: Posted = { proc, args, resolve, reject, deadline: Date.now() + this.timeoutMs };
      const c = this.conn.current;
      if (c) {
        try {
          this.outstanding.add(p);
          c.post(proc, args, (err, result) => {
            this.outstanding.delete(p);
            if (err) reject(err); else resolve(result ?? []);
          });
          return;
        } catch (e) {
          this.outstanding.delete(p);
          if (!this.conn.dropIfGone(c, e)) { reject(e); return; }
        }
      }
      this.callLater(proc, args, undefined, p.deadline).then((r) => resolve(r as unknown[]), reject);
    });
  }

  /** Wait (blocking) for the replies of every posted call. */
  settle(): void {
    const c = this.conn.current;
    if (!c) return; // being re-sent as calls: their promises settle on their own
    try {
      c.settle();
    } catch (e) {
      if (!this.conn.dropIfGone(c, e)) throw e;
    }
  }

  /** Read the replies of posted calls that have arrived (no waiting). */
  collect(): void {
    const c = this.conn.current;
    if (!c) return;
    try {
      c.collectArrived();
    } catch (e) {
      if (!this.conn.dropIfGone(c, e)) throw e;
    }
  }

  /** Which connection is current: what one host instance handed out (reserved inodes) means nothing to the next. */
  connection(): number {
    return this.conn.reconnects;
  }

  /** The connection broke: what was posted on it is sent again once reconnected. */
  private resendPosted(): void {
    for (const p of [...this.outstanding]) {
      this.outstanding.delete(p);
      this.callLater(p.proc, p.args, undefined, p.deadline).then((r) => p.resolve(r as unknown[]), p.reject);
    }
  }

  private callLater(proc: Proc, args: unknown[], take: ((r: unknown[]) => unknown) | undefined, deadline: number): Promise<unknown> {
    return this.conn.run(deadline, (c) => (take ? c.call(proc, args, take) : c.call(proc, args)));
  }

  close(): void {
    this.conn.close();
  }
}
