// The agent's connection to the host, kept alive across host restarts: a call that finds the channel
// gone waits for a new one and is sent again (handles are stable, so it means the same thing); a call
// still unanswered after `timeoutMs` fails with EIO instead of hanging.
import { PrismError } from '../errors.js';
import type { Proc } from '../protocol/procs.js';
import { HostGone, type VrpcClient } from '../vrpc/client.js';
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
}

export interface HostLinkOptions {
  /** How long a call may wait for the host (including reconnects) before failing with EIO. */
  timeoutMs?: number;
}

export class HostLink implements Link {
  private readonly conn: Reconnector<VrpcClient>;
  readonly timeoutMs: number;

  private constructor(dial: Dial, first: VrpcClient, opts: HostLinkOptions) {
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.conn = new Reconnector(first, dial, this.timeoutMs, (c) => !c.closed);
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
    for (;;) {
      const c = await this.conn.connected(deadline);
      try {
        return await (take ? c.call(proc, args, take) : c.call(proc, args));
      } catch (e) {
        if (!(e instanceof HostGone) || this.conn.isClosed) throw e;
        this.conn.lost(c, e);
        if (Date.now() >= deadline) throw new PrismError('EIO', `the host is unreachable: ${e.message}`);
      }
    }
  }

  close(): void {
    this.conn.close();
  }
}
