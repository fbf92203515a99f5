// The Linux FUSE kernel protocol (include/uapi/linux/fuse.h): opcodes, wire structs, encoders.
import os from 'node:os';
import type { Entry, FuseAttr, FuseDirEntry } from './fs.js';

export const KERNEL_MAJOR = 7;
export const KERNEL_MINOR = 31;
export const MAX_WRITE = 1 << 20;
export const IN_HEADER = 40;
export const OUT_HEADER = 16;
export const BUFFER_SIZE = MAX_WRITE + 4096;

export const Op = {
  LOOKUP: 1, FORGET: 2, GETATTR: 3, SETATTR: 4, READLINK: 5, SYMLINK: 6, MKNOD: 8, MKDIR: 9, UNLINK: 10,
  RMDIR: 11, RENAME: 12, LINK: 13, OPEN: 14, READ: 15, WRITE: 16, STATFS: 17, RELEASE: 18, FSYNC: 20,
  SETXATTR: 21, GETXATTR: 22, LISTXATTR: 23, REMOVEXATTR: 24, FLUSH: 25, INIT: 26, OPENDIR: 27, READDIR: 28,
  RELEASEDIR: 29, FSYNCDIR: 30, ACCESS: 34, CREATE: 35, INTERRUPT: 36, DESTROY: 38, BATCH_FORGET: 42,
  FALLOCATE: 43, READDIRPLUS: 44, RENAME2: 45, LSEEK: 46, COPY_FILE_RANGE: 47,
} as const;

export const InitFlag = {
  ASYNC_READ: 1, ATOMIC_O_TRUNC: 1 << 3, BIG_WRITES: 1 << 5, DO_READDIRPLUS: 1 << 13,
  AUTO_INVAL_DATA: 1 << 12, READDIRPLUS_AUTO: 1 << 14, ASYNC_DIO: 1 << 15, WRITEBACK_CACHE: 1 << 16,
  PARALLEL_DIROPS: 1 << 18, MAX_PAGES: 1 << 22, NO_OPENDIR_SUPPORT: 1 << 24, HANDLE_KILLPRIV_V2: 1 << 28,
} as const;
/** "This caller's write, truncation or open(O_TRUNC) drops set-id bits" (with HANDLE_KILLPRIV_V2). */
export const WRITE_KILL_SUIDGID = 1 << 2;
export const OPEN_KILL_SUIDGID = 1;

/** fuse_open_out.open_flags: KEEP_CACHE keeps the node's cached pages at open; CACHE_DIR lets the kernel cache a directory's listing in them. */
export const FOPEN = { KEEP_CACHE: 1 << 1, CACHE_DIR: 1 << 3 } as const;

/**
 * SETATTR's valid bits. CTIME comes only with the writeback cache (the kernel writing back the times it
 * kept): the host sets ctime to the time of any SETATTR itself, so it needs no field of its own.
 */
export const FATTR = { MODE: 1, UID: 2, GID: 4, SIZE: 8, ATIME: 16, MTIME: 32, FH: 64, ATIME_NOW: 128, MTIME_NOW: 256, CTIME: 1 << 10, KILL_SUIDGID: 1 << 11 } as const;

export interface InHeader { len: number; opcode: number; unique: bigint; nodeid: bigint; uid: number; gid: number; pid: number }

export function decodeInHeader(b: Buffer): InHeader {
  return {
    len: b.readUInt32LE(0), opcode: b.readUInt32LE(4), unique: b.readBigUInt64LE(8), nodeid: b.readBigUInt64LE(16),
    uid: b.readUInt32LE(24), gid: b.readUInt32LE(28), pid: b.readUInt32LE(32),
  };
}

/** A reply's out header (len, -errno, unique); the body follows it in the same write. */
export function encodeOutHeader(unique: bigint, errno: number, bodyLength: number): Buffer {
  const out = Buffer.allocUnsafe(OUT_HEADER);
  out.writeUInt32LE(OUT_HEADER + bodyLength, 0);
  out.writeInt32LE(errno === 0 ? 0 : -Math.abs(errno), 4);
  out.writeBigUInt64LE(unique, 8);
  return out;
}

/**
 * C string at `off`; returns it and the offset after its NUL. Names are bytes to the kernel, not
 * text: they are carried as latin1 strings (one char per byte), so any name survives unchanged.
 */
export function cstring(b: Buffer, off: number): [string, number] {
  const end = b.indexOf(0, off);
  const e = end < 0 ? b.length : end;
  return [b.toString('latin1', off, e), e + 1];
}

export const ATTR_SIZE = 88;
export function writeAttr(b: Buffer, o: number, a: FuseAttr): void {
  b.writeBigUInt64LE(a.ino, o); b.writeBigUInt64LE(a.size, o + 8); b.writeBigUInt64LE(a.blocks, o + 16);
  b.writeBigInt64LE(BigInt(a.atime[0]), o + 24); b.writeBigInt64LE(BigInt(a.mtime[0]), o + 32); b.writeBigInt64LE(BigInt(a.ctime[0]), o + 40);
  b.writeUInt32LE(a.atime[1], o + 48); b.writeUInt32LE(a.mtime[1], o + 52); b.writeUInt32LE(a.ctime[1], o + 56);
  b.writeUInt32LE(a.mode, o + 60); b.writeUInt32LE(a.nlink, o + 64); b.writeUInt32LE(a.uid, o + 68);
  b.writeUInt32LE(a.gid, o + 72); b.writeUInt32LE(a.rdev, o + 76); b.writeUInt32LE(4096, o + 80); b.writeUInt32LE(0, o + 84);
}

