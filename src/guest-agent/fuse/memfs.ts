// A tiny in-memory FileSystem: the reference backend and test subject for the FUSE session.
import { PrismError } from '../../errors.js';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from '../../posix/mode.js';
import type { Ctx, Entry, FileSystem, FuseAttr, FuseDirEntry, FuseSetAttr } from './fs.js';
import type { Time } from '../../posix/types.js';

/** `data` may be longer than the file (spare capacity, zero-filled): attr.size is the file's length. */
interface Node { attr: FuseAttr; data: Buffer; children?: Map<string, bigint>; target?: string }

export class MemFs implements FileSystem {
  private nodes = new Map<bigint, Node>();
  private next = 2n;
  constructor() {
    this.nodes.set(1n, this.mk(1n, S_IFDIR | 0o755, 2, { uid: 0, gid: 0, pid: 0 }));
    this.nodes.get(1n)!.children = new Map();
  }
  private mk(ino: bigint, mode: number, nlink: number, ctx: Ctx): Node {
    const now = nowTime();
    return { attr: { ino, size: 0n, blocks: 0n, atime: now, mtime: now, ctime: now, mode, nlink, uid: ctx.uid, gid: ctx.gid, rdev: 0 }, data: Buffer.alloc(0) };
  }
  private get(ino: bigint): Node {
    const n = this.nodes.get(ino);
    if (!n) throw new PrismError('ESTALE', `inode ${ino}`);
    return n;
  }
  private dir(ino: bigint): Map<string, bigint> {
    const c = this.get(ino).children;
    if (!c) throw new PrismError('ENOTDIR', `inode ${ino}`);
    return c;
  }
  private entry(ino: bigint): Entry { return { ino, attr: { ...this.get(ino).attr } }; }
  private add(ctx: Ctx, parent: bigint, name: string, mode: number): Node {
    const d = this.dir(parent);
    if (d.has(name)) throw new PrismError('EEXIST', name);
    const ino = this.next++;
    const n = this.mk(ino, mode, (mode & S_IFDIR) === S_IFDIR ? 2 : 1, ctx);
    this.nodes.set(ino, n);
    d.set(name, ino);
    if ((mode & S_IFMT) === S_IFDIR) { n.children = new Map(); this.get(parent).attr.nlink++; }
    return n;
  }
  async lookup(_c: Ctx, parent: bigint, name: string): Promise<Entry> {
    const ino = this.dir(parent).get(name);
    if (ino === undefined) throw new PrismError('ENOENT', name);
    return this.entry(ino);
  }
  async getattr(_c: Ctx, ino: bigint): Promise<FuseAttr> { return { ...this.get(ino).attr }; }
  async setattr(_c: Ctx, ino: bigint, s: FuseSetAttr): Promise<FuseAttr> {
    const n = this.get(ino);
    if (s.mode !== undefined) n.attr.mode = (n.attr.mode & S_IFMT) | (s.mode & 0o7777);
    if (s.uid !== undefined) n.attr.uid = s.uid;
    if (s.gid !== undefined) n.attr.gid = s.gid;
    if (s.size !== undefined) {
      const size = Number(s.size), old = Number(n.attr.size);
      if (size < old) n.data.fill(0, size, old); // a later extension reads zeros
      else if (size > n.data.length) grow(n, size);
      n.attr.size = s.size;
    }
    if (s.atime !== undefined) n.attr.atime = s.atime === 'now' ? nowTime() : s.atime;
    if (s.mtime !== undefined) n.attr.mtime = s.mtime === 'now' ? nowTime() : s.mtime;
    return { ...n.attr };
  }
  async readlink(_c: Ctx, ino: bigint): Promise<string> {
    const t = this.get(ino).target;
    if (t === undefined) throw new PrismError('EINVAL', 'not a symlink');
    return t;
  }
  async symlink(c: Ctx, parent: bigint, name: string, target: string): Promise<Entry> {
    const n = this.add(c, parent, name, S_IFLNK | 0o777);
    n.target = target; n.attr.size = BigInt(Buffer.byteLength(target));
    return this.entry(n.attr.ino);
  }
  async mknod(c: Ctx, parent: bigint, name: string, mode: number): Promise<Entry> { return this.entry(this.add(c, parent, name, mode).attr.ino); }
  async mkdir(c: Ctx, parent: bigint, name: string, mode: number): Promise<Entry> { return this.entry(this.add(c, parent, name, S_IFDIR | (mode & 0o7777)).attr.ino); }
  async create(c: Ctx, parent: bigint, name: string, mode: number): Promise<{ entry: Entry; fh: bigint }> {
    return { entry: this.entry(this.add(c, parent, name, S_IFREG | (mode & 0o7777)).attr.ino), fh: 0n };
  }
  private drop(parent: bigint, name: string, wantDir: boolean): void {
    const d = this.dir(parent);
    const ino = d.get(name);
    if (ino === undefined) throw new PrismError('ENOENT', name);
    const n = this.get(ino);
    if (wantDir && !n.children) throw new PrismError('ENOTDIR', name);
    if (!wantDir && n.children) throw new PrismError('EISDIR', name);
    if (n.children && n.children.size) throw new PrismError('ENOTEMPTY', name);
    d.delete(name);
    if (n.children) { this.get(parent).attr.nlink--; n.attr.nlink = 0; } else n.attr.nlink--;
  }
  async unlink(_c: Ctx, parent: bigint, name: string): Promise<void> { this.drop(parent, name, false); }
  async rmdir(_c: Ctx, parent: bigint, name: string): Promise<void> { this.drop(parent, name, true); }
  async rename(_c: Ctx, parent: bigint, name: string, np: bigint, nn: string, flags: number): Promise<void> {
    const from = this.dir(parent), to = this.dir(np);
    const ino = from.get(name);
    if (ino === undefined) throw new PrismError('ENOENT', name);
    if (flags !== 0) throw new PrismError('EINVAL', 'rename flags are not supported by memfs');
    if (to.has(nn)) this.drop(np, nn, this.get(to.get(nn)!).children !== undefined);
    from.delete(name); to.set(nn, ino);
    if (this.get(ino).children && parent !== np) { this.get(parent).attr.nlink--; this.get(np).attr.nlink++; }
  }
  async link(_c: Ctx, ino: bigint, np: bigint, nn: string): Promise<Entry> {
    const d = this.dir(np);
    if (d.has(nn)) throw new PrismError('EEXIST', nn);
    d.set(nn, ino); this.get(ino).attr.nlink++;
    return this.entry(ino);
  }
  async read(_c: Ctx, ino: bigint, _fh: bigint, offset: bigint, size: number, send: (d: Uint8Array) => void): Promise<void> {
    const n = this.get(ino), len = Number(n.attr.size);
    send(n.data.subarray(Math.min(Number(offset), len), Math.min(Number(offset) + size, len)));
  }
  async write(_c: Ctx, ino: bigint, _fh: bigint, offset: bigint, data: Uint8Array): Promise<number> {
    const n = this.get(ino);
    const end = Number(offset) + data.length;
    if (end > n.data.length) grow(n, end);
    n.data.set(data, Number(offset));
    if (BigInt(end) > n.attr.size) n.attr.size = BigInt(end);
    n.attr.mtime = nowTime();
    return data.length;
  }
  async readdir(_c: Ctx, ino: bigint): Promise<FuseDirEntry[]> {
    const out: FuseDirEntry[] = [{ name: '.', ino, type: 4 }, { name: '..', ino: 1n, type: 4 }];
    for (const [name, i] of this.dir(ino)) out.push({ name, ino: i, type: (this.get(i).attr.mode >> 12) & 15 });
    return out;
  }
}

/** Room for at least `len` bytes, doubling: a file written sequentially is copied O(log n) times, not once a write. */
function grow(n: Node, len: number): void {
  const d = Buffer.alloc(Math.max(len, n.data.length * 2));
  n.data.copy(d);
  n.data = d;
}

function nowTime(): Time {
  const ms = Date.now();
  return [Math.floor(ms / 1000), (ms % 1000) * 1e6];
}
