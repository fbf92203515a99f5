// The base of a volume: its records in the store's copy-on-write tree (inodes and directory entries,
// per layer), the quota those records count against, and the attributes of an inode. The concerns
// built on it (xattrs.ts, file-data.ts, namespace.ts) each extend it in turn, ending in Volume
// (volume.ts): layers of one class rather than objects calling each other, so a request costs no
// extra call or allocation for the split. Those three use only this base's members (their order in
// the chain means nothing); Volume joins them (setattr truncates, close flushes or frees).
import { PrismError } from '../errors.js';
import type { Blocks } from './blocks.js';
import type { CowTree } from './btree.js';
import { DirtyBlocks } from './dirty-blocks.js';
import { BLOCK_SIZE, Kind, blockKey, direntKey, inoOf, inodeKey, kindRange, layerOf, localOf, type Dirent, type InodeRec, type TreeValue, type XattrValue } from './layout.js';
import { S_IFMT, isDir, isReg } from '../posix/mode.js';
import type { Attr } from '../posix/types.js';

export interface LayerRec { root: number; next: number }

/**
 * What a volume holds, as its quota counts it: bytes of file data, inodes, and bytes of metadata a
 * guest chooses the size of (entry names, extended attribute names and values, symlink targets).
 */
export interface Usage { bytes: number; inodes: number; meta: number }

export interface VolumeRec {
  name: string;
  id: number;
  created: number; // ms since epoch
  origin: 'create' | 'clone' | 'compose';
  parent?: string; // clone source
  sources?: string[]; // compose sources
  quota?: number; // bytes: data plus metadata (Usage.meta)
  inodeQuota?: number; // inodes
  layers: LayerRec[];
  root: number; // inode number of the root directory
  /** null after compose until first needed: computing it walks the tree. */
  usage: Usage | null;
  /** Inodes unlinked while open; freed when closed, or at the next open of the store after a crash. */
  orphans: number[];
  /** A snapshot (volume snapshot): every change is EROFS. */
  readOnly?: boolean;
  /** A hidden copy (a pin, a staged import): the volume it stands for, which messages name. */
  copyOf?: string;
}

/** What a volume needs from the store that holds it. */
export interface VolumeHost {
  /** EROFS where the store was opened read-only beside its owner (Store.openReadOnly): no volume may change. */
  assertWritable(): void;
  tree: CowTree<TreeValue>;
  blocks: Blocks;
  /**
   * The volume's tree changed; `timesOf`: the change was to that inode's times alone (a COMMIT may
   * then make it durable in the intent log instead of LMDB: Store.logOnly).
   */
  changed(v: VolumeTree, timesOf?: number): void;
  /** Dirty (unflushed) data bytes changed by delta; the store may flush or commit. */
  dirtyData(delta: number): void;
  /** A block whose pages are in the intent log was stored or dropped: the next commit is a checkpoint. */
  loggedGone(): void;
  usage(v: VolumeTree): Usage;
}

/** A name as callers give it: a string is taken as UTF-8. */
export type Name = string | Buffer;

const TIMES = new Set(['atime', 'mtime', 'ctime']);

/** Whether `change` changes nothing of `old` but its times (other fields given are equal numbers). */
function timesOnly(old: InodeRec, change: Partial<InodeRec>): boolean {
  for (const k in change) {
    if (!TIMES.has(k) && change[k as keyof InodeRec] !== old[k as keyof InodeRec]) return false;
  }
  return true;
}

export abstract class VolumeTree {
  /** Partially written blocks, not yet hashed (file-data.ts); attributes and the quota count them. */
  protected readonly dirty: DirtyBlocks;

  constructor(readonly rec: VolumeRec, protected readonly host: VolumeHost) {
    this.dirty = new DirtyBlocks(host);
  }

  get name(): string { return this.rec.name; }
  get rootIno(): number { return this.rec.root; }
  /** The name to show people: a hidden copy's is the volume's it stands for. */
  get shownName(): string { return this.rec.copyOf ?? this.rec.name; }

  // ---- tree access -------------------------------------------------------------------------

