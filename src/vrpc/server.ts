// The server side of VRPC over any channel: decode, dispatch, reply. A message that does not decode
// gets no reply and counts against the peer; too many and the channel is closed.
import { decodeRequest, encodeResponse, encodeResponseParts, errorResponse, type Request } from '../protocol/codec.js';
import type { Channel } from './channel.js';

/**
 * Runs a request. Byte strings in its result need only stay valid until the reply is sent. A promise
 * defers the reply (requests after it are served meanwhile; replies carry their call ids).
 */
export type Handler = (proc: number, args: unknown[]) => unknown[] | Promise<unknown[]>;

/**
 * Counts a peer's requests for its resource budget (src/host/budget.ts decides what to do with them).
 * begin() when a request is taken, end() once its reply is queued (or it can have none).
 */
export interface ServeBudget {
  begin(): void;
  end(): void;
  /** How long the request held the event loop (ms): decode, handler, reply when it is not deferred. */
  spent(proc: number, ms: number): void;
}

/** The procedure number a control message (hello) is counted under. */
const CONTROL = -1;

export interface ServeOptions {
  /** Malformed messages tolerated before the channel is closed. */
  maxGarbage?: number;
  onGarbage?(err: Error): void;
  /** A message that is not a request: return true if it was a control message (a new handshake). */
  onControl?(m: Uint8Array): boolean;
  onRequest?(req: Request): void;
  budget?: ServeBudget;
}

export function serveChannel(ch: Channel, handler: Handler, opts: ServeOptions = {}): void {
  let garbage = 0;
  const maxGarbage = opts.maxGarbage ?? 16;
  const budget = opts.budget;
  ch.onMessage((m) => {
    const t0 = budget ? performance.now() : 0;
    let req: Request;
    try {
      req = decodeRequest(m);
    } catch (e) {
      // A control message (a hello) is answered too: it counts against the budget like a request, or
      // a guest could queue replies without limit by sending nothing but hellos.
      budget?.begin();
      let control = false;
      try { control = opts.onControl?.(m) ?? false; } finally {
        budget?.spent(CONTROL, performance.now() - t0);
        budget?.end();
      }
      if (control) return;
      opts.onGarbage?.(e as Error);
      if (++garbage > maxGarbage) ch.close();
      return;
    }
    opts.onRequest?.(req);
    budget?.begin();
    let result;
    try {
      result = handler(req.proc, req.args);
    } catch (e) {
      result = e instanceof Error ? e : new Error(String(e));
    }
    if (result instanceof Promise) {
      budget?.spent(req.proc, performance.now() - t0);
      // Deferred: in flight (and counted) until it settles.
      result.then((r: unknown[]) => reply(ch, req.id, r), (e: unknown) => reply(ch, req.id, e)).finally(() => budget?.end());
    } else {
      reply(ch, req.id, result);
      budget?.spent(req.proc, performance.now() - t0); // decode, run and reply: the time it held the loop
      budget?.end();
    }
  });
}

/** Send a result or an error; never throws (a reply that cannot be encoded or sent becomes an error reply). */
function reply(ch: Channel, id: number, result: unknown[] | unknown): void {
  try {
    if (!Array.isArray(result)) throw result;
    const parts = encodeResponseParts(id, result);
    if (parts) ch.sendParts(parts);
    else ch.send(encodeResponse({ id, errno: 0, result }));
  } catch (e) {
    try { ch.send(encodeResponse(errorResponse(id, e))); } catch { ch.close(); /* it cannot take even an error reply */ }
  }
}
