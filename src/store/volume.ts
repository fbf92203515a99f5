// One volume: a POSIX file system over the layers of copy-on-write trees described in layout.ts.
// Every method is synchronous and leaves the volume consistent; the store commits between calls.
// Inputs are trusted to be well-formed (the host validates at the boundary); semantic errors are
// PrismErrors with POSIX codes.
import { PrismError } from '../errors.js';
import type { Blocks } from './blocks.js';
import type { CowTree } from './btree.js';
import { now } from './clock.js';
import { MAX_FILE_SIZE, MAX_NAME, MAX_SYMLINK, MAX_XATTR_VALUE } from '../posix/limits.js';
import { S_IFDIR, S_IFLNK, S_IFMT, S_ISGID, S_IFREG, isDir, isLnk, isReg, isNodeType } from '../posix/mode.js';
import type { Attr, DirEntry, SetAttr, Time } from '../posix/types.js';
import {
  BLOCK_SIZE, Kind, blockIndexOfKey, blockKey, direntKey, inoOf, inodeKey, inodeRange, keySuffix, kindRange, layerOf, localOf,
  xattrKey, type Dirent, type InodeRec, type TreeValue, type XattrValue,
} from './layout.js';

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
}

export interface RenameFlags { noreplace?: boolean; exchange?: boolean }

/** What a volume needs from the store that holds it. */
export interface VolumeHost {
  tree: CowTree<TreeValue>;
  blocks: Blocks;
  changed(v: Volume): void;
  /** Dirty (unflushed) data bytes changed by delta; the store may flush or commit. */
  dirtyData(delta: number): void;
  usage(v: Volume): Usage;
}

export type Name = string | Buffer;

function nameBuf(name: Name): Buffer {
  const b = typeof name === 'string' ? Buffer.from(name) : name;
  if (b.length === 0) throw new PrismError('ENOENT', 'empty name');
  if (b.length > MAX_NAME) throw new PrismError('ENAMETOOLONG', `name longer than ${MAX_NAME} bytes`);
  if (b.includes(0x2f) || b.includes(0)) throw new PrismError('EINVAL', `invalid name ${JSON.stringify(b.toString())}`);
  if ((b.length === 1 && b[0] === 0x2e) || (b.length === 2 && b[0] === 0x2e && b[1] === 0x2e)) {
    throw new PrismError('EINVAL', `"${b.toString()}" is not a name an entry can have`);
  }
  return b;
}

/**
 * Most pins (OPENs not yet closed) one owner may hold on one volume: each costs the host memory, and a
 * pinned file unlinked stays allocated. Past it, open() fails with ENOSPC (docs/store-limits.md).
 */
export const MAX_PINS_PER_OWNER = 65536;

/** The owner of pins taken by the store's own tools (CLI, import): not a VM. */
export const LOCAL_OWNER = '';

export class Volume {
  /**
   * Pins per inode and per owner (a VM's name), so an unlinked open file lives until its last close,
   * and an owner can only release the pins it took.
   */
  private pins = new Map<number, Map<string, number>>();
  /** Pins held per owner, over all inodes (bounded by MAX_PINS_PER_OWNER). */
  private pinsHeld = new Map<string, number>();
  /** Partially written blocks, not yet hashed: ino -> block index -> BLOCK_SIZE buffer. */
  private dirty = new Map<number, Map<number, DirtyBlock>>();

  constructor(readonly rec: VolumeRec, private readonly host: VolumeHost) {}

  get name(): string { return this.rec.name; }
  get rootIno(): number { return this.rec.root; }

  // ---- tree access -------------------------------------------------------------------------

