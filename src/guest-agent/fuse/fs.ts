// The file-system API the FUSE session calls (inode-number based, like the kernel's). Methods are
// async and throw PrismError (its .errno becomes the reply's error). A missing method answers as its
// comment says: ENOSYS for those marked "Required for ..."; the others have a default that succeeds.
// Opcodes the session does not handle at all answer ENOSYS.
// Names, symlink targets and xattr names are byte strings in latin1 form (one char per byte).
//
// The values here are the FUSE forms, not the store's (src/posix/types.ts): node ids, sizes and block
// counts are u64 on the FUSE wire, so bigint, and names are strings the session slices from the
// request without copying. Converting them to the store's forms would cost every request.
import type { Time } from '../../posix/types.js';

/** What the kernel caches for a node (struct fuse_attr); no birth time. */
export interface FuseAttr {
  ino: bigint; size: bigint; blocks: bigint; atime: Time; mtime: Time; ctime: Time;
  mode: number; nlink: number; uid: number; gid: number; rdev: number;
  /** How long the kernel may cache these (seconds); default: the mount's attribute timeout. */
  validSec?: number;
}
export interface Entry { ino: bigint; attr: FuseAttr; generation?: bigint }
/** A directory entry; `entry` (for READDIRPLUS) also looks the child up. */
export interface FuseDirEntry { name: string; ino: bigint; type: number; entry?: Entry }
export interface Ctx { uid: number; gid: number; pid: number }
/** A SETATTR's changes as the kernel sends them: absent fields stay; 'now' is the time of the change. */
export interface FuseSetAttr {
  mode?: number; uid?: number; gid?: number; size?: bigint; atime?: Time | 'now'; mtime?: Time | 'now';
  /** Only with the writeback cache: the ctime the kernel kept for the file (the host sets its own). */
  ctime?: Time;
  /**
   * A truncation by a caller without CAP_FSETID of a set-id file (FATTR_KILL_SUIDGID): drop the set-id
   * bits too. Only from a file system that `killsPrivileges`.
   */
  killSuidgid?: boolean;
}
/** struct fuse_kstatfs, as STATFS answers. */
export interface FuseStatFs { blocks: bigint; bfree: bigint; bavail: bigint; files: bigint; ffree: bigint; bsize: number; namelen: number }

