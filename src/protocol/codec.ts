// Frames: a request is the CBOR array [id, proc, args]; a response is [id, errno, result] where errno 0
// means success and result holds the procedure's results, else result is a message string.
// Decoding never trusts its input: size is bounded first, then the shape is checked (validate.ts).
import { Encoder } from 'cbor-x';
import { PrismError, errnoOf, fromName, fromNodeError, fromWire } from '../errors.js';
import { MAX_MESSAGE } from './procs.js';

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false, useFloat32: 0 });

export interface Request { id: number; proc: number; args: unknown[] }
export interface Response { id: number; errno: number; result: unknown[] | string }

export function encode(value: unknown): Buffer {
  return cbor.encode(value);
}

/** Decode one frame; anything malformed is an EINVAL PrismError, never another exception. */
function decodeFrame(bytes: Uint8Array): unknown[] {
  if (bytes.length > MAX_MESSAGE) throw new PrismError('E2BIG', `message of ${bytes.length} bytes exceeds ${MAX_MESSAGE}`);
  let v: unknown;
  try {
    v = cbor.decode(bytes);
  } catch (e) {
    throw new PrismError('EINVAL', `malformed message: ${(e as Error).message}`);
  }
  if (!Array.isArray(v) || v.length !== 3) throw new PrismError('EINVAL', 'a message is a 3-element array');
  return v;
}

const isId = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;

export function encodeRequest(r: Request): Buffer {
  return encode([r.id, r.proc, r.args]);
}

export function decodeRequest(bytes: Uint8Array): Request {
  const [id, proc, args] = decodeFrame(bytes);
  if (!isId(id) || !isId(proc) || !Array.isArray(args)) throw new PrismError('EINVAL', 'bad request header');
  return { id, proc, args };
}

export function encodeResponse(r: Response): Buffer {
  return encode([r.id, r.errno, r.result]);
}

export function decodeResponse(bytes: Uint8Array): Response {
  const [id, errno, result] = decodeFrame(bytes);
  if (!isId(id) || !isId(errno)) throw new PrismError('EINVAL', 'bad response header');
  if (errno === 0 ? !Array.isArray(result) : typeof result !== 'string') throw new PrismError('EINVAL', 'bad response body');
  return { id, errno, result: result as unknown[] | string };
}

export function errorResponse(id: number, e: unknown): Response {
  if (e instanceof PrismError) return { id, errno: e.errno, result: e.message };
  return { id, errno: errnoOf('EIO'), result: `internal error: ${(e as Error)?.message ?? String(e)}` };
}

/** The error a failed response stands for, with its POSIX code. */
export function responseError(r: Response): PrismError {
  return fromWire(r.errno, typeof r.result === 'string' ? r.result : 'remote error');
}

/**
 * The error form of the control messages (handshake, admin socket): ['error', code name, detail].
 * Names, where VRPC replies carry numbers: these are few, and read by people in traces too.
 */
export function controlError(e: unknown): ['error', string, string] {
  const p = fromNodeError(e);
  return ['error', p.code, p.detail];
}

/** The PrismError of a control message ['error', name, detail]; null if it is not one. */
export function controlErrorOf(v: unknown): PrismError | null {
  if (!Array.isArray(v) || v[0] !== 'error' || typeof v[1] !== 'string' || typeof v[2] !== 'string') return null;
  return fromName(v[1], v[2]);
}

/** Decode a control message (the handshake: small; the admin socket's: up to maxBytes); anything malformed is EINVAL. */
export function decodeControl(m: Uint8Array, maxBytes = 4096): unknown {
  if (m.length > maxBytes) throw new PrismError('EINVAL', 'control message too large');
  try { return cbor.decode(m); } catch (e) { throw new PrismError('EINVAL', `malformed message: ${(e as Error).message}`); }
}

/** Replies whose first result is a byte string at least this long are sent as parts. */
export const LARGE_RESULT = 4096;

/**
 * A successful reply whose first result is a large byte string (READ data, say), as parts, so the
 * bytes are copied once, straight into the channel: the CBOR of [id, 0, [bytes, ...rest]] written
 * by hand around them. Null when the reply is small; encode it with encodeResponse.
 */
export function encodeResponseParts(id: number, result: unknown[]): Uint8Array[] | null {
  const data = result[0];
  if (!(data instanceof Uint8Array) || data.byteLength < LARGE_RESULT || result.length >= 24) return null;
  const n = data.byteLength;
  const bytesHead = n < 65536 ? [0x59, n >> 8, n & 0xff] : [0x5a, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
  const prefix = Buffer.concat([Buffer.from([0x83]), cbor.encode(id), Buffer.from([0x00, 0x80 | result.length, ...bytesHead])]);
  return [prefix, data, ...result.slice(1).map((v) => cbor.encode(v))];
}
