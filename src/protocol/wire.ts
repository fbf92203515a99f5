// Wire forms of the values procedures carry (positional arrays: small and fast to encode).
import type { Attr, SetAttr, Time } from '../posix/types.js';

/** [ino, mode, nlink, uid, gid, rdev, size, blocks, atime s, ns, mtime s, ns, ctime s, ns, btime s, ns] */
export type WireAttr = number[];

export function attrToWire(a: Attr): WireAttr {
  return [a.ino, a.mode, a.nlink, a.uid, a.gid, a.rdev, a.size, a.blocks,
    a.atime[0], a.atime[1], a.mtime[0], a.mtime[1], a.ctime[0], a.ctime[1], a.btime[0], a.btime[1]];
}

export function attrFromWire(w: WireAttr): Attr {
  return {
    ino: w[0], mode: w[1], nlink: w[2], uid: w[3], gid: w[4], rdev: w[5], size: w[6], blocks: w[7], blksize: 65536,
    atime: [w[8], w[9]], mtime: [w[10], w[11]], ctime: [w[12], w[13]], btime: [w[14], w[15]],
  };
}

/** SETATTR changes: [mode, uid, gid, size, atime, mtime]; null = unchanged, true = now, [s, ns] = that time. */
export type WireSetAttr = [number | null, number | null, number | null, number | null, WireTime, WireTime];
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
