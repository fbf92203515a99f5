// Attributes as the protocol decodes them (the store's Attr: numbers) in the form the FUSE layer
// writes into replies (64-bit fields as bigints).
import type { Attr } from '../posix/types.js';
import type { FuseAttr } from './fuse/fs.js';

export function fuseAttr(a: Attr): FuseAttr {
  return {
    ino: BigInt(a.ino), mode: a.mode, nlink: a.nlink, uid: a.uid, gid: a.gid, rdev: a.rdev, size: BigInt(a.size), blocks: BigInt(a.blocks),
    atime: a.atime, mtime: a.mtime, ctime: a.ctime,
  };
}
