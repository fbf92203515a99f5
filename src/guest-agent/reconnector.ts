// Keeping one connection to the host across its restarts, for both links (host-link.ts on the event
// loop, sync-link.ts in the I/O thread): when the connection is lost, one dialer retries with backoff
// (50 ms doubling to 1 s) while every waiting call waits for it, each until its own deadline.
import { PrismError } from '../errors.js';
import { log } from '../log.js';

export interface Connection { close(): void }

export class Reconnector<C extends Connection> {
  private client: C | null;
  private dialing: Promise<C> | null = null;
  private closed = false;
  /** Reconnections made so far. */
  reconnects = 0;

  /** `redial` connects once (throwing if it cannot); `isLive` says whether a client still works. */
  constructor(
    first: C,
    private readonly redial: () => C | Promise<C>,
    private readonly timeoutMs: number,
    private readonly isLive: (c: C) => boolean = () => true,
  ) {
    this.client = first;
  }

  /** The client, when there is a live one and no redial is under way. */
  get current(): C | null {
    return this.client && !this.dialing && this.isLive(this.client) ? this.client : null;
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

  /** The connection `c` broke: drop it (the next call dials). */
  lost(c: C, e: Error): void {
    if (this.client !== c) return;
    log.warn({ err: e.message }, 'lost the host; reconnecting');
    c.close();
    this.client = null;
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
