// Extended attributes of a volume's inodes: names and values kept as keys of the inode in the tree,
// charged to the quota as metadata.
import { PrismError } from '../errors.js';
import { now } from '../posix/clock.js';
import { Kind, keySuffix, kindRange, layerOf, localOf, xattrKey, type XattrValue } from './layout.js';
import { VolumeTree, type Name } from './volume-tree.js';
import { MAX_XATTR_VALUE } from '../posix/limits.js';

export abstract class VolumeXattrs extends VolumeTree {
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
