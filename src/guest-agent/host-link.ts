// The agent's connection to the host, kept alive across host restarts: a call that finds the channel
// gone waits for a new one and is sent again (handles are stable, so it means the same thing); a call
// still unanswered after `timeoutMs` fails with EIO instead of hanging.
import { PrismError } from '../errors.js';
import { log } from '../log.js';
import type { Proc } from '../protocol/procs.js';
import { HostGone, type VrpcClient } from '../vrpc/client.js';

/** Connect once; fails fast (a short handshake) when the host is not there. */
export type Dial = () => Promise<VrpcClient>;

/** What the file system needs of its connection (HostLink on the event loop, SyncLink in an I/O thread). */
export interface Link {
  call(proc: Proc, args?: unknown[]): Promise<unknown[]>;
  call<T>(proc: Proc, args: unknown[], take: (r: unknown[]) => T): Promise<T>;
  /** Send without waiting for the reply (a blocking link: the reply is read later, see settle). */
  post?(proc: Proc, args: unknown[]): Promise<void>;
  /** Wait for every posted call's reply (blocking links only). */
  settle?(): void;
}

export interface HostLinkOptions {
  /** How long a call may wait for the host (including reconnects) before failing with EIO. */
  timeoutMs?: number;
  /** Longest pause between reconnect attempts. */
  maxBackoffMs?: number;
}

export class HostLink implements Link {
  private client: VrpcClient | null;
  private dialing: Promise<VrpcClient> | null = null;
  private closed = false;
  readonly timeoutMs: number;
  private readonly maxBackoffMs: number;
  /** Reconnections made so far (for tests and stats). */
  reconnects = 0;

  private constructor(private readonly dial: Dial, first: VrpcClient, opts: HostLinkOptions) {
    this.client = first;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.maxBackoffMs = opts.maxBackoffMs ?? 1000;
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
      const c = await this.connected(deadline);
      try {
        return await (take ? c.call(proc, args, take) : c.call(proc, args));
      } catch (e) {
        if (!(e instanceof HostGone) || this.closed) throw e;
        if (this.client === c) this.client = null;
        if (Date.now() >= deadline) throw new PrismError('EIO', `the host is unreachable: ${e.message}`);
      }
    }
  }

  /** The live client, dialing a new one (one dialer for all waiting calls) until the deadline. */
  private async connected(deadline: number): Promise<VrpcClient> {
    if (this.closed) throw new PrismError('EIO', 'the agent is shutting down');
    if (this.client && !this.client.closed) return this.client;
    this.dialing ??= this.redial().finally(() => { this.dialing = null; });
    const timer = new Promise<never>((_, reject) => {
      const t = setTimeout(() => reject(new PrismError('EIO', `the host did not come back within ${this.timeoutMs} ms`)), Math.max(0, deadline - Date.now()));
      void this.dialing!.then(() => clearTimeout(t), () => clearTimeout(t));
    });
    return Promise.race([this.dialing, timer]);
  }

  private async redial(): Promise<VrpcClient> {
    let pause = 50;
    log.warn('lost the host; reconnecting');
    for (;;) {
      if (this.closed) throw new PrismError('EIO', 'the agent is shutting down');
      try {
        const c = await this.dial();
        this.client = c;
        this.reconnects++;
        log.warn({ reconnects: this.reconnects }, 'reconnected to the host');
        return c;
      } catch (e) {
        log.debug({ err: (e as Error).message }, 'reconnect failed');
        await new Promise((r) => setTimeout(r, pause));
        pause = Math.min(this.maxBackoffMs, pause * 2);
      }
    }
  }

  close(): void {
    this.closed = true;
    this.client?.close();
    this.client = null;
  }
}
