// The namespace of a volume: looking names up, making and removing entries (files, directories,
// symlinks, devices, hard links), rename, readdir, and grafting subtrees for compose. An inode whose
// last link goes while it is open (pinned: pins.ts) lives on as an orphan until its last close.
import { PrismError } from '../errors.js';
import { now } from '../posix/clock.js';
import { VolumeFileData } from './file-data.js';
import { Kind, direntKey, inoOf, inodeRange, keySuffix, kindRange, layerOf, localOf, type Dirent, type InodeRec } from './layout.js';
import { Pins } from './pins.js';
import type { RenameFlags } from './volume.js';
import type { Name, Usage } from './volume-tree.js';
import { MAX_NAME, MAX_SYMLINK } from '../posix/limits.js';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, isDir, isLnk, isNodeType, isReg, madeIn } from '../posix/mode.js';
import type { Attr, DirEntry, Time } from '../posix/types.js';

/** What the maker of an inode chose: its number (reserved: VolumeTree.reserveInos) and its times. */
export interface MadeAt { ino: number; time: Time }

export abstract class VolumeNamespace extends VolumeFileData {
  /** Who holds each inode open: an unlinked inode is freed only when no pin is left. */
  protected readonly pins = new Pins();

  lookup(dir: number, name: Name): Attr {
    this.dirInode(dir);
    const n = typeof name === 'string' ? Buffer.from(name) : name;
    // Byte checks, not Buffer.equals: no allocation or native call on every lookup.
    if (n.length === 1 && n[0] === 0x2e) return this.attr(dir);
    if (n.length === 2 && n[0] === 0x2e && n[1] === 0x2e) return this.attr(this.parentOf(dir, this.inode(dir)));
    const child = this.entry(dir, nameBuf(n));
    if (child === undefined) throw new PrismError('ENOENT', `no entry ${JSON.stringify(n.toString())}`);
    return this.attr(child);
  }

  /**
   * A new inode; its symlink target is charged (room checked by the caller). EDQUOT past the inode
   * quota. `at`: the number (one reserveInos handed out, never used) and time its maker chose.
   */
  private newInode(mode: number, uid: number, gid: number, extra: Partial<InodeRec> = {}, at?: MadeAt): [number, InodeRec] {
    const before = this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    if (this.rec.inodeQuota !== undefined && before.inodes >= this.rec.inodeQuota) {
      throw new PrismError('EDQUOT', `volume ${this.shownName} is at its quota of ${this.rec.inodeQuota} inodes`);
    }
    const t = at?.time ?? now();
    const ino = at ? this.reservedIno(at.ino) : this.allocIno();
    const rec: InodeRec = { mode, uid, gid, size: 0, nlink: 1, atime: t, mtime: t, ctime: t, btime: t, ...extra };
    this.putInode(ino, rec);
    const u = this.host.usage(this);
    u.inodes += 1;
    u.meta += rec.target?.length ?? 0;
    return [ino, rec];
  }

  private addChild(dir: number, name: Buffer, mode: number, uid: number, gid: number, extra: Partial<InodeRec> = {}, at?: MadeAt): Attr {
    const drec = this.dirInode(dir);
    if (drec.nlink === 0) throw new PrismError('ENOENT', 'directory was removed');
    if (this.entry(dir, name) !== undefined) throw new PrismError('EEXIST', `${JSON.stringify(name.toString())} exists`);
    ({ mode, gid } = madeIn(drec.mode, drec.gid, mode, gid));
    this.checkRoom(name.length + (extra.target?.length ?? 0));
    const [ino, rec] = this.newInode(mode, uid, gid, extra, at);
    this.putEntry(dir, name, ino, mode);
    const t = rec.ctime;
    this.update(dir, { mtime: t, ctime: t, nlink: drec.nlink + (isDir(mode) ? 1 : 0) });
    if (isDir(mode)) this.setParent(ino, dir);
    return this.attr(ino);
  }

  /** `at`: the inode number (from reserveInos) and the time the caller chose (a posted create, docs/agent.md). */
  create(dir: number, name: Name, mode: number, uid: number, gid: number, exclusive = true, at?: MadeAt): Attr {
    const n = nameBuf(name);
    const existing = this.entry(dir, n);
    if (existing !== undefined) {
      if (exclusive) throw new PrismError('EEXIST', `${JSON.stringify(n.toString())} exists`);
      const a = this.attr(existing);
      if (isDir(a.mode)) throw new PrismError('EISDIR', `${JSON.stringify(n.toString())} is a directory`);
      return a;
    }
    return this.addChild(dir, n, S_IFREG | (mode & 0o7777), uid, gid, { bytes: 0 }, at);
  }

  mkdir(dir: number, name: Name, mode: number, uid: number, gid: number, at?: MadeAt): Attr {
    return this.addChild(dir, nameBuf(name), S_IFDIR | (mode & 0o7777), uid, gid, { nlink: 2 }, at);
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

  /** `at`: the time the caller chose for the change (a posted unlink, docs/agent.md); else now. */
  unlink(dir: number, name: Name, at?: Time): void {
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    const n = nameBuf(name);
    this.dirInode(dir);
    const child = this.entry(dir, n);
    if (child === undefined) throw new PrismError('ENOENT', `no entry ${JSON.stringify(n.toString())}`);
    const rec = this.inode(child);
    if (isDir(rec.mode)) throw new PrismError('EISDIR', `${JSON.stringify(n.toString())} is a directory`);
    const t = at ?? now();
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
    this.dirty.dropFile(ino);
    const u = this.host.usage(this);
    u.inodes -= 1;
    u.bytes -= rec.bytes ?? 0;
    u.meta -= meta;
    this.orphanDrop(ino);
    this.pins.dropAll(ino);
    this.host.changed(this);
  }

  /** `at`: the time the caller chose for the change (a posted rename, docs/agent.md); else now. */
  rename(d1: number, n1: Name, d2: number, n2: Name, flags: RenameFlags = {}, at?: Time): void {
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    const a = nameBuf(n1), b = nameBuf(n2);
    this.dirInode(d1);
    const d2rec = this.dirInode(d2);
    if (d2rec.nlink === 0) throw new PrismError('ENOENT', 'target directory was removed');
    const src = this.entry(d1, a);
    if (src === undefined) throw new PrismError('ENOENT', `no entry ${JSON.stringify(a.toString())}`);
    const dst = this.entry(d2, b);
    const srec = this.inode(src);
    const t = at ?? now();
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

  /**
   * Count what the volume holds by walking it (after compose, or for a volume recorded before
   * metadata was charged): every directory once, every inode once, and open-unlinked ones.
   */
  override countUsage(): Usage {
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
}

function nameBuf(name: Name): Buffer {
  const b = typeof name === 'string' ? Buffer.from(name) : name;
  if (b.length === 0) throw new PrismError('ENOENT', 'empty name');
  if (b.length > MAX_NAME) throw new PrismError('ENAMETOOLONG', `name longer than ${MAX_NAME} bytes`);
  // A JS loop: names are short, and Buffer.includes is a native call each (two per request).
  for (let i = 0; i < b.length; i++) {
    if (b[i] === 0x2f || b[i] === 0) throw new PrismError('EINVAL', `invalid name ${JSON.stringify(b.toString())}`);
  }
  if ((b.length === 1 && b[0] === 0x2e) || (b.length === 2 && b[0] === 0x2e && b[1] === 0x2e)) {
    throw new PrismError('EINVAL', `"${b.toString()}" is not a name an entry can have`);
  }
  return b;
}

