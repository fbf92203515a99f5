// PosixFs over a Volume directly, with no kernel, agent or host in between: each operation is the
// Volume call the host makes for the FUSE request the kernel would send (LOOKUP per path component,
// CREATE with the caller's uid/gid and the umask applied, SETATTR for truncate/chmod/chown/utimens,
// OPEN/CLOSE pins around open files). What only the kernel does (permission checks, following
// symlinks, O_APPEND offsets) is not imitated here: checks that need it say so and run on mounts.
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG } from '../../src/posix/mode.js';
import type { Volume } from '../../src/store/volume.js';
import { errnoError, UMASK, type DirEntry, type FileType, type OpenFlags, type PathArg, type PosixFs, type Stat, type Time } from './posix-fs.js';

/** Who makes the calls: the uid and gid the kernel puts in each FUSE request. */
export interface Caller { uid: number; gid: number }

/** The owner of this adapter's pins (a VM's name on a real host). */
const OWNER = 'conformance';

const TYPES: Record<number, FileType> = { [S_IFREG]: 'f', [S_IFDIR]: 'd', [S_IFLNK]: 'l', [S_IFIFO]: 'p', [S_IFCHR]: 'c', [S_IFBLK]: 'b' };
const typeOf = (mode: number): FileType => TYPES[mode & S_IFMT] ?? 's';

interface Attr { ino: number; mode: number; nlink: number; uid: number; gid: number; size: number; blocks: number; atime: Time; mtime: Time }

function toStat(a: Attr): Stat {
  return { type: typeOf(a.mode), perm: a.mode & 0o7777, ino: a.ino, nlink: a.nlink, uid: a.uid, gid: a.gid, size: a.size, blocks: a.blocks, atime: a.atime, mtime: a.mtime };
}

interface OpenFile { ino: number; pos: number }

export class VolumeFs implements PosixFs {
  private readonly files = new Map<number, OpenFile>();
  private nextFd = 3;

  constructor(private readonly v: Volume, private readonly rootIno: number, private readonly caller: Caller) {}

  /** The names of a path, as bytes. */
  private names(p: PathArg): Buffer[] {
    const b = typeof p === 'string' ? Buffer.from(p) : p;
    const out: Buffer[] = [];
    let start = 0;
    for (let i = 0; i <= b.length; i++) {
      if (i < b.length && b[i] !== 0x2f) continue;
      if (i > start) out.push(b.subarray(start, i));
      start = i + 1;
    }
    return out;
  }

  /** LOOKUP of each component from the check's directory (symlinks in the path are not followed). */
  private walk(names: Buffer[]): number {
    let ino = this.rootIno;
    for (const n of names) ino = this.v.lookup(ino, n).ino;
    return ino;
  }

  private resolve(p: PathArg): number { return this.walk(this.names(p)); }

  /** The directory and the last name of a path. */
  private parent(p: PathArg): [number, Buffer] {
    const names = this.names(p);
    const last = names.pop();
    if (!last) throw errnoError('EEXIST', 'the check directory itself');
    return [this.walk(names), last];
  }

  private file(fd: number): OpenFile {
    const f = this.files.get(fd);
    if (!f) throw errnoError('EBADF', `fd ${fd}`);
    return f;
  }

  mkdir(p: PathArg, mode = 0o777): void {
    const [d, n] = this.parent(p);
    this.v.mkdir(d, n, mode & ~UMASK, this.caller.uid, this.caller.gid);
  }
  rmdir(p: PathArg): void { const [d, n] = this.parent(p); this.v.rmdir(d, n); }
  unlink(p: PathArg): void { const [d, n] = this.parent(p); this.v.unlink(d, n); }

