// The file-system API the FUSE session calls (inode-number based, like the kernel's). Methods are
// async and throw PrismError (its .errno becomes the reply's error). Missing methods answer ENOSYS.
// Names, symlink targets and xattr names are byte strings in latin1 form (one char per byte).
/** Seconds and nanoseconds since the epoch. */
export type Time = [number, number];
export interface Attr {
  ino: bigint; size: bigint; blocks: bigint; atime: Time; mtime: Time; ctime: Time;
  mode: number; nlink: number; uid: number; gid: number; rdev: number;
}
export interface Entry { ino: bigint; attr: Attr; generation?: bigint }
/** A directory entry; `entry` (for READDIRPLUS) also looks the child up. */
export interface DirEntry { name: string; ino: bigint; type: number; entry?: Entry }
export interface Ctx { uid: number; gid: number; pid: number }
export interface SetAttrIn { mode?: number; uid?: number; gid?: number; size?: bigint; atime?: Time | 'now'; mtime?: Time | 'now' }
export interface StatFs { blocks: bigint; bfree: bigint; bavail: bigint; files: bigint; ffree: bigint; bsize: number; namelen: number }

export interface FileSystem {
  lookup(ctx: Ctx, parent: bigint, name: string): Promise<Entry>;
  forget?(ino: bigint, nlookup: bigint): void;
  getattr(ctx: Ctx, ino: bigint): Promise<Attr>;
  setattr?(ctx: Ctx, ino: bigint, set: SetAttrIn): Promise<Attr>;
  readlink?(ctx: Ctx, ino: bigint): Promise<string>;
  symlink?(ctx: Ctx, parent: bigint, name: string, target: string): Promise<Entry>;
  mknod?(ctx: Ctx, parent: bigint, name: string, mode: number, rdev: number): Promise<Entry>;
  mkdir?(ctx: Ctx, parent: bigint, name: string, mode: number): Promise<Entry>;
  unlink?(ctx: Ctx, parent: bigint, name: string): Promise<void>;
  rmdir?(ctx: Ctx, parent: bigint, name: string): Promise<void>;
  rename?(ctx: Ctx, parent: bigint, name: string, newParent: bigint, newName: string, flags: number): Promise<void>;
  link?(ctx: Ctx, ino: bigint, newParent: bigint, newName: string): Promise<Entry>;
  open?(ctx: Ctx, ino: bigint, flags: number): Promise<bigint>;
  create?(ctx: Ctx, parent: bigint, name: string, mode: number, flags: number): Promise<{ entry: Entry; fh: bigint }>;
  /** Read; the data goes to `send`, called once and synchronously (it may be a view of shared memory). */
  read?(ctx: Ctx, ino: bigint, fh: bigint, offset: bigint, size: number, send: (data: Uint8Array) => void): Promise<void>;
  write?(ctx: Ctx, ino: bigint, fh: bigint, offset: bigint, data: Uint8Array): Promise<number>;
  flush?(ctx: Ctx, ino: bigint, fh: bigint): Promise<void>;
  release?(ctx: Ctx, ino: bigint, fh: bigint): Promise<void>;
  fsync?(ctx: Ctx, ino: bigint, fh: bigint, datasync: boolean): Promise<void>;
  opendir?(ctx: Ctx, ino: bigint): Promise<bigint>;
  /** The whole listing, "." and ".." included; with `plus`, entries carry attributes (READDIRPLUS). */
  readdir?(ctx: Ctx, ino: bigint, fh: bigint, plus: boolean): Promise<DirEntry[]>;
  /** The kernel took an entry from READDIRPLUS: count it as a lookup. */
  remember?(entry: Entry): void;
  releasedir?(ctx: Ctx, ino: bigint, fh: bigint): Promise<void>;
  statfs?(ctx: Ctx, ino: bigint): Promise<StatFs>;
  access?(ctx: Ctx, ino: bigint, mask: number): Promise<void>;
  getxattr?(ctx: Ctx, ino: bigint, name: string): Promise<Buffer>;
  listxattr?(ctx: Ctx, ino: bigint): Promise<string[]>;
  setxattr?(ctx: Ctx, ino: bigint, name: string, value: Buffer, flags: number): Promise<void>;
  removexattr?(ctx: Ctx, ino: bigint, name: string): Promise<void>;
  fallocate?(ctx: Ctx, ino: bigint, fh: bigint, offset: bigint, length: bigint, mode: number): Promise<void>;
  /** SEEK_DATA (3) / SEEK_HOLE (4). */
  lseek?(ctx: Ctx, ino: bigint, fh: bigint, offset: bigint, whence: number): Promise<bigint>;
  copyFileRange?(ctx: Ctx, src: { ino: bigint; fh: bigint; offset: bigint }, dst: { ino: bigint; fh: bigint; offset: bigint }, length: bigint): Promise<number>;
}