  protected root(layer: number): number {
    const l = this.rec.layers[layer];
    if (!l) throw new PrismError('ESTALE', `no layer ${layer}`);
    return l.root;
  }
  protected tget(layer: number, key: Buffer): TreeValue | undefined {
    return this.host.tree.get(this.root(layer), key);
  }
  /** EROFS for a snapshot: called before a change touches anything (data buffered or tree). */
  protected writable(): void {
    if (this.rec.readOnly) throw new PrismError('EROFS', `volume ${this.shownName} is a read-only snapshot`);
    this.host.assertWritable();
  }

  protected tput(layer: number, key: Buffer, val: TreeValue, timesOf?: number): void {
    this.writable();
    const l = this.rec.layers[layer];
    l.root = this.host.tree.put(l.root, key, val);
    this.host.changed(this, timesOf);
  }
  protected tdel(layer: number, key: Buffer): void {
    this.writable();
    const l = this.rec.layers[layer];
    l.root = this.host.tree.del(l.root, key);
    this.host.changed(this);
  }

  inode(ino: number): InodeRec {
    const layer = layerOf(ino);
    if (!Number.isSafeInteger(ino) || ino <= 0 || layer >= this.rec.layers.length) throw new PrismError('ESTALE', `no inode ${ino}`);
    const v = this.tget(layer, inodeKey(localOf(ino)));
    if (!v) throw new PrismError('ESTALE', `no inode ${ino}`);
    return v as InodeRec;
  }

  /** `timesOnly`: rec differs from the stored record in its times alone. */
  protected putInode(ino: number, rec: InodeRec, timesOnly = false): void {
    this.tput(layerOf(ino), inodeKey(localOf(ino)), rec, timesOnly ? ino : undefined);
  }

  protected update(ino: number, change: Partial<InodeRec>): InodeRec {
    const old = this.inode(ino);
    const rec = { ...old, ...change };
    this.putInode(ino, rec, timesOnly(old, change));
    return rec;
  }

  protected entry(dir: number, name: Buffer): number | undefined {
    const layer = layerOf(dir);
    const d = this.tget(layer, direntKey(localOf(dir), name)) as Dirent | undefined;
    return d ? inoOf(layer + d[0], d[1]) : undefined;
  }

  /**
   * Add or replace an entry; a new name is charged (callers check room first: checkRoom). Compose
   * grafts without charging: it recounts the whole volume when first needed.
   */
  protected putEntry(dir: number, name: Buffer, child: number, mode: number, charged = true): void {
    const layer = layerOf(dir);
    const d: Dirent = [layerOf(child) - layer, localOf(child), mode & S_IFMT];
    const key = direntKey(localOf(dir), name);
    const fresh = this.tget(layer, key) === undefined;
    this.tput(layer, key, d);
    if (fresh && charged) this.charge(name.length);
  }

  protected delEntry(dir: number, name: Buffer): void {
    const key = direntKey(localOf(dir), name);
    if (this.tget(layerOf(dir), key) === undefined) return;
    this.tdel(layerOf(dir), key);
    this.charge(-name.length);
  }

  // ---- quota -------------------------------------------------------------------------------------

  /** Whether a quota (of bytes or of inodes) bounds the volume. */
  hasQuota(): boolean {
    return this.rec.quota !== undefined || this.rec.inodeQuota !== undefined;
  }

  /** EDQUOT unless `grow` more bytes (data or metadata) fit the volume's quota. */
  protected checkRoom(grow: number): void {
    this.writable();
    const quota = this.rec.quota;
    if (quota === undefined || grow <= 0) return;
    if (this.used() + this.dirtyTotal() + grow > quota) {
      throw new PrismError('EDQUOT', `volume ${this.shownName} is over its quota of ${quota} bytes`);
    }
  }

  /** Metadata bytes held change by delta (checked beforehand with checkRoom). */
  protected charge(delta: number): void {
    if (delta !== 0) this.host.usage(this).meta += delta;
  }

  /** Bytes charged to the quota: data and metadata. */
  private used(): number {
    const u = this.host.usage(this);
    return u.bytes + u.meta;
  }

