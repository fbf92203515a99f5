// The server side of VRPC over any channel: decode, dispatch, reply. A message that does not decode
// gets no reply and counts against the peer; too many and the channel is closed.
import { decodeRequest, encodeResponse, encodeResponseParts, errorResponse, type Request } from '../protocol/codec.js';
import type { Channel } from './channel.js';

/**
 * Runs a request. Byte strings in its result need only stay valid until the reply is sent. A promise
 * defers the reply (requests after it are served meanwhile; replies carry their call ids).
 */
export type Handler = (proc: number, args: unknown[]) => unknown[] | Promise<unknown[]>;

export interface ServeOptions {
  /** Malformed messages tolerated before the channel is closed. */
  maxGarbage?: number;
  onGarbage?(err: Error): void;
  /** A message that is not a request: return true if it was a control message (a new handshake). */
  onControl?(m: Uint8Array): boolean;
  onRequest?(req: Request): void;
}

export function serveChannel(ch: Channel, handler: Handler, opts: ServeOptions = {}): void {
  let garbage = 0;
  const maxGarbage = opts.maxGarbage ?? 16;
  ch.onMessage((m) => {
    let req: Request;
    try {
      req = decodeRequest(m);
    } catch (e) {
      if (opts.onControl?.(m)) return;
      opts.onGarbage?.(e as Error);
      if (++garbage > maxGarbage) ch.close();
      return;
    }
    opts.onRequest?.(req);
    let result;
    try {
      result = handler(req.proc, req.args);
    } catch (e) {
      replyError(ch, req.id, e);
      return;
    }
    if (result instanceof Promise) result.then((r) => reply(ch, req.id, r), (e) => replyError(ch, req.id, e));
    else reply(ch, req.id, result);
  });
}

/**
 * Send a result. Never throws: it runs in promise callbacks nobody awaits, where a throw would be an
 * unhandled rejection (the end of the host). A reply that cannot be sent (too large, say) becomes an
 * error reply; a channel that cannot take even that has closed itself.
 */
function reply(ch: Channel, id: number, result: unknown[]): void {
  try {
    const parts = encodeResponseParts(id, result);
    if (parts) ch.sendParts(parts);
    else ch.send(encodeResponse({ id, errno: 0, result }));
  } catch (e) {
    replyError(ch, id, e);
  }
}

function replyError(ch: Channel, id: number, err: unknown): void {
  try {
    ch.send(encodeResponse(errorResponse(id, err)));
  } catch {
    ch.close();
  }
}
