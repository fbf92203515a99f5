// A channel carries whole messages (frames) both ways. The shared-memory channel and the TCP channel
// implement it; the client and server above them do not know which one they use.
import { log } from '../log.js';
export interface Channel {
  /** Queue one message; false when the channel is closed. */
  send(msg: Uint8Array): boolean;
  /** Queue one message made of parts (copied before this returns). */
  sendParts(parts: Uint8Array[]): boolean;
  /**
   * Messages arrive here. When `transient` is true, a message's bytes are valid only during the
   * callback (they are shared memory about to be reused): copy what must outlive it.
   */
  onMessage(cb: (msg: Uint8Array) => void): void;
  readonly transient: boolean;
  /** The client tells a polling channel whether replies are due (it then skips sleeping). */
  expecting?: () => boolean;
  onClose(cb: (err?: Error) => void): void;
  close(): void;
  /**
   * Back-pressure (the host's per-VM budget, src/host/budget.ts): while paused no message is
   * delivered and the peer's bytes stay where it wrote them (its ring, or the socket), so a peer
   * that keeps sending fills its own side and stops. Replies are still sent.
   */
  pause(): void;
  resume(): void;
  /** Bytes accepted by send() that the peer has not taken yet, held in this process. */
  readonly queuedBytes: number;
  /** Told when queued bytes have gone down (the peer took some). */
  onDrain(cb: () => void): void;
}

/** The callback plumbing every channel shares. */
export abstract class ChannelEvents {
  protected msgCb: (m: Uint8Array) => void = () => {};
  private closeCbs: Array<(err?: Error) => void> = [];
  private drainCbs: Array<() => void> = [];
  protected closed = false;
  protected paused = false;
  readonly transient: boolean = false;

  onMessage(cb: (msg: Uint8Array) => void): void { this.msgCb = cb; }
  onClose(cb: (err?: Error) => void): void { this.closeCbs.push(cb); }
  onDrain(cb: () => void): void { this.drainCbs.push(cb); }

  protected drained(): void {
    for (const cb of this.drainCbs) cb();
  }

  /**
   * Mark closed and tell every listener, once. A listener that throws is logged and the others still
   * run: finish() is called from transport loops (a socket event, a ring's pump) that must not throw.
   */
  protected finish(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const cb of this.closeCbs) {
      try {
        cb(err);
      } catch (e) {
        log.error({ err: (e as Error).message }, 'a channel close listener failed');
      }
    }
  }
}
