// How a volume is laid out in its copy-on-write trees: keys, inode numbers, records.
// Documented in docs/store-format.md; change FORMAT_VERSION when any of this changes.
import type { Time } from '../posix/types.js';

/**
 * 2: the intent log (log/, `logGen` in meta). 3: its batches of version 2 (records of inodes' times
 * too). A store of an older format is taken and marked 3 when opened to write.
 */
export const FORMAT_VERSION = 3;
/** Formats this version opens: 1 is 2 without a log; 2 is 3 with batches of version 1 only. */
export const FORMATS_READ = [1, 2, 3];

/** Files are cut into fixed, aligned blocks: identical aligned content dedups across files and volumes. */
export const BLOCK_SIZE = 64 * 1024;

/**
 * A volume is an array of layers, each a CoW tree with its own inode numbering. A plain volume has one
 * layer; compose appends the source volumes' layers (shared, not copied). The inode number seen by
 * clients is layer * 2^LAYER_SHIFT + local number, so numbers never change and never collide.
 */
export const LAYER_SHIFT = 40;
export const LAYER_SPAN = 2 ** LAYER_SHIFT;
export const MAX_LAYERS = 2 ** 13;
export const ROOT_LOCAL = 1;

export function inoOf(layer: number, local: number): number {
  return layer * LAYER_SPAN + local;
}
export function layerOf(ino: number): number {
  return Math.floor(ino / LAYER_SPAN);
}
export function localOf(ino: number): number {
  return ino % LAYER_SPAN;
}

// Key = local inode (6 bytes, big-endian) + kind (1 byte) + suffix; so all keys of one inode are adjacent.
export const enum Kind {
  Inode = 1,
  Dirent = 2,
  Block = 3,
  Xattr = 4,
}

function head(local: number, kind: Kind, extra: number): Buffer {
  const b = Buffer.allocUnsafe(7 + extra);
  b.writeUIntBE(local, 0, 6);
  b[6] = kind;
  return b;
}
export function inodeKey(local: number): Buffer {
  return head(local, Kind.Inode, 0);
}
export function direntKey(local: number, name: Buffer): Buffer {
  const b = head(local, Kind.Dirent, name.length);
  name.copy(b, 7);
  return b;
}
export function blockKey(local: number, index: number): Buffer {
  const b = head(local, Kind.Block, 8);
  b.writeUIntBE(0, 7, 2);
  b.writeUIntBE(index, 9, 6);
  return b;
}
export function xattrKey(local: number, name: Buffer): Buffer {
  const b = head(local, Kind.Xattr, name.length);
  name.copy(b, 7);
  return b;
}
/** [lo, hi) bounds covering all keys of one kind of one inode. */
export function kindRange(local: number, kind: Kind): [Buffer, Buffer] {
  return [head(local, kind, 0), head(local, kind + 1, 0)];
}
/** [lo, hi) bounds covering every key of an inode. */
export function inodeRange(local: number): [Buffer, Buffer] {
  return [head(local, 0 as Kind, 0), head(local + 1, 0 as Kind, 0)];
}
export function keyLocal(k: Buffer): number {
  return k.readUIntBE(0, 6);
}
export function keyKind(k: Buffer): Kind {
  return k[6] as Kind;
}
export function keySuffix(k: Buffer): Buffer {
  return k.subarray(7);
}
export function blockIndexOfKey(k: Buffer): number {
  return k.readUIntBE(9, 6);
}

/**
 * An inode record. References to other inodes are layer-relative ([layer delta, local]) so a layer keeps
 * its meaning when compose appends it at another position of a new volume's layer array.
 */
export interface InodeRec {
  mode: number; // type and permission bits, as st_mode
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  atime: Time;
  mtime: Time;
  ctime: Time;
  btime: Time;
  rdev?: number;
  target?: Buffer; // symlink target
  parent?: [number, number]; // directories: the parent directory
  bytes?: number; // regular files: bytes held in blocks (allocated size)
}

/** A directory entry: the child as a layer-relative reference, plus its file type (mode & S_IFMT). */
export type Dirent = [number, number, number];

/** An extended attribute's value (wrapped, so only block values are bare buffers). */
export type XattrValue = { x: Buffer };

/** Leaf values of a layer tree. Block values are the bare 32-byte SHA-256 of the content. */
export type TreeValue = InodeRec | Dirent | XattrValue | Buffer;