  private root(layer: number): number {
    const l = this.rec.layers[layer];
    if (!l) throw new PrismError('ESTALE', `no layer ${layer}`);
    return l.root;
  }
  private tget(layer: number, key: Buffer): TreeValue | undefined {
    return this.host.tree.get(this.root(layer), key);
  }
  private tput(layer: number, key: Buffer, val: TreeValue): void {
    const l = this.rec.layers[layer];
    l.root = this.host.tree.put(l.root, key, val);
    this.host.changed(this);
  }
  private tdel(layer: number, key: Buffer): void {
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

  private putInode(ino: number, rec: InodeRec): void {
    this.tput(layerOf(ino), inodeKey(localOf(ino)), rec);
  }

  private update(ino: number, change: Partial<InodeRec>): InodeRec {
    const rec = { ...this.inode(ino), ...change };
    this.putInode(ino, rec);
    return rec;
  }

  private entry(dir: number, name: Buffer): number | undefined {
    const layer = layerOf(dir);
    const d = this.tget(layer, direntKey(localOf(dir), name)) as Dirent | undefined;
    return d ? inoOf(layer + d[0], d[1]) : undefined;
  }

  /**
   * Add or replace an entry; a new name is charged (callers check room first: checkRoom). Compose
   * grafts without charging: it recounts the whole volume when first needed.
   */
  private putEntry(dir: number, name: Buffer, child: number, mode: number, charged = true): void {
    const layer = layerOf(dir);
    const d: Dirent = [layerOf(child) - layer, localOf(child), mode & S_IFMT];
    const key = direntKey(localOf(dir), name);
    const fresh = this.tget(layer, key) === undefined;
    this.tput(layer, key, d);
    if (fresh && charged) this.charge(name.length);
  }

  private delEntry(dir: number, name: Buffer): void {
    const key = direntKey(localOf(dir), name);
    if (this.tget(layerOf(dir), key) === undefined) return;
    this.tdel(layerOf(dir), key);
    this.charge(-name.length);
  }

  // ---- quota -------------------------------------------------------------------------------------

  /** EDQUOT unless `grow` more bytes (data or metadata) fit the volume's quota. */
  private checkRoom(grow: number): void {
    const quota = this.rec.quota;
    if (quota === undefined || grow <= 0) return;
    if (this.used() + this.dirtyTotal() + grow > quota) {
      throw new PrismError('EDQUOT', `volume ${this.name} is over its quota of ${quota} bytes`);
    }
  }

  /** Metadata bytes held change by delta (checked beforehand with checkRoom). */
  private charge(delta: number): void {
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

  /**
   * Count what the volume holds by walking it (after compose, or for a volume recorded before
   * metadata was charged): every directory once, every inode once, and open-unlinked ones.
   */
  countUsage(): Usage {
    const u: Usage = { bytes: 0, inodes: 0, meta: 0 };
    const seen = new Set<number>();
    const add = (ino: number) => {
      if (seen.has(ino)) return;
      seen.add(ino);
      const rec = this.inode(ino);
      u.inodes++;
      if (isReg(rec.mode)) u.bytes += rec.bytes ?? 0;
      u.meta += this.metaBytesOf(ino, rec);
    };
    add(this.rec.root);
    const stack = [this.rec.root];
    const dirs = new Set(stack);
    while (stack.length) {
      for (const e of this.readdir(stack.pop()!)) {
        u.meta += e.name.length;
        add(e.ino);
        if (e.type === S_IFDIR && !dirs.has(e.ino)) { dirs.add(e.ino); stack.push(e.ino); }
      }
    }
    for (const ino of this.rec.orphans) add(ino);
    return u;
  }

  private dirInode(ino: number): InodeRec {
    const rec = this.inode(ino);
    if (!isDir(rec.mode)) throw new PrismError('ENOTDIR', `inode ${ino} is not a directory`);
    return rec;
  }

  private parentOf(dirIno: number, rec: InodeRec): number {
    const p = rec.parent;
    return p ? inoOf(layerOf(dirIno) + p[0], p[1]) : this.rec.root;
  }

  private setParent(dirIno: number, parentIno: number): void {
    this.update(dirIno, { parent: [layerOf(parentIno) - layerOf(dirIno), localOf(parentIno)] });
  }

  /** Set the parent pointer of a directory (compose grafts subtrees under new parents). */
  graftParent(dirIno: number, parentIno: number): void {
    this.setParent(dirIno, parentIno);
  }

  /**
   * Link an inode of a grafted layer into dir (compose). A file keeps the link count it had in its
   * source volume: links outside the selection are not visible here (see docs/store-format.md).
   */
  graftEntry(dir: number, name: Name, ino: number): void {
    const n = nameBuf(name);
    const drec = this.dirInode(dir);
    if (this.entry(dir, n) !== undefined) throw new PrismError('EEXIST', `${JSON.stringify(n.toString())} exists`);
    const rec = this.inode(ino);
    this.putEntry(dir, n, ino, rec.mode, false);
    if (isDir(rec.mode)) {
      this.setParent(ino, dir);
      this.update(dir, { nlink: drec.nlink + 1 });
    }
  }

  private allocIno(): number {
    const l = this.rec.layers[0];
    const local = l.next++;
    if (local >= 2 ** 40) throw new PrismError('ENOSPC', 'inode numbers exhausted');
    return inoOf(0, local);
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

  private dirtyBytesOf(ino: number): number {
    const d = this.dirty.get(ino);
    if (!d) return 0;
    let n = 0;
    const size = this.inode(ino).size;
    for (const idx of d.keys()) {
      const stored = this.storedBlock(ino, idx);
      if (!stored) n += Math.min(BLOCK_SIZE, Math.max(0, size - idx * BLOCK_SIZE));
    }
    return n;
  }

  getattr(ino: number): Attr {
    return this.attr(ino);
  }

  lookup(dir: number, name: Name): Attr {
    this.dirInode(dir);
    const n = typeof name === 'string' ? Buffer.from(name) : name;
    if (n.equals(Buffer.from('.'))) return this.attr(dir);
    if (n.equals(Buffer.from('..'))) return this.attr(this.parentOf(dir, this.inode(dir)));
    const child = this.entry(dir, nameBuf(n));
    if (child === undefined) throw new PrismError('ENOENT', `no entry ${JSON.stringify(n.toString())}`);
    return this.attr(child);
  }

  setattr(ino: number, s: SetAttr): Attr {
    let rec = this.inode(ino);
    const t = now();
    const change: Partial<InodeRec> = {};
    if (s.size !== undefined && s.size !== rec.size) {
      if (isDir(rec.mode)) throw new PrismError('EISDIR', 'cannot set the size of a directory');
      if (!isReg(rec.mode)) throw new PrismError('EINVAL', 'size applies only to regular files');
      this.truncate(ino, s.size);
      rec = this.inode(ino);
      change.mtime = t;
    } else if (s.size !== undefined) {
      change.mtime = t;
    }
    if (s.mode !== undefined) change.mode = (rec.mode & S_IFMT) | (s.mode & 0o7777);
    if (s.uid !== undefined) change.uid = s.uid;
    if (s.gid !== undefined) change.gid = s.gid;
    if (s.atime !== undefined) change.atime = s.atime === 'now' ? t : s.atime;
    if (s.mtime !== undefined) change.mtime = s.mtime === 'now' ? t : s.mtime;
    change.ctime = s.ctime ?? t;
    return this.attr(ino, this.update(ino, change));
  }

  access(ino: number, uid: number, gids: number[], mask: number): void {
    const rec = this.inode(ino);
    if (uid === 0) {
      if ((mask & 1) && !isDir(rec.mode) && (rec.mode & 0o111) === 0) throw new PrismError('EACCES', 'not executable');
      return;
    }
    const bits = uid === rec.uid ? (rec.mode >> 6) & 7 : gids.includes(rec.gid) ? (rec.mode >> 3) & 7 : rec.mode & 7;
    if ((bits & mask) !== mask) throw new PrismError('EACCES', 'permission denied');
  }

  // ---- namespace -------------------------------------------------------------------------------

  /** A new inode; its symlink target is charged (room checked by the caller). EDQUOT past the inode quota. */
  private newInode(mode: number, uid: number, gid: number, extra: Partial<InodeRec> = {}): [number, InodeRec] {
    const before = this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    if (this.rec.inodeQuota !== undefined && before.inodes >= this.rec.inodeQuota) {
      throw new PrismError('EDQUOT', `volume ${this.name} is at its quota of ${this.rec.inodeQuota} inodes`);
    }
    const t = now();
    const ino = this.allocIno();
    const rec: InodeRec = { mode, uid, gid, size: 0, nlink: 1, atime: t, mtime: t, ctime: t, btime: t, ...extra };
    this.putInode(ino, rec);
    const u = this.host.usage(this);
    u.inodes += 1;
    u.meta += rec.target?.length ?? 0;
    return [ino, rec];
  }

  private addChild(dir: number, name: Buffer, mode: number, uid: number, gid: number, extra: Partial<InodeRec> = {}): Attr {
    const drec = this.dirInode(dir);
    if (drec.nlink === 0) throw new PrismError('ENOENT', 'directory was removed');
    if (this.entry(dir, name) !== undefined) throw new PrismError('EEXIST', `${JSON.stringify(name.toString())} exists`);
    // A set-group-ID directory gives its group to what is made in it, and its bit to subdirectories.
    if (drec.mode & S_ISGID) {
      gid = drec.gid;
      if (isDir(mode)) mode |= S_ISGID;
    }
    this.checkRoom(name.length + (extra.target?.length ?? 0));
    const [ino, rec] = this.newInode(mode, uid, gid, extra);
    this.putEntry(dir, name, ino, mode);
    const t = rec.ctime;
    this.update(dir, { mtime: t, ctime: t, nlink: drec.nlink + (isDir(mode) ? 1 : 0) });
    if (isDir(mode)) this.setParent(ino, dir);
    return this.attr(ino);
  }

  create(dir: number, name: Name, mode: number, uid: number, gid: number, exclusive = true): Attr {
    const n = nameBuf(name);
    const existing = this.entry(dir, n);
    if (existing !== undefined) {
      if (exclusive) throw new PrismError('EEXIST', `${JSON.stringify(n.toString())} exists`);
      const a = this.attr(existing);
      if (isDir(a.mode)) throw new PrismError('EISDIR', `${JSON.stringify(n.toString())} is a directory`);
      return a;
    }
    return this.addChild(dir, n, S_IFREG | (mode & 0o7777), uid, gid, { bytes: 0 });
  }

  mkdir(dir: number, name: Name, mode: number, uid: number, gid: number): Attr {
    return this.addChild(dir, nameBuf(name), S_IFDIR | (mode & 0o7777), uid, gid, { nlink: 2 });
  }

  symlink(dir: number, name: Name, target: Name, uid: number, gid: number): Attr {
    const t = typeof target === 'string' ? Buffer.from(target) : target;
    if (t.length === 0) throw new PrismError('ENOENT', 'empty symlink target');
    if (t.length > MAX_SYMLINK) throw new PrismError('ENAMETOOLONG', 'symlink target too long');
    return this.addChild(dir, nameBuf(name), S_IFLNK | 0o777, uid, gid, { target: Buffer.from(t), size: t.length });
  }

  mknod(dir: number, name: Name, mode: number, rdev: number, uid: number, gid: number): Attr {
    const type = mode & S_IFMT;
    if (!isNodeType(type) || mode > 0o177777 || mode < 0) throw new PrismError('EINVAL', `mknod cannot make type 0o${type.toString(8)} (regular files, devices, fifos and sockets only)`);
    const extra: Partial<InodeRec> = type === S_IFREG || type === 0 ? { bytes: 0 } : { rdev };
    return this.addChild(dir, nameBuf(name), (type || S_IFREG) | (mode & 0o7777), uid, gid, extra);
  }

  readlink(ino: number): Buffer {
    const rec = this.inode(ino);
    if (!isLnk(rec.mode) || !rec.target) throw new PrismError('EINVAL', 'not a symbolic link');
    return rec.target;
  }

  link(ino: number, dir: number, name: Name): Attr {
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    const n = nameBuf(name);
    const rec = this.inode(ino);
    const drec = this.dirInode(dir);
    if (drec.nlink === 0) throw new PrismError('ENOENT', 'directory was removed');
    // Linux checks the new name before the kind of the source.
    if (this.entry(dir, n) !== undefined) throw new PrismError('EEXIST', `${JSON.stringify(n.toString())} exists`);
    if (isDir(rec.mode)) throw new PrismError('EPERM', 'cannot hard-link a directory');
    if (rec.nlink >= 65000) throw new PrismError('EMLINK', 'too many links');
    this.checkRoom(n.length);
    const t = now();
    this.putEntry(dir, n, ino, rec.mode);
    this.update(dir, { mtime: t, ctime: t });
    this.orphanDrop(ino);
    return this.attr(ino, this.update(ino, { nlink: rec.nlink + 1, ctime: t }));
  }

  unlink(dir: number, name: Name): void {
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    const n = nameBuf(name);
    this.dirInode(dir);
    const child = this.entry(dir, n);
    if (child === undefined) throw new PrismError('ENOENT', `no entry ${JSON.stringify(n.toString())}`);
    const rec = this.inode(child);
    if (isDir(rec.mode)) throw new PrismError('EISDIR', `${JSON.stringify(n.toString())} is a directory`);
    const t = now();
    this.delEntry(dir, n);
    this.update(dir, { mtime: t, ctime: t });
    this.dropLink(child, rec, t);
  }

  rmdir(dir: number, name: Name): void {
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    const n = nameBuf(name);
    const drec = this.dirInode(dir);
    const child = this.entry(dir, n);
    if (child === undefined) throw new PrismError('ENOENT', `no entry ${JSON.stringify(n.toString())}`);
    const rec = this.inode(child);
    if (!isDir(rec.mode)) throw new PrismError('ENOTDIR', `${JSON.stringify(n.toString())} is not a directory`);
    if (!this.isEmptyDir(child)) throw new PrismError('ENOTEMPTY', `${JSON.stringify(n.toString())} is not empty`);
    const t = now();
    this.delEntry(dir, n);
    this.update(dir, { mtime: t, ctime: t, nlink: Math.max(2, drec.nlink - 1) });
    this.freeOrOrphan(child, { ...rec, nlink: 0, ctime: t });
  }

  private isEmptyDir(ino: number): boolean {
    const [lo, hi] = kindRange(localOf(ino), Kind.Dirent);
    return this.host.tree.first(this.root(layerOf(ino)), lo, hi) === undefined;
  }

  /** One link fewer; the inode goes when no link and no open remain. */
  private dropLink(ino: number, rec: InodeRec, t: Time): void {
    const nlink = rec.nlink - 1;
    if (nlink > 0) this.update(ino, { nlink, ctime: t });
    else this.freeOrOrphan(ino, { ...rec, nlink: 0, ctime: t });
  }

  private freeOrOrphan(ino: number, rec: InodeRec): void {
    if (this.pins.has(ino)) {
      this.putInode(ino, rec);
      if (!this.rec.orphans.includes(ino)) this.rec.orphans.push(ino);
      this.host.changed(this);
    } else {
      this.freeInode(ino, rec);
    }
  }

  private orphanDrop(ino: number): void {
    const i = this.rec.orphans.indexOf(ino);
    if (i >= 0) { this.rec.orphans.splice(i, 1); this.host.changed(this); }
  }

  /** Remove every key of an inode, releasing its blocks. */
  freeInode(ino: number, rec: InodeRec = this.inode(ino)): void {
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    const meta = this.metaBytesOf(ino, rec);
    const layer = layerOf(ino);
    const [lo, hi] = inodeRange(localOf(ino));
    const l = this.rec.layers[layer];
    l.root = this.host.tree.delRange(l.root, lo, hi);
    this.dropDirty(ino);
    const u = this.host.usage(this);
    u.inodes -= 1;
    u.bytes -= rec.bytes ?? 0;
    u.meta -= meta;
    this.orphanDrop(ino);
    this.unpinAll(ino);
    this.host.changed(this);
  }

  rename(d1: number, n1: Name, d2: number, n2: Name, flags: RenameFlags = {}): void {
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    const a = nameBuf(n1), b = nameBuf(n2);
    this.dirInode(d1);
    const d2rec = this.dirInode(d2);
    if (d2rec.nlink === 0) throw new PrismError('ENOENT', 'target directory was removed');
    const src = this.entry(d1, a);
    if (src === undefined) throw new PrismError('ENOENT', `no entry ${JSON.stringify(a.toString())}`);
    const dst = this.entry(d2, b);
    const srec = this.inode(src);
    const t = now();
    if (flags.exchange) {
      if (dst === undefined) throw new PrismError('ENOENT', `no entry ${JSON.stringify(b.toString())}`);
      if (src === dst) return;
      const drec = this.inode(dst);
      if (isDir(srec.mode)) this.checkNotAncestor(src, d2);
      if (isDir(drec.mode)) this.checkNotAncestor(dst, d1);
      this.putEntry(d1, a, dst, drec.mode);
      this.putEntry(d2, b, src, srec.mode);
      if (d1 !== d2) {
        const sd = isDir(srec.mode) ? 1 : 0, dd = isDir(drec.mode) ? 1 : 0;
        if (sd) this.setParent(src, d2);
        if (dd) this.setParent(dst, d1);
        this.update(d1, { nlink: this.inode(d1).nlink - sd + dd });
        this.update(d2, { nlink: this.inode(d2).nlink - dd + sd });
      }
      for (const d of new Set([d1, d2])) this.update(d, { mtime: t, ctime: t });
      this.update(src, { ctime: t });
      this.update(dst, { ctime: t });
      return;
    }
    if (dst !== undefined && flags.noreplace) throw new PrismError('EEXIST', `${JSON.stringify(b.toString())} exists`);
    if (dst === src) return; // same inode (or same entry): POSIX says do nothing
    if (dst === undefined) this.checkRoom(b.length - a.length);
    if (isDir(srec.mode)) this.checkNotAncestor(src, d2);
    // A target that is a directory above the source (rename("d/x", "d")): Linux says ENOTEMPTY
    // before it looks at types.
    if (dst !== undefined && this.isWithin(d1, dst)) throw new PrismError('ENOTEMPTY', `${JSON.stringify(b.toString())} contains the source`);
    if (dst !== undefined) {
      const drec = this.inode(dst);
      if (isDir(drec.mode)) {
        if (!isDir(srec.mode)) throw new PrismError('EISDIR', `${JSON.stringify(b.toString())} is a directory`);
        if (!this.isEmptyDir(dst)) throw new PrismError('ENOTEMPTY', `${JSON.stringify(b.toString())} is not empty`);
      } else if (isDir(srec.mode)) {
        throw new PrismError('ENOTDIR', `${JSON.stringify(b.toString())} is not a directory`);
      }
      this.delEntry(d2, b);
      if (isDir(drec.mode)) {
        this.update(d2, { nlink: this.inode(d2).nlink - 1 });
        this.freeOrOrphan(dst, { ...drec, nlink: 0, ctime: t });
      } else {
        this.dropLink(dst, drec, t);
      }
    }
    this.delEntry(d1, a);
    this.putEntry(d2, b, src, srec.mode);
    if (isDir(srec.mode) && d1 !== d2) {
      this.setParent(src, d2);
      this.update(d1, { nlink: this.inode(d1).nlink - 1 });
      this.update(d2, { nlink: this.inode(d2).nlink + 1 });
    }
    for (const d of new Set([d1, d2])) this.update(d, { mtime: t, ctime: t });
    this.update(src, { ctime: t });
  }

  /** A directory cannot move below itself. */
  private checkNotAncestor(dir: number, target: number): void {
    if (this.isWithin(target, dir)) throw new PrismError('EINVAL', 'cannot move a directory into itself');
  }

  /** Whether directory `dir` is `ancestor` or below it. */
  private isWithin(dir: number, ancestor: number): boolean {
    let cur = dir;
    for (let depth = 0; depth < 100_000; depth++) {
      if (cur === ancestor) return true;
      if (cur === this.rec.root) return false;
      const next = this.parentOf(cur, this.inode(cur));
      if (next === cur) return false;
      cur = next;
    }
    throw new PrismError('ELOOP', 'directory parent chain too deep');
  }

  /** Entries sorted by name, after the name `after` (exclusive); "." and ".." are the caller's. */
  readdir(ino: number, after: Buffer | null = null, limit = Infinity): DirEntry[] {
    this.dirInode(ino);
    const layer = layerOf(ino);
    const local = localOf(ino);
    const [lo0, hi] = kindRange(local, Kind.Dirent);
    const lo = after ? direntKey(local, after) : lo0;
    const out: DirEntry[] = [];
    this.host.tree.each(this.root(layer), lo, hi, (k, v) => {
      const name = keySuffix(k);
      if (after && name.equals(after)) return;
      const d = v as Dirent;
      out.push({ name: Buffer.from(name), ino: inoOf(layer + d[0], d[1]), type: d[2] });
      return out.length < limit;
    });
    return out;
  }

  /** Inode of a path such as "/a/b" (symlinks are not followed). */
  resolve(path: string): number {
    let ino = this.rec.root;
    for (const part of path.split('/')) {
      if (part === '' || part === '.') continue;
      ino = this.lookup(ino, part).ino;
    }
    return ino;
  }

  // ---- open files ----------------------------------------------------------------------------

  /** Pin an inode for owner (a VM's name): while pinned, unlinking it keeps it alive. */
  open(ino: number, owner: string = LOCAL_OWNER): void {
    this.inode(ino);
    const held = this.pinsHeld.get(owner) ?? 0;
    if (held >= MAX_PINS_PER_OWNER) throw new PrismError('ENOSPC', `${owner || 'this process'} holds ${held} open files on volume ${this.name} (the limit)`);
    let byOwner = this.pins.get(ino);
    if (!byOwner) { byOwner = new Map(); this.pins.set(ino, byOwner); }
    byOwner.set(owner, (byOwner.get(owner) ?? 0) + 1);
    this.pinsHeld.set(owner, held + 1);
  }

  /** Release one of owner's pins; the last pin of an unlinked inode frees it. EBADF if owner holds none. */
  close(ino: number, owner: string = LOCAL_OWNER): void {
    const byOwner = this.pins.get(ino);
    const n = byOwner?.get(owner) ?? 0;
    if (!byOwner || n === 0) throw new PrismError('EBADF', `inode ${ino} is not open by ${owner || 'this process'}`);
    if (n > 1) byOwner.set(owner, n - 1);
    else byOwner.delete(owner);
    this.dropHeld(owner, 1);
    if (byOwner.size > 0) return;
    this.pins.delete(ino);
    if (this.rec.orphans.includes(ino)) this.freeInode(ino);
    else this.flushFile(ino);
  }

  /** Pins an owner holds on this volume (for status and tests). */
  pinsOf(owner: string): number {
    return this.pinsHeld.get(owner) ?? 0;
  }

  private dropHeld(owner: string, n: number): void {
    const left = (this.pinsHeld.get(owner) ?? 0) - n;
    if (left > 0) this.pinsHeld.set(owner, left);
    else this.pinsHeld.delete(owner);
  }

  /** The inode is gone: every owner's pins on it go too. */
  private unpinAll(ino: number): void {
    const byOwner = this.pins.get(ino);
    if (!byOwner) return;
    for (const [owner, n] of byOwner) this.dropHeld(owner, n);
    this.pins.delete(ino);
  }

  // ---- file data -------------------------------------------------------------------------------

  private storedBlock(ino: number, idx: number): Buffer | undefined {
    return this.tget(layerOf(ino), blockKey(localOf(ino), idx)) as Buffer | undefined;
  }

  private regInode(ino: number): InodeRec {
    const rec = this.inode(ino);
    if (isDir(rec.mode)) throw new PrismError('EISDIR', 'is a directory');
    if (!isReg(rec.mode)) throw new PrismError('EINVAL', 'not a regular file');
    return rec;
  }

  /** The current content of one block (dirty or stored), or null for a hole. */
  private blockData(ino: number, idx: number): Buffer | null {
    const d = this.dirty.get(ino)?.get(idx);
    if (d) return d.buf.subarray(0, d.len);
    const h = this.storedBlock(ino, idx);
    return h ? this.host.blocks.read(h) : null;
  }

  /** Read up to length bytes at offset; `into`, if given and large enough, receives them (no allocation). */
  read(ino: number, offset: number, length: number, into?: Buffer): { data: Buffer; eof: boolean } {
    const rec = this.regInode(ino);
    if (offset < 0 || length < 0) throw new PrismError('EINVAL', 'negative offset or length');
    const end = Math.min(rec.size, offset + length);
    if (offset >= end) return { data: Buffer.alloc(0), eof: true };
    // Not zeroed up front: every byte is either copied or explicitly zeroed (holes, short blocks).
    const out = into && into.length >= end - offset ? into.subarray(0, end - offset) : Buffer.allocUnsafe(end - offset);
    for (let idx = Math.floor(offset / BLOCK_SIZE); idx * BLOCK_SIZE < end; idx++) {
      const bStart = idx * BLOCK_SIZE;
      const from = Math.max(offset, bStart) - bStart;
      const upto = Math.min(end - bStart, BLOCK_SIZE);
      const data = this.blockData(ino, idx);
      const to = data ? Math.min(upto, data.length) : from;
      if (to > from) data!.copy(out, bStart + from - offset, from, to);
      if (upto > Math.max(to, from)) out.fill(0, bStart + Math.max(to, from) - offset, bStart + upto - offset);
    }
    return { data: out, eof: end >= rec.size };
  }

  write(ino: number, offset: number, data: Buffer): Attr {
    const rec = this.regInode(ino);
    if (offset < 0) throw new PrismError('EINVAL', 'negative offset');
    const end = offset + data.length;
    if (end > MAX_FILE_SIZE) throw new PrismError('EFBIG', 'file too large');
    if (data.length === 0) return this.attr(ino, rec);
    this.checkQuota(ino, offset, end);
    for (let idx = Math.floor(offset / BLOCK_SIZE); idx * BLOCK_SIZE < end; idx++) {
      const bStart = idx * BLOCK_SIZE;
      const from = Math.max(offset, bStart);
      const to = Math.min(end, bStart + BLOCK_SIZE);
      const chunk = data.subarray(from - offset, to - offset);
      if (chunk.length === BLOCK_SIZE) {
        this.dropDirtyBlock(ino, idx);
        this.setBlock(ino, idx, chunk);
        continue;
      }
      let d = this.dirty.get(ino)?.get(idx);
      if (!d) {
        d = { buf: EMPTY, len: 0 };
        const h = this.storedBlock(ino, idx);
        if (h) {
          const stored = this.host.blocks.read(h);
          grow(d, stored.length);
          d.len = stored.copy(d.buf);
        }
        let m = this.dirty.get(ino);
        if (!m) { m = new Map(); this.dirty.set(ino, m); }
        m.set(idx, d);
        this.host.dirtyData(BLOCK_SIZE);
      }
      const at = from - bStart;
      grow(d, at + chunk.length);
      if (at > d.len) d.buf.fill(0, d.len, at);
      chunk.copy(d.buf, at);
      d.len = Math.max(d.len, at + chunk.length);
    }
    const t = now();
    return this.attr(ino, this.update(ino, { size: Math.max(rec.size, end), mtime: t, ctime: t }));
  }

  private checkQuota(ino: number, offset: number, end: number): void {
    const quota = this.rec.quota;
    if (quota === undefined) return;
    let grow = 0;
    const m = this.dirty.get(ino);
    for (let idx = Math.floor(offset / BLOCK_SIZE); idx * BLOCK_SIZE < end; idx++) {
      if (m?.has(idx) || this.storedBlock(ino, idx)) continue;
      grow += Math.min(BLOCK_SIZE, end - idx * BLOCK_SIZE);
    }
    this.checkRoom(grow);
  }

  private dirtyTotal(): number {
    let n = 0;
    for (const ino of this.dirty.keys()) n += this.dirtyBytesOf(ino);
    return n;
  }

  /** Replace one block's content (null or all zeros make a hole). */
  private setBlock(ino: number, idx: number, data: Buffer | null): void {
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    const layer = layerOf(ino);
    const key = blockKey(localOf(ino), idx);
    const old = this.tget(layer, key) as Buffer | undefined;
    const oldLen = old ? this.host.blocks.length(old) : 0;
    let newLen = 0;
    if (data && data.length > 0 && !isZero(data)) {
      const h = this.host.blocks.put(data);
      if (old && old.equals(h)) return;
      this.tput(layer, key, h);
      newLen = data.length;
    } else if (old) {
      this.tdel(layer, key);
    }
    if (newLen !== oldLen) {
      const rec = this.inode(ino);
      this.putInode(ino, { ...rec, bytes: (rec.bytes ?? 0) + newLen - oldLen });
      this.host.usage(this).bytes += newLen - oldLen;
    }
  }

  /**
   * Set whole blocks firstIndex.. of a regular file to content already in the block index (import):
   * no re-hashing. A null hash makes a hole; lengths[i] is the block's length (BLOCK_SIZE but for the
   * last block of a file). The size grows to cover the blocks; accounting as setBlock.
   */
  writeBlocks(ino: number, firstIndex: number, hashes: Array<Buffer | null>, lengths: number[]): void {
    const rec = this.regInode(ino);
    if (hashes.length === 0) return;
    const end = (firstIndex + hashes.length - 1) * BLOCK_SIZE + lengths[hashes.length - 1];
    if (end > MAX_FILE_SIZE) throw new PrismError('EFBIG', 'file too large');
    this.checkQuota(ino, firstIndex * BLOCK_SIZE, end);
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    const layer = layerOf(ino);
    const local = localOf(ino);
    let delta = 0;
    for (let i = 0; i < hashes.length; i++) {
      const idx = firstIndex + i;
      if (this.dirty.get(ino)?.has(idx)) this.dropDirtyBlock(ino, idx);
      const key = blockKey(local, idx);
      const old = this.tget(layer, key) as Buffer | undefined;
      const h = hashes[i];
      if (h) {
        if (old && old.equals(h)) continue;
        this.tput(layer, key, h);
        delta += lengths[i];
      } else if (old) {
        this.tdel(layer, key);
      }
      if (old) delta -= this.host.blocks.length(old);
    }
    const t = now();
    this.putInode(ino, { ...rec, size: Math.max(rec.size, end), bytes: (rec.bytes ?? 0) + delta, mtime: t, ctime: t });
    this.host.usage(this).bytes += delta;
  }

  /**
   * Make blocks [first, first + count) of a regular file hold `blocks` (indexes relative to first,
   * content already in the block index) and holes elsewhere: copy_file_range's shared path. Work is
   * bounded by the blocks given and the blocks the destination has there, not by count.
   */
  private shareBlocks(ino: number, first: number, count: number, blocks: Array<[number, Buffer]>): void {
    const rec = this.regInode(ino);
    const quota = this.rec.quota;
    if (quota !== undefined) {
      let grow = 0;
      const m = this.dirty.get(ino);
      for (const [i, h] of blocks) if (!m?.has(first + i) && !this.storedBlock(ino, first + i)) grow += this.host.blocks.length(h);
      this.checkRoom(grow);
    }
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    const given = new Set(blocks.map(([i]) => first + i));
    const m = this.dirty.get(ino);
    if (m) for (const idx of [...m.keys()]) if (idx >= first && idx < first + count) this.dropDirtyBlock(ino, idx);
    const layer = layerOf(ino);
    const local = localOf(ino);
    let delta = 0;
    for (const [idx, old] of this.storedBlocks(ino, first, first + count)) {
      if (given.has(idx)) continue;
      this.tdel(layer, blockKey(local, idx));
      delta -= this.host.blocks.length(old);
    }
    for (const [i, h] of blocks) {
      const key = blockKey(local, first + i);
      const old = this.tget(layer, key) as Buffer | undefined;
      if (old && old.equals(h)) continue;
      this.tput(layer, key, h);
      delta += this.host.blocks.length(h) - (old ? this.host.blocks.length(old) : 0);
    }
    const t = now();
    this.putInode(ino, { ...this.inode(ino), bytes: (rec.bytes ?? 0) + delta, mtime: t, ctime: t });
    this.host.usage(this).bytes += delta;
  }

  private dropDirtyBlock(ino: number, idx: number): void {
    const m = this.dirty.get(ino);
    const d = m?.get(idx);
    if (m && d) {
      m.delete(idx);
      giveBuffer(d.buf);
      this.host.dirtyData(-BLOCK_SIZE);
      if (m.size === 0) this.dirty.delete(ino);
    }
  }

  private dropDirty(ino: number): void {
    const m = this.dirty.get(ino);
    if (m) {
      for (const d of m.values()) giveBuffer(d.buf);
      this.host.dirtyData(-BLOCK_SIZE * m.size);
      this.dirty.delete(ino);
    }
  }

  /** Hash and store a file's partially written blocks. */
  flushFile(ino: number): void {
    const m = this.dirty.get(ino);
    if (!m) return;
    const size = this.inode(ino).size;
    for (const [idx, d] of [...m].sort((x, y) => x[0] - y[0])) {
      const len = Math.max(0, Math.min(BLOCK_SIZE, size - idx * BLOCK_SIZE));
      grow(d, len);
      if (len > d.len) d.buf.fill(0, d.len, len);
      this.setBlock(ino, idx, len > 0 ? d.buf.subarray(0, len) : null);
      giveBuffer(d.buf);
    }
    this.host.dirtyData(-BLOCK_SIZE * m.size);
    this.dirty.delete(ino);
  }

  flush(): void {
    for (const ino of [...this.dirty.keys()]) this.flushFile(ino);
  }

  get hasDirtyData(): boolean { return this.dirty.size > 0; }

  private truncate(ino: number, size: number): void {
    const rec = this.regInode(ino);
    if (size < 0) throw new PrismError('EINVAL', 'negative size');
    if (size > MAX_FILE_SIZE) throw new PrismError('EFBIG', 'file too large');
    if (size > rec.size) {
      this.update(ino, { size });
      return;
    }
    const keep = Math.ceil(size / BLOCK_SIZE);
    this.dropBlocks(ino, keep, Infinity);
    if (size % BLOCK_SIZE !== 0) {
      const idx = keep - 1;
      const cut = size - idx * BLOCK_SIZE;
      const d = this.dirty.get(ino)?.get(idx);
      if (d) d.len = Math.min(d.len, cut);
      else {
        const h = this.storedBlock(ino, idx);
        if (h) {
          const data = this.host.blocks.read(h);
          if (data.length > cut) this.setBlock(ino, idx, data.subarray(0, cut));
        }
      }
    }
    this.update(ino, { size });
  }

  /**
   * Stored blocks of a file with first <= index < last, in order: found by walking the keys that
   * exist, so the work is bounded by what is stored, never by the range a request names.
   */
  private storedBlocks(ino: number, first: number, last: number): Array<[number, Buffer]> {
    const local = localOf(ino);
    const hi = last === Infinity || last > MAX_BLOCK_INDEX ? kindRange(local, Kind.Block)[1] : blockKey(local, last);
    const out: Array<[number, Buffer]> = [];
    this.host.tree.each(this.root(layerOf(ino)), blockKey(local, first), hi, (k, v) => { out.push([blockIndexOfKey(k), v as Buffer]); });
    return out;
  }

  /** Make blocks [first, last) holes: drops the dirty and stored ones there are, nothing else. */
  private dropBlocks(ino: number, first: number, last: number): void {
    const m = this.dirty.get(ino);
    if (m) for (const idx of [...m.keys()]) if (idx >= first && idx < last) this.dropDirtyBlock(ino, idx);
    for (const [idx] of this.storedBlocks(ino, first, last)) this.setBlock(ino, idx, null);
  }

  /** The first block index >= from (below limit, else limit) that holds data, or that is a hole. */
  private nextBlock(ino: number, from: number, want: 'data' | 'hole', limit: number): number {
    const layer = layerOf(ino);
    const local = localOf(ino);
    const dirty = this.dirty.get(ino);
    const [, hi] = kindRange(local, Kind.Block);
    if (want === 'data') {
      let found = limit;
      this.host.tree.each(this.root(layer), blockKey(local, from), hi, (k) => { found = blockIndexOfKey(k); return false; });
      if (dirty) for (const idx of dirty.keys()) if (idx >= from && idx < found) found = idx;
      return found;
    }
    // A hole: walk stored blocks from `from` while they are consecutive (or covered by dirty ones).
    let idx = from;
    for (;;) {
      while (dirty?.has(idx)) idx++;
      let moved = false;
      this.host.tree.each(this.root(layer), blockKey(local, idx), hi, (k) => {
        const at = blockIndexOfKey(k);
        if (at !== idx) return false;
        idx++;
        moved = true;
        while (dirty?.has(idx)) idx++;
        return idx < limit;
      });
      if (!moved || idx >= limit) return Math.min(idx, limit);
    }
  }

  /** lseek(SEEK_DATA / SEEK_HOLE) at block granularity; the end of the file is a hole. */
  seek(ino: number, offset: number, what: 'data' | 'hole'): number {
    const rec = this.regInode(ino);
    if (offset < 0) throw new PrismError('EINVAL', 'negative offset');
    if (offset >= rec.size) throw new PrismError('ENXIO', 'offset at or beyond the end of the file');
    const blocks = Math.ceil(rec.size / BLOCK_SIZE);
    const idx = this.nextBlock(ino, Math.floor(offset / BLOCK_SIZE), what, blocks);
    if (idx >= blocks) {
      if (what === 'hole') return rec.size;
      throw new PrismError('ENXIO', 'no data after this offset');
    }
    return Math.min(rec.size, Math.max(offset, idx * BLOCK_SIZE));
  }

  /**
   * fallocate(2). Space is not reserved ahead in a deduplicating store: mode 0 only extends the
   * size; PUNCH_HOLE and ZERO_RANGE turn whole blocks into holes and zero the partial ends.
   */
  fallocate(ino: number, offset: number, length: number, mode: { keepSize: boolean; punchHole: boolean; zeroRange: boolean }): Attr {
    const rec = this.regInode(ino);
    if (offset < 0 || length <= 0) throw new PrismError('EINVAL', 'offset must be >= 0 and length > 0');
    const end = offset + length;
    if (end > MAX_FILE_SIZE) throw new PrismError('EFBIG', 'file too large');
    if (mode.punchHole && !mode.keepSize) throw new PrismError('ENOTSUP', 'PUNCH_HOLE needs KEEP_SIZE');
    if (mode.punchHole || mode.zeroRange) {
      const zeroTo = Math.min(end, rec.size);
      if (zeroTo > offset) this.zero(ino, offset, zeroTo);
    }
    const t = now();
    const size = !mode.keepSize && end > rec.size ? end : rec.size;
    const changed = size !== rec.size || mode.punchHole || mode.zeroRange;
    return this.attr(ino, changed ? this.update(ino, { size, mtime: t, ctime: t }) : this.inode(ino));
  }

  /** Make [from, to) read as zeros: whole blocks become holes, partial ones are overwritten. */
  private zero(ino: number, from: number, to: number): void {
    const first = Math.ceil(from / BLOCK_SIZE);
    const last = Math.floor(to / BLOCK_SIZE); // blocks first..last-1 are wholly inside
    const size = this.inode(ino).size;
    const overwrite = (a: number, b: number) => { if (b > a) this.write(ino, a, Buffer.alloc(b - a)); };
    if (first > last) { overwrite(from, to); return; }
    overwrite(from, first * BLOCK_SIZE);
    this.dropBlocks(ino, first, last);
    overwrite(last * BLOCK_SIZE, to);
    this.update(ino, { size }); // the partial writes must not have grown it
  }

  /**
   * copy_file_range(2): whole blocks that line up are shared by reference (no data copied, no new
   * space); unaligned edges are copied. Returns the bytes copied (less than asked at source EOF).
   */
  copyRange(src: number, srcOff: number, dst: number, dstOff: number, length: number): { copied: number; attr: Attr } {
    const s = this.regInode(src);
    this.regInode(dst);
    if (srcOff < 0 || dstOff < 0 || length < 0) throw new PrismError('EINVAL', 'negative offset or length');
    const aligned = srcOff % BLOCK_SIZE === dstOff % BLOCK_SIZE;
    // Bounded work per call (callers loop on a short count, as with copy_file_range itself).
    const n = Math.max(0, Math.min(length, s.size - srcOff, aligned ? COPY_CHUNK_SHARED : COPY_CHUNK_BYTES));
    if (dstOff + n > MAX_FILE_SIZE) throw new PrismError('EFBIG', 'file too large');
    if (src === dst && srcOff < dstOff + n && dstOff < srcOff + n) throw new PrismError('EINVAL', 'overlapping ranges in one file');
    if (n === 0) return { copied: 0, attr: this.attr(dst) };
    this.flushFile(src);
    const copyBytes = (from: number, to: number, len: number) => {
      for (let done = 0; done < len; done += BLOCK_SIZE) {
        // A fresh buffer from read (no `into`): write copies it, no second copy needed.
        this.write(dst, to + done, this.read(src, from + done, Math.min(BLOCK_SIZE, len - done)).data);
      }
    };
    const head = aligned ? Math.min(n, (BLOCK_SIZE - (srcOff % BLOCK_SIZE)) % BLOCK_SIZE) : n;
    const whole = aligned ? Math.floor((n - head) / BLOCK_SIZE) : 0;
    copyBytes(srcOff, dstOff, head);
    if (whole > 0) {
      const firstSrc = (srcOff + head) / BLOCK_SIZE;
      this.shareBlocks(dst, (dstOff + head) / BLOCK_SIZE, whole, this.storedBlocks(src, firstSrc, firstSrc + whole).map(([i, h]) => [i - firstSrc, h]));
    }
    const tail = head + whole * BLOCK_SIZE;
    // A short stored block (left by a truncate) or a trailing hole does not carry the size along.
    if (this.inode(dst).size < dstOff + tail) this.update(dst, { size: dstOff + tail });
    copyBytes(srcOff + tail, dstOff + tail, n - tail);
    return { copied: n, attr: this.attr(dst) };
  }

  /** Block hashes of a file in order, with their indexes (for diff, export and scan). */
  blockList(ino: number): Array<[number, Buffer]> {
    this.flushFile(ino);
    const local = localOf(ino);
    const [lo, hi] = kindRange(local, Kind.Block);
    const out: Array<[number, Buffer]> = [];
    this.host.tree.each(this.root(layerOf(ino)), lo, hi, (k, v) => { out.push([blockIndexOfKey(k), v as Buffer]); });
    return out;
  }

  // ---- extended attributes ---------------------------------------------------------------------

  getxattr(ino: number, name: Name): Buffer {
    const n = xattrName(name);
    const v = this.tget(layerOf(ino), xattrKey(localOf(ino), n)) as XattrValue | undefined;
    if (!v) { this.inode(ino); throw new PrismError('ENODATA', `no attribute ${n.toString()}`); }
    return v.x;
  }

  setxattr(ino: number, name: Name, value: Buffer, how: 'create' | 'replace' | 'either' = 'either'): void {
    const n = xattrName(name);
    if (value.length > MAX_XATTR_VALUE) throw new PrismError('E2BIG', 'attribute value too large');
    this.inode(ino);
    const key = xattrKey(localOf(ino), n);
    const old = this.tget(layerOf(ino), key) as XattrValue | undefined;
    if (how === 'create' && old) throw new PrismError('EEXIST', `attribute ${n.toString()} exists`);
    if (how === 'replace' && !old) throw new PrismError('ENODATA', `no attribute ${n.toString()}`);
    const delta = old ? value.length - old.x.length : n.length + value.length;
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    this.checkRoom(delta);
    this.tput(layerOf(ino), key, { x: Buffer.from(value) });
    this.charge(delta);
    this.update(ino, { ctime: now() });
  }

  listxattr(ino: number): Buffer[] {
    this.inode(ino);
    const [lo, hi] = kindRange(localOf(ino), Kind.Xattr);
    const out: Buffer[] = [];
    this.host.tree.each(this.root(layerOf(ino)), lo, hi, (k) => { out.push(Buffer.from(keySuffix(k))); });
    return out;
  }

  /** Whether an inode has any extended attribute (one range probe; the inode is not checked). */
  hasXattrs(ino: number): boolean {
    const [lo, hi] = kindRange(localOf(ino), Kind.Xattr);
    return this.host.tree.first(this.root(layerOf(ino)), lo, hi) !== undefined;
  }

  removexattr(ino: number, name: Name): void {
    const n = xattrName(name);
    const key = xattrKey(localOf(ino), n);
    const old = this.tget(layerOf(ino), key) as XattrValue | undefined;
    if (!old) { this.inode(ino); throw new PrismError('ENODATA', `no attribute ${n.toString()}`); }
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    this.tdel(layerOf(ino), key);
    this.charge(-(n.length + old.x.length));
    this.update(ino, { ctime: now() });
  }

}

function xattrName(name: Name): Buffer {
  const b = typeof name === 'string' ? Buffer.from(name) : name;
  if (b.length === 0 || b.length > 255) throw new PrismError('ERANGE', 'attribute name length must be 1..255');
  return b;
}

/** Most bytes one copyRange call handles: shared whole blocks are cheap, byte copies are not. */
const COPY_CHUNK_SHARED = 1 << 30;
const COPY_CHUNK_BYTES = 8 << 20;
/** Block indexes fit the 6 bytes of a block key. */
const MAX_BLOCK_INDEX = 2 ** 48 - 1;
const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);

/** A partially written block: bytes [0, len) are valid, the rest reads as zeros. */
interface DirtyBlock { buf: Buffer; len: number }

// Block buffers are reused: allocating and zeroing 64 KiB per small write dominated small-file imports.
// Partial blocks are buffered in memory sized to what they hold (small files stay small), growing by
// doubling from 4 KiB to a whole block. Buffers are pooled per size: fresh allocations of these
// sizes are slow (each is its own ArrayBuffer, and large ones fault pages on first use).
const EMPTY = Buffer.alloc(0);
const pools = new Map<number, Buffer[]>();
function takeBuffer(size: number): Buffer {
  return pools.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size);
}
function giveBuffer(b: Buffer): void {
  if (b.length < 4096) return;
  let pool = pools.get(b.length);
  if (!pool) { pool = []; pools.set(b.length, pool); }
  if (pool.length < 256) pool.push(b);
}
/** Make room for `need` bytes in a partial block's buffer, keeping its first `len` bytes. */
function grow(d: { buf: Buffer; len: number }, need: number): void {
  if (d.buf.length >= need) return;
  let size = 4096;
  while (size < need) size *= 2;
  const next = takeBuffer(Math.min(size, BLOCK_SIZE));
  d.buf.copy(next, 0, 0, d.len);
  giveBuffer(d.buf);
  d.buf = next;
}

function isZero(b: Buffer): boolean {
  return b.equals(ZERO_BLOCK.subarray(0, b.length));
}

