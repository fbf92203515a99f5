// One volume: a POSIX file system over the layers of copy-on-write trees described in layout.ts.
// Every method is synchronous and leaves the volume consistent; the store commits between calls.
// Inputs are trusted to be well-formed (the host validates at the boundary); semantic errors are
// PrismErrors with POSIX codes.
//
// Volume is built in layers of one class, each a concern in its own file: volume-tree.ts (records
// in the tree, quota, attributes), xattrs.ts, file-data.ts (with dirty-blocks.ts), namespace.ts
// (with pins.ts), and here inode attributes that change and open files.
import { PrismError } from '../errors.js';
import { cmpTime, now } from '../posix/clock.js';
import { S_IFMT, isDir, isReg } from '../posix/mode.js';
import type { Attr, SetAttr, Time } from '../posix/types.js';
import type { InodeRec } from './layout.js';
import { VolumeNamespace } from './namespace.js';
import { LOCAL_OWNER } from './pins.js';

export interface RenameFlags { noreplace?: boolean; exchange?: boolean }

export class Volume extends VolumeNamespace {
  getattr(ino: number): Attr {
    return this.attr(ino);
  }

  setattr(ino: number, s: SetAttr): Attr {
    let rec = this.inode(ino);
    const t = now();
    const change: Partial<InodeRec> = {};
    if (s.size !== undefined) {
      // The type first: a directory's stored size is 0, and truncating it to 0 is still EISDIR.
      if (isDir(rec.mode)) throw new PrismError('EISDIR', 'cannot set the size of a directory');
      if (!isReg(rec.mode)) throw new PrismError('EINVAL', 'size applies only to regular files');
      if (s.size !== rec.size) {
        this.truncate(ino, s.size);
        rec = this.inode(ino);
      }
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

  /**
   * Times from the intent log (replay), taken unless the inode's ctime is later than the logged one:
   * a commit since then holds a newer change of it.
   */
  restoreTimes(ino: number, atime: Time, mtime: Time, ctime: Time): void {
    if (cmpTime(this.inode(ino).ctime, ctime) > 0) return;
    this.update(ino, { atime, mtime, ctime });
  }

  access(ino: number, uid: number, gids: number[], mask: number): void {
    const rec = this.inode(ino);
    if ((mask & 2) && this.rec.readOnly) throw new PrismError('EROFS', `volume ${this.shownName} is a read-only snapshot`);
    if (uid === 0) {
      if ((mask & 1) && !isDir(rec.mode) && (rec.mode & 0o111) === 0) throw new PrismError('EACCES', 'not executable');
      return;
    }
    const bits = uid === rec.uid ? (rec.mode >> 6) & 7 : gids.includes(rec.gid) ? (rec.mode >> 3) & 7 : rec.mode & 7;
    if ((bits & mask) !== mask) throw new PrismError('EACCES', 'permission denied');
  }

  // ---- open files ----------------------------------------------------------------------------

  /** Pin an inode for owner (a VM's name): while pinned, unlinking it keeps it alive. */
  open(ino: number, owner: string = LOCAL_OWNER): void {
    this.inode(ino);
    this.pins.take(ino, owner, this.name);
  }

  /** Release one of owner's pins; the last pin of an unlinked inode frees it. EBADF if owner holds none. */
  close(ino: number, owner: string = LOCAL_OWNER): void {
    if (!this.pins.release(ino, owner)) return;
    if (this.rec.orphans.includes(ino)) this.freeInode(ino);
    else this.flushFile(ino);
  }

  /** Pins an owner holds on this volume (for status and tests). */
  pinsOf(owner: string): number {
    return this.pins.of(owner);
  }
}
