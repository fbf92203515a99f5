// Differences between two volumes, by path: what was added, removed or changed from A to B.
// Content is compared by block hashes, so no file data is read.
import type { Store } from './store.js';
import { isDir, isLnk, isReg, S_IFDIR, S_IFMT } from '../posix/mode.js';
import type { Volume } from './volume.js';

export interface DiffResult { added: string[]; removed: string[]; changed: string[] }

export function diffVolumes(store: Store, a: string, b: string): DiffResult {
  const va = store.volume(a), vb = store.volume(b);
  const out: DiffResult = { added: [], removed: [], changed: [] };
  const sameTrees = va.rec.layers.length === vb.rec.layers.length && va.rec.root === vb.rec.root
    && va.rec.layers.every((l, i) => l.root === vb.rec.layers[i].root);
  if (!sameTrees) walk(va, vb, va.rootIno, vb.rootIno, '', out);
  for (const list of [out.added, out.removed, out.changed]) list.sort();
  return out;
}

function sameContent(va: Volume, vb: Volume, ia: number, ib: number): boolean {
  const ra = va.inode(ia), rb = vb.inode(ib);
  if (ra.mode !== rb.mode || ra.uid !== rb.uid || ra.gid !== rb.gid) return false;
  if (isLnk(ra.mode)) return !!ra.target && !!rb.target && ra.target.equals(rb.target);
  if (!isReg(ra.mode)) return (ra.rdev ?? 0) === (rb.rdev ?? 0);
  if (ra.size !== rb.size) return false;
  const ba = va.blockList(ia), bb = vb.blockList(ib);
  if (ba.length !== bb.length) return false;
  return ba.every(([i, h], k) => bb[k][0] === i && bb[k][1].equals(h));
}

function walk(va: Volume, vb: Volume, da: number, db: number, prefix: string, out: DiffResult): void {
  const ea = va.readdir(da), eb = vb.readdir(db);
  const mb = new Map(eb.map((e) => [e.name.toString('latin1'), e]));
  const addAll = (v: Volume, ino: number, p: string, list: string[]) => {
    list.push(p);
    if (isDir(v.inode(ino).mode)) for (const e of v.readdir(ino)) addAll(v, e.ino, `${p}/${e.name.toString()}`, list);
  };
  for (const x of ea) {
    const key = x.name.toString('latin1');
    const p = `${prefix}/${x.name.toString()}`;
    const y = mb.get(key);
    if (!y) { addAll(va, x.ino, p, out.removed); continue; }
    mb.delete(key);
    const dirA = (x.type & S_IFMT) === S_IFDIR, dirB = (y.type & S_IFMT) === S_IFDIR;
    if (dirA && dirB) {
      const ra = va.inode(x.ino), rb = vb.inode(y.ino);
      if (ra.mode !== rb.mode || ra.uid !== rb.uid || ra.gid !== rb.gid) out.changed.push(p);
      walk(va, vb, x.ino, y.ino, p, out);
    } else if (dirA !== dirB) {
      addAll(va, x.ino, p, out.removed);
      addAll(vb, y.ino, p, out.added);
    } else if (!sameContent(va, vb, x.ino, y.ino)) {
      out.changed.push(p);
    }
  }
  for (const y of mb.values()) addAll(vb, y.ino, `${prefix}/${y.name.toString()}`, out.added);
}
