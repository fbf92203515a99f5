// The I/O thread's connection to the host over shared memory: blocking calls (spin, then sleep on the
// ring's futex), so a call costs microseconds instead of event-loop turns. Like HostLink, it survives
// host restarts: a call that finds the host gone waits (on timers) while one dialer reconnects with
// backoff, is sent again, and fails with EIO at its deadline.
import { PrismError } from '../errors.js';
import { log } from '../log.js';
import type { Proc } from '../protocol/procs.js';
import { HostGone } from '../vrpc/client.js';
import type { SyncShmClient } from '../vrpc/shm.js';
import type { Link } from './host-link.js';

const REDIAL_HANDSHAKE_MS = 200;

interface Posted { proc: Proc; args: unknown[]; resolve(): void; reject(e: Error): void; deadline: number }

export class SyncLink implements Link {
  private client: SyncShmClient | null;
  private dialing: Promise<SyncShmClient> | null = null;
  private closed = false;
  reconnects = 0;

  private constructor(private readonly dial: (handshakeMs: number) => SyncShmClient, first: SyncShmClient, readonly timeoutMs: number) {
    this.client = first;
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
    const c = this.client;
    if (c && !this.dialing) {
      try {
        return Promise.resolve(take ? c.call(proc, args, take) : c.call(proc, args));
      } catch (e) {
        if (!(e instanceof HostGone) || this.closed) return Promise.reject(e);
        this.lost(c, e);
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
  post(proc: Proc, args: unknown[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const p: Posted = { proc, args, resolve, reject, deadline: Date.now() + this.timeoutMs };
      const c = this.client;
      if (c && !this.dialing) {
        try {
          this.outstanding.add(p);
          c.post(proc, args, (err) => {
            this.outstanding.delete(p);
            if (err) reject(err); else resolve();
          });
          return;
        } catch (e) {
          this.outstanding.delete(p);
          if (!(e instanceof HostGone) || this.closed) { reject(e); return; }
          this.lost(c, e);
        }
      }
      this.callLater(proc, args, undefined, p.deadline).then(() => resolve(), reject);
    });
  }

  /** Wait (blocking) for the replies of every posted call. */
  settle(): void {
    const c = this.client;
    if (!c || this.dialing) return; // being re-sent as calls: their promises settle on their own
    try {
      c.settle();
    } catch (e) {
      if (!(e instanceof HostGone) || this.closed) throw e;
      this.lost(c, e);
    }
  }

  /** Whether posted calls are waiting for replies. */
  get posting(): boolean { return this.outstanding.size > 0; }

  private lost(c: SyncShmClient, e: Error): void {
    if (this.client !== c) return;
    log.warn({ err: e.message }, 'lost the host; reconnecting');
    c.close();
    this.client = null;
    // What was posted on that connection is sent again once reconnected.
    for (const p of [...this.outstanding]) {
      this.outstanding.delete(p);
      this.callLater(p.proc, p.args, undefined, p.deadline).then(() => p.resolve(), p.reject);
    }
  }

  private async callLater(proc: Proc, args: unknown[], take: ((r: unknown[]) => unknown) | undefined, deadline: number): Promise<unknown> {
    for (;;) {
      const c = await this.reconnected(deadline);
      try {
        return take ? c.call(proc, args, take) : c.call(proc, args);
      } catch (e) {
        if (!(e instanceof HostGone) || this.closed) throw e;
        this.lost(c, e);
        if (Date.now() >= deadline) throw new PrismError('EIO', `the host is unreachable: ${e.message}`);
      }
    }
  }

  /** The client once reconnected (one dialer on timers for every waiting call), or EIO at the deadline. */
  private reconnected(deadline: number): Promise<SyncShmClient> {
    if (this.closed) return Promise.reject(new PrismError('EIO', 'the agent is shutting down'));
    if (this.client) return Promise.resolve(this.client);
    this.dialing ??= this.redial().finally(() => { this.dialing = null; });
    const dialing = this.dialing;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new PrismError('EIO', `the host did not come back within ${this.timeoutMs} ms`)), Math.max(0, deadline - Date.now()));
      dialing.then((c) => { clearTimeout(timer); resolve(c); }, (e: Error) => { clearTimeout(timer); reject(e); });
    });
  }

  private async redial(): Promise<SyncShmClient> {
    for (let pause = 50; ; pause = Math.min(pause * 2, 1000)) {
      if (this.closed) throw new PrismError('EIO', 'the agent is shutting down');
      try {
        // A short handshake: a dead host's region still says "up", and this thread must not block long.
        this.client = this.dial(REDIAL_HANDSHAKE_MS);
        this.reconnects++;
        log.warn({ reconnects: this.reconnects }, 'reconnected to the host');
        return this.client;
      } catch (e) {
        log.debug({ err: (e as Error).message }, 'reconnect failed');
        await new Promise((r) => setTimeout(r, pause));
      }
    }
  }

  close(): void {
    this.closed = true;
    this.client?.close();
    this.client = null;
  }
}
