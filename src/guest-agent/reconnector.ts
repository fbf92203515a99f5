// Keeping one connection to the host across its restarts, for both links (host-link.ts on the event
// loop, sync-link.ts in the I/O thread): when the connection is lost, one dialer retries with backoff
// (50 ms doubling to 1 s) while every waiting call waits for it, each until its own deadline. run() is
// the one loop that sends a call again on each new connection.
import { PrismError } from '../errors.js';
import { log } from '../log.js';
import { HostGone } from '../vrpc/client.js';

export interface Connection { close(): void }

export interface ReconnectorHooks<C> {
  /** Whether a client still works (default: until it is found gone). */
  isLive?(c: C): boolean;
  /** Told of each connection dropped, after it is closed. */
  onLost?(c: C): void;
}

export class Reconnector<C extends Connection> {
  private client: C | null;
  private dialing: Promise<C> | null = null;
  private closed = false;
  /** Reconnections made so far. */
  reconnects = 0;

  /** `redial` connects once (throwing if it cannot). */
  constructor(
    first: C,
    private readonly redial: () => C | Promise<C>,
    private readonly timeoutMs: number,
    private readonly hooks: ReconnectorHooks<C> = {},
  ) {
    this.client = first;
  }

  /** The client, when there is a live one and no redial is under way. */
  get current(): C | null {
    return this.client && !this.dialing && (this.hooks.isLive?.(this.client) ?? true) ? this.client : null;
  }

  get isClosed(): boolean { return this.closed; }

  /** The live client, or one dialed for us; EIO at the deadline or once closed. */
  connected(deadline: number): Promise<C> {
    if (this.closed) return Promise.reject(new PrismError('EIO', 'the agent is shutting down'));
    const c = this.current;
    if (c) return Promise.resolve(c);
    this.dialing ??= this.dialUntilUp().finally(() => { this.dialing = null; });
    const dialing = this.dialing;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new PrismError('EIO', `the host did not come back within ${this.timeoutMs} ms`)), Math.max(0, deadline - Date.now()));
      dialing.then((d) => { clearTimeout(timer); resolve(d); }, (e: Error) => { clearTimeout(timer); reject(e); });
    });
  }

  /**
   * Run `attempt` on a live connection until it does not find the host gone: each HostGone drops that
   * connection (the next turn dials) and tries again, until the deadline (EIO). Other errors are the
   * call's own and end it.
   */
  async run<T>(deadline: number, attempt: (c: C) => T | Promise<T>): Promise<T> {
    for (;;) {
      const c = await this.connected(deadline);
      try {
        return await attempt(c);
      } catch (e) {
        if (!this.dropIfGone(c, e)) throw e;
        if (Date.now() >= deadline) throw new PrismError('EIO', `the host is unreachable: ${(e as Error).message}`);
      }
    }
  }

  /**
   * A call on `c` threw `e`: if it says the host is gone, drop `c` (the next call dials) and return
   * true; false if the error is the call's own (or we are closing), for the caller to pass on.
   */
  dropIfGone(c: C, e: unknown): boolean {
    if (!(e instanceof HostGone) || this.closed) return false;
    this.lost(c, e);
    return true;
  }

  /** The connection `c` broke: drop it (the next call dials). */
  private lost(c: C, e: Error): void {
    if (this.client !== c) return;
    log.warn({ err: e.message }, 'lost the host; reconnecting');
    c.close();
    this.client = null;
    this.hooks.onLost?.(c);
  }

  private async dialUntilUp(): Promise<C> {
    for (let pause = 50; ; pause = Math.min(pause * 2, 1000)) {
      if (this.closed) throw new PrismError('EIO', 'the agent is shutting down');
      try {
        this.client = await this.redial();
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