  /** Metadata bytes an inode holds besides its names: symlink target, extended attributes. */
  metaBytesOf(ino: number, rec: InodeRec): number {
    let n = rec.target?.length ?? 0;
    const [lo, hi] = kindRange(localOf(ino), Kind.Xattr);
    this.host.tree.each(this.root(layerOf(ino)), lo, hi, (k, v) => { n += k.length - 7 + (v as XattrValue).x.length; });
    return n;
  }

  // ---- directories -------------------------------------------------------------------------------

  protected dirInode(ino: number): InodeRec {
    const rec = this.inode(ino);
    if (!isDir(rec.mode)) throw new PrismError('ENOTDIR', `inode ${ino} is not a directory`);
    return rec;
  }

  protected parentOf(dirIno: number, rec: InodeRec): number {
    const p = rec.parent;
    return p ? inoOf(layerOf(dirIno) + p[0], p[1]) : this.rec.root;
  }

  protected setParent(dirIno: number, parentIno: number): void {
    this.update(dirIno, { parent: [layerOf(parentIno) - layerOf(dirIno), localOf(parentIno)] });
  }

  protected allocIno(): number {
    const l = this.rec.layers[0];
    const local = l.next++;
    if (local >= 2 ** 40) throw new PrismError('ENOSPC', 'inode numbers exhausted');
    return inoOf(0, local);
  }

  /**
   * Set aside `n` inode numbers no allocation will hand out (the allocator moves past them): a client
   * that makes inodes itself names them in advance (a posted create). The first; they follow on. A
   * number never used is a gap, nothing more. Persisted with the volume's record at the next commit.
   */
  reserveInos(n: number): number {
    this.writable();
    const l = this.rec.layers[0];
    if (l.next + n > 2 ** 40) throw new PrismError('ENOSPC', 'inode numbers exhausted');
    const first = l.next;
    l.next += n;
    this.host.changed(this);
    return inoOf(0, first);
  }

  /** A number reserveInos handed out, checked unused: the caller (the host) tracks which it handed out. */
  protected reservedIno(ino: number): number {
    if (layerOf(ino) !== 0 || localOf(ino) >= this.rec.layers[0].next || localOf(ino) <= 0
      || this.tget(0, inodeKey(localOf(ino))) !== undefined) {
      throw new PrismError('ESTALE', `inode ${ino} was not reserved or is in use`);
    }
    return ino;
  }

  // ---- attributes ------------------------------------------------------------------------------

  attr(ino: number, rec: InodeRec = this.inode(ino)): Attr {
    const bytes = isReg(rec.mode) ? (rec.bytes ?? 0) + this.dirtyBytesOf(ino) : isDir(rec.mode) ? 4096 : 0;
    return {
      ino, mode: rec.mode, nlink: rec.nlink, uid: rec.uid, gid: rec.gid, rdev: rec.rdev ?? 0,
      size: isDir(rec.mode) ? 4096 : rec.size,
      blocks: Math.ceil(bytes / 512), blksize: BLOCK_SIZE,
      atime: rec.atime, mtime: rec.mtime, ctime: rec.ctime, btime: rec.btime,
    };
  }

  /** Bytes of a file's partially written blocks that have no stored block under them yet. */
  private dirtyBytesOf(ino: number): number {
    return this.dirty.freshBytes(ino, this.inode(ino).size);
  }

  /** The hash stored for one block of a file, if any (a hole, or not yet flushed, otherwise). */
  protected storedBlock(ino: number, idx: number): Buffer | undefined {
    return this.tget(layerOf(ino), blockKey(localOf(ino), idx)) as Buffer | undefined;
  }

  /** Bytes of partially written blocks over the whole volume: the quota counts them before they are stored. */
  private dirtyTotal(): number {
    let n = 0;
    for (const ino of this.dirty.inodes()) n += this.dirtyBytesOf(ino);
    return n;
  }

  /**
   * Count what the volume holds by walking it (the host calls it after compose, or for a volume
   * recorded before metadata was charged).
   */
  abstract countUsage(): Usage;
}
