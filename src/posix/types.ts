// The values a file system answers with, as the store holds them and the protocol carries them:
// inode numbers and sizes are numbers (exact up to 2^53), names are bytes. The FUSE layer has its
// own forms (guest-agent/fuse/fs.ts: 64-bit node ids as bigint, names as latin1 strings).

/** A time as [seconds, nanoseconds] since the epoch. */
export type Time = [number, number];

/** What stat(2) reports for an inode, plus its birth time. */
export interface Attr {
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  blocks: number; // 512-byte units
  blksize: number;
  atime: Time;
  mtime: Time;
  ctime: Time;
  btime: Time;
}

/** A SETATTR's changes: absent fields stay; 'now' is the time of the change. */
export interface SetAttr {
  mode?: number; // permission bits only
  uid?: number;
  gid?: number;
  size?: number;
  atime?: Time | 'now';
  mtime?: Time | 'now';
  ctime?: Time;
}

/** A directory entry: the child's inode number and its file type (mode & S_IFMT). */
export interface DirEntry { name: Buffer; ino: number; type: number }

/** What statfs(2) reports for a volume: its quota if it has one, else the store's file system. */
export interface StatFs {
  bsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  namemax: number;
}
