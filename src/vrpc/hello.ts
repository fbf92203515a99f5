// The handshake: the client's first message is ['prism-vrpc', version, vm name, token]; the host
// answers ['ok', version] or ['error', code, message] and closes.
import { PrismError } from '../errors.js';
import { controlErrorOf, decodeControl } from '../protocol/codec.js';

export interface Hello { version: number; vm: string; token: string }
export type HelloReply = { ok: true; version: number } | { ok: false; error: PrismError };

export function decodeHello(m: Uint8Array): HelloReply {
  const v = decodeControl(m);
  if (Array.isArray(v) && v[0] === 'ok' && typeof v[1] === 'number') return { ok: true, version: v[1] };
  const error = controlErrorOf(v);
  if (error) return { ok: false, error };
  throw new PrismError('EINVAL', 'malformed handshake reply');
}

export function decodeHelloRequest(m: Uint8Array): Hello {
  const v = decodeControl(m);
  if (!Array.isArray(v) || v.length !== 4 || v[0] !== 'prism-vrpc' || typeof v[1] !== 'number'
    || typeof v[2] !== 'string' || v[2].length > 64 || typeof v[3] !== 'string' || v[3].length > 256) {
    throw new PrismError('EINVAL', 'malformed handshake');
  }
  return { version: v[1], vm: v[2], token: v[3] };
}
