// The handshake: the client's first message is ['prism-vrpc', version, vm name, token]; the host
// answers ['ok', version] or ['error', code, message] and closes.
import { PrismError, type PosixCode } from '../errors.js';
import { decodeControl } from '../protocol/codec.js';

export interface Hello { version: number; vm: string; token: string }
export type HelloReply = { ok: true; version: number } | { ok: false; code: PosixCode; message: string };

export function decodeHello(m: Uint8Array): HelloReply {
  const v = decodeControl(m);
  if (Array.isArray(v) && v[0] === 'ok' && typeof v[1] === 'number') return { ok: true, version: v[1] };
  if (Array.isArray(v) && v[0] === 'error' && typeof v[1] === 'string' && typeof v[2] === 'string') return { ok: false, code: v[1] as PosixCode, message: v[2] };
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