  open(p: PathArg, flags: OpenFlags, mode = 0o666): number {
    let ino: number;
    if (flags === 'r' || flags === 'r+') {
      ino = this.resolve(p);
      if (flags === 'r+' && (this.v.getattr(ino).mode & S_IFMT) === S_IFDIR) throw errnoError('EISDIR', 'open for writing');
    } else if (flags === 'w' || flags === 'w+' || flags === 'wx') {
      const [d, n] = this.parent(p);
      const a = this.v.create(d, n, mode & ~UMASK, this.caller.uid, this.caller.gid, flags === 'wx');
      ino = a.ino;
      if (a.size !== 0) this.v.setattr(ino, { size: 0 }); // O_TRUNC: the kernel sends SETATTR
    } else {
      throw new Error(`VolumeFs: open flags ${flags} need the kernel (O_APPEND offsets)`);
    }
    this.v.open(ino, OWNER);
    const fd = this.nextFd++;
    this.files.set(fd, { ino, pos: 0 });
    return fd;
  }
  pwrite(fd: number, data: Buffer | string, pos: number | null): number {
    const f = this.file(fd);
    const b = typeof data === 'string' ? Buffer.from(data) : data;
    this.v.write(f.ino, pos ?? f.pos, b);
    if (pos === null) f.pos += b.length;
    return b.length;
  }
  pread(fd: number, length: number, pos: number): Buffer {
    return Buffer.from(this.v.read(this.file(fd).ino, pos, length).data);
  }
  fstat(fd: number): Stat { return toStat(this.v.getattr(this.file(fd).ino)); }
  close(fd: number): void {
    this.v.close(this.file(fd).ino, OWNER);
    this.files.delete(fd);
  }
  stat(p: PathArg): Stat {
    const st = this.lstat(p);
    if (st.type === 'l') throw new Error('VolumeFs: following symbolic links is the kernel\'s job');
    return st;
  }
  lstat(p: PathArg): Stat { return toStat(this.v.getattr(this.resolve(p))); }
  readdir(p: PathArg): DirEntry[] {
    return this.v.readdir(this.resolve(p)).map((e) => ({ name: Buffer.from(e.name), type: typeOf(e.type) }));
  }
  rename(from: PathArg, to: PathArg, flags?: 'noreplace' | 'exchange'): void {
    const [d1, n1] = this.parent(from);
    const [d2, n2] = this.parent(to);
    this.v.rename(d1, n1, d2, n2, { noreplace: flags === 'noreplace', exchange: flags === 'exchange' });
  }
  link(existing: PathArg, p: PathArg): void {
    const ino = this.resolve(existing);
    const [d, n] = this.parent(p);
    this.v.link(ino, d, n);
  }
  symlink(target: string, p: PathArg): void {
    const [d, n] = this.parent(p);
    this.v.symlink(d, n, target, this.caller.uid, this.caller.gid);
  }
  readlink(p: PathArg): string { return this.v.readlink(this.resolve(p)).toString(); }
  truncate(p: PathArg, size: number): void { this.v.setattr(this.resolve(p), { size }); }
  chmod(p: PathArg, mode: number): void { this.v.setattr(this.resolve(p), { mode }); }
  chown(p: PathArg, uid: number, gid: number): void { this.v.setattr(this.resolve(p), { uid, gid }); }
  utimens(p: PathArg, atime: Time | null, mtime: Time | null): void {
    this.v.setattr(this.resolve(p), { ...(atime ? { atime } : {}), ...(mtime ? { mtime } : {}) });
  }
  mkfifo(p: PathArg, mode = 0o666): void {
    const [d, n] = this.parent(p);
    this.v.mknod(d, n, S_IFIFO | (mode & ~UMASK), 0, this.caller.uid, this.caller.gid);
  }
  setxattr(p: PathArg, name: string, value: Buffer, how?: 'create' | 'replace'): void {
    this.v.setxattr(this.resolve(p), name, value, how ?? 'either');
  }
  getxattr(p: PathArg, name: string): Buffer { return Buffer.from(this.v.getxattr(this.resolve(p), name)); }
  listxattr(p: PathArg): string[] { return this.v.listxattr(this.resolve(p)).map((n) => n.toString()); }
  removexattr(p: PathArg, name: string): void { this.v.removexattr(this.resolve(p), name); }
}