/** How long the kernel may cache entries and attributes (seconds; 0 = ask every time). */
export interface CacheTimes { entrySec: number; attrSec: number }

export const ENTRY_OUT = 40 + ATTR_SIZE;
export function encodeEntry(e: Entry, t: CacheTimes): Buffer {
  const b = Buffer.alloc(ENTRY_OUT);
  writeEntry(b, 0, e, t);
  return b;
}
/** A LOOKUP answered "absent" that the kernel may cache for the entry timeout (nodeid 0: a negative dentry). */
export function encodeNegativeEntry(t: CacheTimes): Buffer {
  const b = Buffer.alloc(ENTRY_OUT);
  writeValid(b, 16, t.entrySec); writeValid(b, 32, t.entrySec, true);
  return b;
}
/** fuse_entry_out; nodeid 0 tells the kernel to count no lookup (used for "." and ".."). */
function writeEntry(b: Buffer, o: number, e: Entry, t: CacheTimes): void {
  b.writeBigUInt64LE(e.ino, o); b.writeBigUInt64LE(e.generation ?? 0n, o + 8);
  writeValid(b, o + 16, t.entrySec); writeValid(b, o + 24, t.attrSec);
  writeValid(b, o + 32, t.entrySec, true); writeValid(b, o + 36, t.attrSec, true);
  writeAttr(b, o + 40, e.attr);
}
/** A cache time as whole seconds (u64) or the nanosecond part (u32). */
function writeValid(b: Buffer, o: number, sec: number, nsec = false): void {
  if (nsec) b.writeUInt32LE(Math.round((sec % 1) * 1e9) % 1e9, o);
  else b.writeBigUInt64LE(BigInt(Math.floor(sec)), o);
}
export function encodeAttrOut(a: FuseAttr, t: CacheTimes): Buffer {
  const b = Buffer.alloc(16 + ATTR_SIZE);
  const valid = a.validSec ?? t.attrSec;
  writeValid(b, 0, valid); writeValid(b, 8, valid, true);
  writeAttr(b, 16, a);
  return b;
}
/** fuse_write_out and fuse_getxattr_out: a u32 count, then padding. */
export function encodeCount(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(n, 0);
  return b;
}
/** fuse_lseek_out: the offset. */
export function encodeOffset(off: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(off, 0);
  return b;
}
export function encodeOpenOut(fh: bigint, openFlags = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(fh, 0); b.writeUInt32LE(openFlags, 8);
  return b;
}
/** `extra`: flags wanted beyond the defaults (taken only if the kernel offers them). */
export function encodeInitOut(kernelFlags: number, extra = 0): Buffer {
  const b = Buffer.alloc(64);
  const want = extra | InitFlag.ASYNC_READ | InitFlag.ATOMIC_O_TRUNC | InitFlag.BIG_WRITES | InitFlag.PARALLEL_DIROPS | InitFlag.MAX_PAGES
    | InitFlag.DO_READDIRPLUS | InitFlag.READDIRPLUS_AUTO;
  b.writeUInt32LE(KERNEL_MAJOR, 0); b.writeUInt32LE(KERNEL_MINOR, 4); b.writeUInt32LE(MAX_WRITE, 8);
  b.writeUInt32LE((kernelFlags & want) >>> 0, 12);
  b.writeUInt16LE(64, 16); b.writeUInt16LE(48, 18); b.writeUInt32LE(MAX_WRITE, 20); b.writeUInt32LE(1, 24);
  b.writeUInt16LE(MAX_WRITE / 4096, 28);
  return b;
}
/** The bytes one fuse_dirent (or fuse_direntplus) of a name of `nameLength` bytes takes, padded to 8. */
export function direntSize(nameLength: number, plus: boolean): number {
  return ((plus ? ENTRY_OUT : 0) + 24 + nameLength + 7) & ~7;
}
/**
 * A READDIR(PLUS) reply in one buffer: `n` entries from `start`, each at its position (the offset a
 * next READDIR resumes from), as fuse_dirent or, with `plus`, fuse_direntplus ("." and ".." carry no
 * entry: nodeid 0, no lookup counted).
 */
