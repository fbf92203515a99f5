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
}

/** The callback plumbing every channel shares. */
export abstract class ChannelEvents {
  protected msgCb: (m: Uint8Array) => void = () => {};
  private closeCbs: Array<(err?: Error) => void> = [];
  protected closed = false;
  readonly transient: boolean = false;

  onMessage(cb: (msg: Uint8Array) => void): void { this.msgCb = cb; }
  onClose(cb: (err?: Error) => void): void { this.closeCbs.push(cb); }

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
