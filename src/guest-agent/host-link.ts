// The agent's connection to the host, kept alive across host restarts: a call that finds the channel
// gone waits for a new one and is sent again (handles are stable, so it means the same thing); a call
// still unanswered after `timeoutMs` fails with EIO instead of hanging.
import { PrismError } from '../errors.js';
import type { Proc } from '../protocol/procs.js';
import type { VrpcClient } from '../vrpc/client.js';
import { Reconnector } from './reconnector.js';

/** Connect once; fails fast (a short handshake) when the host is not there. */
export type Dial = () => Promise<VrpcClient>;

/** What the file system needs of its connection (HostLink on the event loop, SyncLink in an I/O thread). */
export interface Link {
  call(proc: Proc, args?: unknown[]): Promise<unknown[]>;
  call<T>(proc: Proc, args: unknown[], take: (r: unknown[]) => T): Promise<T>;
  /** Send without waiting for the reply (a blocking link: the reply is read later, see settle). */
  post?(proc: Proc, args: unknown[]): Promise<unknown[]>;
  /** Wait for every posted call's reply (blocking links only). */
  settle?(): void;
  /** Read the posted calls' replies that have arrived, without waiting (blocking links only). */
  collect?(): void;
  /** Which connection to the host is current (a count of reconnects; blocking links only). */
  connection?(): number;
}

export interface HostLinkOptions {
  /** How long a call may wait for the host (including reconnects) before failing with EIO. */
  timeoutMs?: number;
}

interface Outstanding { seq: number; sentOn: VrpcClient | null }

export class HostLink implements Link {
  private readonly conn: Reconnector<VrpcClient>;
  readonly timeoutMs: number;

  private constructor(dial: Dial, first: VrpcClient, opts: HostLinkOptions) {
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.conn = new Reconnector(first, dial, this.timeoutMs, { isLive: (c) => !c.closed });
  }

  /** Connect once (failing at once if the host is not there: a mount should not half-succeed). */
  static async open(dial: Dial, opts: HostLinkOptions = {}): Promise<HostLink> {
    return new HostLink(dial, await dial(), opts);
  }

  /** As VrpcClient.call: `take` sees the results in place (they may be shared memory). */
  call(proc: Proc, args?: unknown[]): Promise<unknown[]>;
  call<T>(proc: Proc, args: unknown[], take: (r: unknown[]) => T): Promise<T>;
  async call(proc: Proc, args: unknown[] = [], take?: (r: unknown[]) => unknown): Promise<unknown> {
    const deadline = Date.now() + this.timeoutMs;
    const me: Outstanding = { seq: this.nextSeq++, sentOn: null };
    this.outstanding.set(me.seq, me);
    try {
      return await this.conn.run(deadline, async (c) => {
        await this.inTurn(me, c, deadline);
        const reply = take ? c.call(proc, args, take) : c.call(proc, args);
        me.sentOn = c; // written to the connection now (the client sends before it returns)
        this.wake();
        return await reply;
      });
    } finally {
      this.outstanding.delete(me.seq);
      this.wake();
    }
  }

  /**
   * Calls not answered yet, in the order they were made. On a new connection none is sent before every
   * earlier one has been sent on it again: two WRITEs to one block in flight when the host went away
   * must reach the new host in their order, or the older data lands last and a later COMMIT makes it
   * durable in place of the newer (found by the crash test).
   */
  private readonly outstanding = new Map<number, Outstanding>();
  private nextSeq = 0;
  private turnWaiters: Array<() => boolean> = [];

  private inTurn(me: Outstanding, c: VrpcClient, deadline: number): Promise<void> {
    const ready = () => {
      for (const o of this.outstanding.values()) {
        if (o.seq >= me.seq) return true;
        if (o.sentOn !== c && !c.closed) return false;
      }
      return true;
    };
    if (ready()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { this.turnWaiters = this.turnWaiters.filter((w) => w !== check); reject(new PrismError('EIO', 'the host is unreachable: earlier calls were not sent again in time')); }, Math.max(0, deadline - Date.now()));
      const check = () => {
        if (!ready()) return false;
        clearTimeout(timer);
        resolve();
        return true;
      };
      this.turnWaiters.push(check);
    });
  }

  private wake(): void {
    if (this.turnWaiters.length) this.turnWaiters = this.turnWaiters.filter((check) => !check());
  }

  close(): void {
    this.conn.close();
  }
}
