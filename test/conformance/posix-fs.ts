// The operations the POSIX conformance checks use, as one small synchronous interface: each backend
// (the local file system, a Prism mount, a Volume directly) implements it, so a check is written once.
// Paths are relative to the check's own directory; a Buffer path carries bytes that are not UTF-8.
// Failures throw an error whose `code` is the errno name (ENOENT, ...), as Node's fs does.

/** Seconds and nanoseconds, as the store and FUSE keep times. */
export type Time = [number, number];

export type FileType = 'f' | 'd' | 'l' | 'p' | 'c' | 'b' | 's';

export interface Stat {
  type: FileType;
  /** Permission bits with set-id and sticky bits (mode & 0o7777). */
  perm: number;
  ino: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  /** 512-byte units. */
  blocks: number;
  atime: Time;
  mtime: Time;
}

export interface DirEntry { name: Buffer; type: FileType }

/** open(2) flags as Node spells them: r, r+, w (create, truncate), wx (O_EXCL), w+, a (O_APPEND). */
export type OpenFlags = 'r' | 'r+' | 'w' | 'wx' | 'w+' | 'a';

export type PathArg = string | Buffer;

export interface PosixFs {
  mkdir(p: PathArg, mode?: number): void;
  rmdir(p: PathArg): void;
  unlink(p: PathArg): void;
  /** mode defaults to 0o666; the process umask (0o022 in these tests) applies, as on every backend. */
  open(p: PathArg, flags: OpenFlags, mode?: number): number;
  /** Writes at pos, or at the file position when pos is null; returns the bytes written. */
  pwrite(fd: number, data: Buffer | string, pos: number | null): number;
  pread(fd: number, length: number, pos: number): Buffer;
  fstat(fd: number): Stat;
  close(fd: number): void;
  /** Follows symbolic links (only mounts and the local file system do: it is the kernel's job). */
  stat(p: PathArg): Stat;
  lstat(p: PathArg): Stat;
  /** Entries without "." and "..", in no particular order. */
  readdir(p: PathArg): DirEntry[];
  rename(from: PathArg, to: PathArg, flags?: 'noreplace' | 'exchange'): void;
  link(existing: PathArg, p: PathArg): void;
  symlink(target: string, p: PathArg): void;
  readlink(p: PathArg): string;
  truncate(p: PathArg, size: number): void;
  chmod(p: PathArg, mode: number): void;
  chown(p: PathArg, uid: number, gid: number): void;
  /** utimensat(2): a null time is left as it is (UTIME_OMIT). */
  utimens(p: PathArg, atime: Time | null, mtime: Time | null): void;
  mkfifo(p: PathArg, mode?: number): void;
  setxattr(p: PathArg, name: string, value: Buffer, how?: 'create' | 'replace'): void;
  getxattr(p: PathArg, name: string): Buffer;
  listxattr(p: PathArg): string[];
  removexattr(p: PathArg, name: string): void;
}

/** The umask every backend applies to new files in these tests (set on the test processes too). */
export const UMASK = 0o022;

/** An Error carrying an errno name, as the backends throw. */
export function errnoError(code: string, message: string): Error & { code: string } {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

/** What fn gave, or the errno name it failed with; 'ok' for nothing. Other errors are bugs: rethrown. */
export function outcome(fn: () => unknown): unknown {
  try {
    const v = fn();
    return v === undefined ? 'ok' : v;
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return code;
    throw e;
  }
}

/** open(w), write, close. */
export function writeFile(fs: PosixFs, p: PathArg, data: Buffer | string, flags: OpenFlags = 'w'): void {
  const fd = fs.open(p, flags);
  try { fs.pwrite(fd, data, flags === 'a' ? null : 0); } finally { fs.close(fd); }
}

/** The whole file, as a string. */
export function readFile(fs: PosixFs, p: PathArg): string {
  return readBytes(fs, p).toString();
}

export function readBytes(fs: PosixFs, p: PathArg): Buffer {
  const fd = fs.open(p, 'r');
  try { return fs.pread(fd, fs.fstat(fd).size, 0); } finally { fs.close(fd); }
}

export function exists(fs: PosixFs, p: PathArg): boolean {
  return outcome(() => fs.lstat(p)) !== 'ENOENT';
}

/** Permission bits in octal, as `stat -c %a` prints them. */
export const octal = (st: Stat) => st.perm.toString(8);
