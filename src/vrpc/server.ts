// The server side of VRPC over any channel: decode, dispatch, reply. A message that does not decode
// gets no reply and counts against the peer; too many and the channel is closed.
import { decodeRequest, encodeResponse, encodeResponseParts, errorResponse, type Request } from '../protocol/codec.js';
import type { Channel } from './channel.js';

/** Runs a request. Byte strings in its result need only stay valid until the reply is sent. */
export type Handler = (proc: number, args: unknown[]) => unknown[];

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
    let reply;
    try {
      const result = handler(req.proc, req.args);
      const parts = encodeResponseParts(req.id, result);
      if (parts) {
        ch.sendParts(parts);
        return;
      }
      reply = { id: req.id, errno: 0, result };
    } catch (e) {
      reply = errorResponse(req.id, e);
    }
    ch.send(encodeResponse(reply));
  });
}
