// The handshake, both sides, whatever the transport: the client's first message is
// ['prism-vrpc', version, vm name, token]; the host answers ['ok', version] or ['error', code name,
// detail] and closes (docs/protocol.md). Clients send it through HelloExchange (over a Channel:
// handshake()); the host judges it with judgeHello and answers with encodeWelcome or encodeRefusal.
import { PrismError, fromNodeError } from '../errors.js';
import { controlError, controlErrorOf, decodeControl, encode } from '../protocol/codec.js';
import { PROTOCOL_VERSION } from '../protocol/procs.js';
import type { Channel } from './channel.js';

export interface Hello { version: number; vm: string; token: string }
export type HelloReply = { ok: true; version: number } | { ok: false; error: PrismError };

function decodeHelloReply(m: Uint8Array): HelloReply {
  const v = decodeControl(m);
  if (Array.isArray(v) && v[0] === 'ok' && typeof v[1] === 'number') return { ok: true, version: v[1] };
  const error = controlErrorOf(v);
  if (error) return { ok: false, error };
  throw new PrismError('EINVAL', 'malformed handshake reply');
}

function decodeHello(m: Uint8Array): Hello {
  const v = decodeControl(m);
  if (!Array.isArray(v) || v.length !== 4 || v[0] !== 'prism-vrpc' || typeof v[1] !== 'number'
    || typeof v[2] !== 'string' || v[2].length > 64 || typeof v[3] !== 'string' || v[3].length > 256) {
    throw new PrismError('EINVAL', 'malformed handshake');
  }
  return { version: v[1], vm: v[2], token: v[3] };
}

/** Whether a message is a handshake reply (a previous client's, left in a shared ring). */
export function isHelloReply(m: Uint8Array): boolean {
  try { decodeHelloReply(m); return true; } catch { return false; }
}

/**
 * The client's side of one handshake, for every client (async over a Channel, or a blocking ring
 * client): send `request`, then give each message read to receive() until it returns true.
 */
export class HelloExchange {
  readonly request: Uint8Array;

  constructor(vm: string, token: string) {
    this.request = encode(['prism-vrpc', PROTOCOL_VERSION, vm, token]);
  }

  /**
   * True once the host welcomed us; false for a message that is no handshake reply (a late reply to
   * a previous client of the same region: skip it); throws the host's refusal.
   */
  receive(m: Uint8Array): boolean {
    let reply: HelloReply;
    try { reply = decodeHelloReply(m); } catch { return false; }
    if (!reply.ok) throw reply.error;
    return true;
  }
}

/** Say hello on a fresh channel and wait for the host's answer. */
export function handshake(ch: Channel, vm: string, token: string, timeoutMs = 10_000): Promise<void> {
  const hello = new HelloExchange(vm, token);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { ch.close(); reject(new PrismError('EIO', 'host did not answer the handshake')); }, timeoutMs);
    ch.onClose((err) => { clearTimeout(timer); reject(err ?? new PrismError('EIO', 'host closed the connection during the handshake')); });
    ch.onMessage((m) => {
      let welcomed: boolean;
      try {
        welcomed = hello.receive(m);
      } catch (e) {
        clearTimeout(timer);
        reject(e);
        ch.close();
        return;
      }
      if (!welcomed) return;
      clearTimeout(timer);
      resolve();
    });
    ch.send(hello.request);
  });
}

/** What the host made of a message it took for a hello. `malformed`: it is no hello at all. */
export type HelloVerdict = { ok: true; hello: Hello } | { ok: false; refusal: PrismError; malformed: boolean };

/**
 * The host's acceptor, for both transports: decode the hello, let the transport vet it (the VM's
 * token over TCP, the region's own VM over shared memory), then check the protocol version. The
 * caller answers with encodeWelcome or encodeRefusal (and may refuse further, e.g. for its budget).
 */
export function judgeHello(m: Uint8Array, vet: (h: Hello) => PrismError | undefined): HelloVerdict {
  let hello: Hello;
  try {
    hello = decodeHello(m);
  } catch (e) {
    return { ok: false, refusal: fromNodeError(e), malformed: true };
  }
  const refusal = vet(hello)
    ?? (hello.version !== PROTOCOL_VERSION ? new PrismError('EINVAL', `protocol version ${hello.version} is not ${PROTOCOL_VERSION}`) : undefined);
  return refusal ? { ok: false, refusal, malformed: false } : { ok: true, hello };
}

export function encodeWelcome(): Uint8Array {
  return encode(['ok', PROTOCOL_VERSION]);
}

/** A refusal as the control messages carry errors: its code's name and its detail. */
export function encodeRefusal(e: PrismError): Uint8Array {
  return encode(controlError(e));
}