export interface FileSystem {
  /**
   * The file system drops set-id bits and security.capability itself on write, truncate and chown
   * (FUSE_HANDLE_KILLPRIV_V2): the kernel then tells it when a caller's write or truncation must drop
   * set-id bits, and stops asking GETXATTR security.capability before every write.
   */
  readonly killsPrivileges?: boolean;
  lookup(ctx: Ctx, parent: bigint, name: string): Promise<Entry>;
  /** The kernel dropped `nlookup` lookups of a node. Default: nothing is counted. */
  forget?(ino: bigint, nlookup: bigint): void;
  getattr(ctx: Ctx, ino: bigint): Promise<FuseAttr>;
  /** Required for chmod, chown, truncate, utimes (else ENOSYS). */
  setattr?(ctx: Ctx, ino: bigint, set: FuseSetAttr): Promise<FuseAttr>;
  /** Required for readlink (else ENOSYS). */
  readlink?(ctx: Ctx, ino: bigint): Promise<string>;
  /** Required for symlink (else ENOSYS). */
  symlink?(ctx: Ctx, parent: bigint, name: string, target: string): Promise<Entry>;
  /** Required for mknod (else ENOSYS). */
  mknod?(ctx: Ctx, parent: bigint, name: string, mode: number, rdev: number): Promise<Entry>;
  /** Required for mkdir (else ENOSYS). */
  mkdir?(ctx: Ctx, parent: bigint, name: string, mode: number): Promise<Entry>;
  /** Required for unlink (else ENOSYS). */
  unlink?(ctx: Ctx, parent: bigint, name: string): Promise<void>;
  /** Required for rmdir (else ENOSYS). */
  rmdir?(ctx: Ctx, parent: bigint, name: string): Promise<void>;
  /** Required for rename (else ENOSYS). */
  rename?(ctx: Ctx, parent: bigint, name: string, newParent: bigint, newName: string, flags: number): Promise<void>;
  /** Required for link (else ENOSYS). */
  link?(ctx: Ctx, ino: bigint, newParent: bigint, newName: string): Promise<Entry>;
  /** Returns a file handle. Default: succeeds with handle 0. `killSuidgid`: with O_TRUNC, as for SETATTR (FUSE_OPEN_KILL_SUIDGID). */
  open?(ctx: Ctx, ino: bigint, flags: number, killSuidgid?: boolean): Promise<bigint>;
  /** Required for creating files with open(O_CREAT) (else ENOSYS). */
  create?(ctx: Ctx, parent: bigint, name: string, mode: number, flags: number, killSuidgid?: boolean): Promise<{ entry: Entry; fh: bigint }>;
  /**
   * Read; the data goes to `send`, called once and synchronously (it may be a view of shared memory).
   * Required for read (else ENOSYS).
   */
  read?(ctx: Ctx, ino: bigint, fh: bigint, offset: bigint, size: number, send: (data: Uint8Array) => void): Promise<void>;
  /** Required for write (else ENOSYS). `killSuidgid`: as for open and SETATTR (FUSE_WRITE_KILL_SUIDGID). */
  write?(ctx: Ctx, ino: bigint, fh: bigint, offset: bigint, data: Uint8Array, killSuidgid?: boolean): Promise<number>;
  /** Default: succeeds. */
  flush?(ctx: Ctx, ino: bigint, fh: bigint): Promise<void>;
  /** Default: succeeds. */
  release?(ctx: Ctx, ino: bigint, fh: bigint): Promise<void>;
  /** FSYNC and FSYNCDIR. Default: succeeds (nothing is buffered). */
  fsync?(ctx: Ctx, ino: bigint, fh: bigint, datasync: boolean): Promise<void>;
  /** Returns a directory handle. Default: succeeds with handle 0. */
  opendir?(ctx: Ctx, ino: bigint): Promise<bigint>;
  /**
   * The whole listing, "." and ".." included; with `plus`, entries carry attributes (READDIRPLUS).
   * Required for readdir (else ENOSYS).
   */
  readdir?(ctx: Ctx, ino: bigint, fh: bigint, plus: boolean): Promise<FuseDirEntry[]>;
  /** The kernel took an entry from READDIRPLUS: count it as a lookup. Default: nothing is counted. */
  remember?(entry: Entry): void;
  /** Default: succeeds. */
  releasedir?(ctx: Ctx, ino: bigint, fh: bigint): Promise<void>;
  /** Default: succeeds with zero blocks and files, bsize 4096, namelen 255. */
  statfs?(ctx: Ctx, ino: bigint): Promise<FuseStatFs>;
  /** Default: succeeds (the kernel checks permissions itself: default_permissions). */
  access?(ctx: Ctx, ino: bigint, mask: number): Promise<void>;
  /** Required for getxattr (else ENOSYS). */
  getxattr?(ctx: Ctx, ino: bigint, name: string): Promise<Buffer>;
  /** Required for listxattr (else ENOSYS). */
  listxattr?(ctx: Ctx, ino: bigint): Promise<string[]>;
  /** Required for setxattr (else ENOSYS). */
  setxattr?(ctx: Ctx, ino: bigint, name: string, value: Buffer, flags: number): Promise<void>;
  /** Required for removexattr (else ENOSYS). */
  removexattr?(ctx: Ctx, ino: bigint, name: string): Promise<void>;
  /** Required for fallocate (else ENOSYS). */
  fallocate?(ctx: Ctx, ino: bigint, fh: bigint, offset: bigint, length: bigint, mode: number): Promise<void>;
  /** SEEK_DATA (3) / SEEK_HOLE (4). Required for them (else ENOSYS: the kernel then answers them itself). */
  lseek?(ctx: Ctx, ino: bigint, fh: bigint, offset: bigint, whence: number): Promise<bigint>;
  /** Required for copy_file_range (else ENOSYS: the kernel then copies through read and write). */
  copyFileRange?(ctx: Ctx, src: { ino: bigint; fh: bigint; offset: bigint }, dst: { ino: bigint; fh: bigint; offset: bigint }, length: bigint): Promise<number>;
}