export function encodeDirents(entries: readonly FuseDirEntry[], positions: readonly number[], start: number, n: number, plus: boolean, t: CacheTimes): Buffer {
  let size = 0;
  for (let i = start; i < start + n; i++) size += direntSize(entries[i]!.name.length, plus);
  const b = Buffer.alloc(size);
  let o = 0;
  for (let i = start; i < start + n; i++) {
    const e = entries[i]!;
    if (plus) {
      if (e.entry && e.name !== '.' && e.name !== '..') writeEntry(b, o, e.entry, t);
      o += ENTRY_OUT;
    }
    b.writeBigUInt64LE(e.ino, o); b.writeBigUInt64LE(BigInt(positions[i]!), o + 8);
    b.writeUInt32LE(e.name.length, o + 16); b.writeUInt32LE(e.type, o + 20);
    b.write(e.name, o + 24, 'latin1');
    o += direntSize(e.name.length, false);
  }
  return b;
}
export function encodeStatfs(s: { blocks: bigint; bfree: bigint; bavail: bigint; files: bigint; ffree: bigint; bsize: number; namelen: number }): Buffer {
  const b = Buffer.alloc(80);
  b.writeBigUInt64LE(s.blocks, 0); b.writeBigUInt64LE(s.bfree, 8); b.writeBigUInt64LE(s.bavail, 16);
  b.writeBigUInt64LE(s.files, 24); b.writeBigUInt64LE(s.ffree, 32); b.writeUInt32LE(s.bsize, 40);
  b.writeUInt32LE(s.namelen, 44); b.writeUInt32LE(s.bsize, 48);
  return b;
}

// Notifications: messages the file system writes to /dev/fuse unasked (unique 0, the code in the
// error field), telling the kernel to drop what it cached.
const NOTIFY_INVAL_INODE = 2;
const NOTIFY_INVAL_ENTRY = 3;
const NOTIFY_INC_EPOCH = 8;
const NOTIFY_PRUNE = 9;
/** Node ids per FUSE_NOTIFY_PRUNE message (the kernel reads them into one page). */
export const PRUNE_MAX = 256;

function notifyHeader(code: number, bodyLength: number): Buffer {
  const out = Buffer.alloc(OUT_HEADER + bodyLength);
  out.writeUInt32LE(OUT_HEADER + bodyLength, 0);
  out.writeInt32LE(code, 4);
  return out;
}

/** Forget a node's attributes; with `pages`, also its cached data (offset 0, length 0: all of it). */
export function encodeInvalInode(node: bigint, pages: boolean): Buffer {
  const b = notifyHeader(NOTIFY_INVAL_INODE, 24);
  b.writeBigUInt64LE(node, OUT_HEADER);
  b.writeBigInt64LE(pages ? 0n : -1n, OUT_HEADER + 8);
  b.writeBigInt64LE(0n, OUT_HEADER + 16);
  return b;
}

/**
 * Make every name the kernel cached stale at once (FUSE_NOTIFY_INC_EPOCH, Linux 6.16 and later: each is
 * looked up again before use). Older kernels refuse it with EINVAL.
 */
export function encodeIncEpoch(): Buffer {
  return notifyHeader(NOTIFY_INC_EPOCH, 0);
}

/** Forget a name in a directory (positive or negative dentry). */
export function encodeInvalEntry(parent: bigint, name: Uint8Array): Buffer {
  const b = notifyHeader(NOTIFY_INVAL_ENTRY, 16 + name.length + 1);
  b.writeBigUInt64LE(parent, OUT_HEADER);
  b.writeUInt32LE(name.length, OUT_HEADER + 8);
  b.set(name, OUT_HEADER + 16);
  return b;
}

/**
 * The kernel release the agent goes by: os.release(), or PRISM_KERNEL_RELEASE (tests run an agent as
 * on an older guest kernel with it).
 */
export function kernelRelease(): string {
  return process.env.PRISM_KERNEL_RELEASE || os.release();
}

/**
 * Whether a kernel of this release takes FUSE_NOTIFY_PRUNE (Linux 6.18): known before INIT. Read from
 * the release string, so a backport is not seen (the agent then tells the host that its kernel keeps
 * file sizes, and no other VM may attach the volume: the safe side).
 */
export function kernelTakesPrune(release: string): boolean {
  return releaseAtLeast(release, 6, 18);
}

/**
 * Whether a kernel of this release writes a file's dirty pages back at close, and waits for them,
 * even once FLUSH is answered ENOSYS (Linux 5.8, "fuse: always flush dirty data on close(2)"; before,
 * `no_flush` skipped the writeback too).
 */
export function kernelWritesBackWithoutFlush(release: string): boolean {
  return releaseAtLeast(release, 5, 8);
}

function releaseAtLeast(release: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m !== null && (Number(m[1]) > major || (Number(m[1]) === major && Number(m[2]) >= minor));
}

/**
 * Ask the kernel to drop the nodes' unused dentries, and so the nodes themselves when nothing else holds
 * them (FUSE_NOTIFY_PRUNE, protocol 7.45, Linux 6.18 and later; older kernels refuse it with EINVAL).
 * With the writeback cache it is the only way to make the kernel take a size or mtime from the file
 * system again: it trusts its own for a node it keeps. At most PRUNE_MAX ids.
 */
export function encodePrune(nodes: readonly bigint[]): Buffer {
  const b = notifyHeader(NOTIFY_PRUNE, 16 + 8 * nodes.length);
  b.writeUInt32LE(nodes.length, OUT_HEADER);
  nodes.forEach((n, i) => b.writeBigUInt64LE(n, OUT_HEADER + 16 + 8 * i));
  return b;
}
