// Wire forms of the values procedures carry: positional arrays (small and fast to encode), laid out
// as docs/protocol.md says. Code on either side uses the named forms (Attr, SetAttr, DirEntry); this
// file is the one place that knows the positions.
import { PrismError } from '../errors.js';
import type { Attr, DirEntry, SetAttr, Time } from '../posix/types.js';

/** An inode's attributes on the wire; read it with attrFromWire, never by index. */
export type WireAttr = [
  ino: number, mode: number, nlink: number, uid: number, gid: number, rdev: number, size: number, blocks: number,
  atimeS: number, atimeNs: number, mtimeS: number, mtimeNs: number, ctimeS: number, ctimeNs: number, btimeS: number, btimeNs: number,
];

/** The block size a decoded Attr reports (the store's block; the wire does not carry it). */
const BLKSIZE = 65536;

export function attrToWire(a: Attr): WireAttr {
  return [a.ino, a.mode, a.nlink, a.uid, a.gid, a.rdev, a.size, a.blocks,
    a.atime[0], a.atime[1], a.mtime[0], a.mtime[1], a.ctime[0], a.ctime[1], a.btime[0], a.btime[1]];
}

export function attrFromWire(w: WireAttr): Attr {
  return {
    ino: w[0], mode: w[1], nlink: w[2], uid: w[3], gid: w[4], rdev: w[5], size: w[6], blocks: w[7], blksize: BLKSIZE,
    atime: [w[8], w[9]], mtime: [w[10], w[11]], ctime: [w[12], w[13]], btime: [w[14], w[15]],
  };
}

/** SETATTR changes: [mode, uid, gid, size, atime, mtime]; null = unchanged, true = now, [s, ns] = that time. */
export type WireSetAttr = [mode: number | null, uid: number | null, gid: number | null, size: number | null, atime: WireTime, mtime: WireTime];
export type WireTime = null | true | [number, number];

export function setAttrToWire(s: SetAttr): WireSetAttr {
  const t = (x: Time | 'now' | undefined): WireTime => (x === undefined ? null : x === 'now' ? true : [x[0], x[1]]);
  return [s.mode ?? null, s.uid ?? null, s.gid ?? null, s.size ?? null, t(s.atime), t(s.mtime)];
}

export function setAttrFromWire(w: WireSetAttr): SetAttr {
  const t = (x: WireTime): Time | 'now' | undefined => (x === null ? undefined : x === true ? 'now' : [x[0], x[1]]);
  const s: SetAttr = {};
  if (w[0] !== null) s.mode = w[0];
  if (w[1] !== null) s.uid = w[1];
  if (w[2] !== null) s.gid = w[2];
  if (w[3] !== null) s.size = w[3];
  const at = t(w[4]), mt = t(w[5]);
  if (at !== undefined) s.atime = at;
  if (mt !== undefined) s.mtime = mt;
  return s;
}

/** Whether a SETATTR changes the size (a truncation: it changes data, not only attributes). */
export function setsSize(w: WireSetAttr): boolean {
  return w[3] !== null;
}

/** A READDIR entry: [name, ino, type] (type: the S_IFMT bits >> 12). */
export type WireDirent = [name: Uint8Array, ino: number, type: number];
/** A READDIRPLUS entry: [name, fh, attr]. */
export type WireDirentPlus = [name: Uint8Array, fh: Uint8Array, attr: WireAttr];
/** A READDIRPLUS entry, decoded. */
export interface DirEntryPlus { name: Buffer; fh: Buffer; attr: Attr }

export function direntToWire(e: DirEntry): WireDirent {
  return [e.name, e.ino, e.type];
}

/** Copies the name (it may be a view of shared memory). */
export function direntFromWire(w: WireDirent): DirEntry {
  return { name: Buffer.from(w[0]), ino: w[1], type: w[2] };
}

/** Copies the byte strings (they may be views of shared memory). */
export function direntPlusFromWire(w: WireDirentPlus): DirEntryPlus {
  return { name: Buffer.from(w[0]), fh: Buffer.from(w[1]), attr: attrFromWire(w[2]) };
}

/** The write verifier's length (NFSv3's writeverf3). */
export const VERIFIER_BYTES = 8;

/** A verifier from a WRITE or COMMIT reply, copied; a host that sends none cannot promise anything. */
export function verifierFromWire(x: unknown): Buffer {
  if (!(x instanceof Uint8Array) || x.length !== VERIFIER_BYTES) throw new PrismError('EIO', 'the host sent no write verifier');
  return Buffer.from(x);
}
