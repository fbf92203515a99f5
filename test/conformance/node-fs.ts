// PosixFs over real system calls in a directory: the local file system the checks compare against,
// and a Prism mount. Node's fs has no renameat2, xattrs, utimensat with UTIME_OMIT or mkfifo: those go
// through one short python3 program (ctypes), which reports the errno name.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { errnoError, type DirEntry, type FileType, type OpenFlags, type PathArg, type PosixFs, type Stat, type Time } from './posix-fs.js';

// Paths are passed in hex (a name may hold any bytes but NUL and '/'), values in hex, the rest as numbers.
const PY = `
import ctypes, errno, json, os, sys
op, a = sys.argv[1], sys.argv[2:]
p = bytes.fromhex(a[0])
libc = ctypes.CDLL(None, use_errno=True)
def check(r):
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
try:
    r = None
    if op == 'renameat2': check(libc.renameat2(-100, p, -100, bytes.fromhex(a[1]), int(a[2])))
    elif op == 'setxattr': os.setxattr(p, a[1], bytes.fromhex(a[2]), int(a[3]))
    elif op == 'getxattr': r = os.getxattr(p, a[1]).hex()
    elif op == 'listxattr': r = os.listxattr(p)
    elif op == 'removexattr': os.removexattr(p, a[1])
    elif op == 'mkfifo': os.mkfifo(p, int(a[1]))
    elif op == 'utimens':
        ts = (ctypes.c_long * 4)(*[int(x) for x in a[1:5]])
        check(libc.utimensat(-100, p, ts, 0))
    print(json.dumps({'ok': r}))
except OSError as e:
    print(json.dumps({'err': errno.errorcode.get(e.errno, str(e.errno))}))
`;
const UTIME_OMIT = (1 << 30) - 2;
const XATTR_FLAGS = { create: 1, replace: 2 } as const;

function typeOf(s: fs.Stats | fs.BigIntStats | fs.Dirent<Buffer>): FileType {
  if (s.isFile()) return 'f';
  if (s.isDirectory()) return 'd';
  if (s.isSymbolicLink()) return 'l';
  if (s.isFIFO()) return 'p';
  if (s.isCharacterDevice()) return 'c';
  if (s.isBlockDevice()) return 'b';
  return 's';
}

const time = (ns: bigint): Time => [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];

function toStat(s: fs.BigIntStats): Stat {
  return {
    type: typeOf(s), perm: Number(s.mode) & 0o7777, ino: Number(s.ino), nlink: Number(s.nlink),
    uid: Number(s.uid), gid: Number(s.gid), size: Number(s.size), blocks: Number(s.blocks),
    atime: time(s.atimeNs), mtime: time(s.mtimeNs),
  };
}

export class NodeFs implements PosixFs {
  constructor(readonly root: string) {}

  private at(p: PathArg): string | Buffer {
    return typeof p === 'string' ? `${this.root}/${p}` : Buffer.concat([Buffer.from(`${this.root}/`), p]);
  }

  /** A path as python3 takes it here: hex, so bytes that are not UTF-8 arrive intact. */
  private arg(p: PathArg): string {
    return Buffer.from(this.at(p)).toString('hex');
  }

  /** One operation in a python3 started without site packages (-S): half its start-up time. */
  private py(op: string, ...args: string[]): unknown {
    const r = spawnSync('python3', ['-S', '-c', PY, op, ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`python3 ${op} failed (${r.status ?? r.signal}): ${r.stderr}${r.error ?? ''}`);
    const out = JSON.parse(r.stdout) as { ok?: unknown; err?: string };
    if (out.err) throw errnoError(out.err, `${op} ${Buffer.from(args[0]!, 'hex').toString()}`);
    return out.ok;
  }

  mkdir(p: PathArg, mode = 0o777): void { fs.mkdirSync(this.at(p), mode); }
  rmdir(p: PathArg): void { fs.rmdirSync(this.at(p)); }
  unlink(p: PathArg): void { fs.unlinkSync(this.at(p)); }
  open(p: PathArg, flags: OpenFlags, mode = 0o666): number { return fs.openSync(this.at(p), flags, mode); }
  pwrite(fd: number, data: Buffer | string, pos: number | null): number {
    const b = typeof data === 'string' ? Buffer.from(data) : data;
    return fs.writeSync(fd, b, 0, b.length, pos);
  }
  pread(fd: number, length: number, pos: number): Buffer {
    const b = Buffer.alloc(length);
    return b.subarray(0, fs.readSync(fd, b, 0, length, pos));
  }
  fstat(fd: number): Stat { return toStat(fs.fstatSync(fd, { bigint: true })); }
  close(fd: number): void { fs.closeSync(fd); }
  stat(p: PathArg): Stat { return toStat(fs.statSync(this.at(p), { bigint: true })); }
  lstat(p: PathArg): Stat { return toStat(fs.lstatSync(this.at(p), { bigint: true })); }
  readdir(p: PathArg): DirEntry[] {
    return fs.readdirSync(this.at(p), { withFileTypes: true, encoding: 'buffer' }).map((e) => ({ name: e.name, type: typeOf(e) }));
  }
  rename(from: PathArg, to: PathArg, flags?: 'noreplace' | 'exchange'): void {
    if (!flags) { fs.renameSync(this.at(from), this.at(to)); return; }
    this.py('renameat2', this.arg(from), this.arg(to), String(flags === 'noreplace' ? 1 : 2));
  }
  link(existing: PathArg, p: PathArg): void { fs.linkSync(this.at(existing), this.at(p)); }
  symlink(target: string, p: PathArg): void { fs.symlinkSync(target, this.at(p)); }
  readlink(p: PathArg): string { return fs.readlinkSync(this.at(p), 'utf8'); }
  truncate(p: PathArg, size: number): void { fs.truncateSync(this.at(p), size); }
  chmod(p: PathArg, mode: number): void { fs.chmodSync(this.at(p), mode); }
  chown(p: PathArg, uid: number, gid: number): void { fs.chownSync(this.at(p), uid, gid); }
  utimens(p: PathArg, atime: Time | null, mtime: Time | null): void {
    const ts = [...(atime ?? [0, UTIME_OMIT]), ...(mtime ?? [0, UTIME_OMIT])].map(String);
    this.py('utimens', this.arg(p), ...ts);
  }
  mkfifo(p: PathArg, mode = 0o666): void { this.py('mkfifo', this.arg(p), String(mode)); }
  setxattr(p: PathArg, name: string, value: Buffer, how?: 'create' | 'replace'): void {
    this.py('setxattr', this.arg(p), name, value.toString('hex'), String(how ? XATTR_FLAGS[how] : 0));
  }
  getxattr(p: PathArg, name: string): Buffer { return Buffer.from(this.py('getxattr', this.arg(p), name) as string, 'hex'); }
  listxattr(p: PathArg): string[] { return this.py('listxattr', this.arg(p)) as string[]; }
  removexattr(p: PathArg, name: string): void { this.py('removexattr', this.arg(p), name); }
}
