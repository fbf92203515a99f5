// The POSIX conformance checks, written once: every backend (Volume directly, FUSE over shared memory
// with and without the metadata table, FUSE over TCP) runs each one and must give what the local file
// system gives in the same test, errno for errno and value for value (test/conformance/macro.ts).
// Each check starts in an empty directory of its own, so any one can run alone.
import { exists, octal, outcome, readBytes, readFile, writeFile, type PosixFs } from './posix-fs.js';

/** root, or the unprivileged nobody (uid and gid 65534). */
export type Role = 'root' | 'nobody';

export interface PosixCheck {
  title: string;
  /** Run first, as root, in the check's empty directory. */
  setup?(fs: PosixFs): void;
  /** Who runs `run` (root unless said). */
  as?: Role;
  /** What it gives (JSON), or the errno name it fails with. */
  run(fs: PosixFs): unknown;
  /** What the local file system gives too: keeps each comparison about something. */
  expect?: unknown;
  /**
   * Why the answer is the kernel's, not the file system's (permission checks with default_permissions,
   * following symlinks, O_APPEND offsets, set-id bits dropped on chown): such checks run on mounts only.
   */
  kernel?: string;
  /** Needs root on the local file system (chown to other users, running as nobody). */
  privileged?: boolean;
}

const NOBODY = 65534;
const PERMISSIONS = 'permission checks (default_permissions)';
const KILLPRIV = 'set-id bits and capabilities dropped on write and truncate';
/** A valid file capability (VFS_CAP_REVISION_2, CAP_NET_BIND_SERVICE permitted): the kernel checks the format. */
const FILE_CAPS = Buffer.from([0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

/** Set up what the unprivileged checks look at, as the old probe did: a private, a public, a sticky and a setgid directory. */
function sharedDirs(fs: PosixFs): void {
  fs.mkdir('priv', 0o700);
  fs.mkdir('pub');
  fs.chmod('pub', 0o777);
  fs.mkdir('sticky');
  fs.chmod('sticky', 0o1777);
  writeFile(fs, 'sticky/roots', 'r');
  fs.chmod('sticky/roots', 0o666);
  writeFile(fs, 'ro', 'r');
  fs.chmod('ro', 0o644);
  fs.mkdir('sg');
  fs.chown('sg', 0, 100);
  fs.chmod('sg', 0o2777);
}

/** Two empty-ish directory trees for the rename checks: a/x, a/y and a file f. */
function renameTree(fs: PosixFs): void {
  fs.mkdir('a', 0o750);
  fs.mkdir('a/x');
  fs.mkdir('a/y');
  writeFile(fs, 'f', 'hello');
}

const names = (fs: PosixFs, p: string) => fs.readdir(p).map((e) => e.name.toString()).sort();

export const checks: PosixCheck[] = [
  // ---- directories -----------------------------------------------------------------------------
  { title: 'mkdir gives the mode asked (less the umask) and two links', run: (fs) => { fs.mkdir('a', 0o750); return [octal(fs.stat('a')), fs.stat('a').nlink]; }, expect: ['750', 2] },
  { title: 'mkdir of an existing name', setup: (fs) => fs.mkdir('a'), run: (fs) => fs.mkdir('a'), expect: 'EEXIST' },
  { title: 'rmdir of a missing name', run: (fs) => fs.rmdir('nope'), expect: 'ENOENT' },
  { title: 'subdirectories count in the parent\'s links', run: (fs) => { fs.mkdir('a'); fs.mkdir('a/x'); fs.mkdir('a/y'); return fs.stat('a').nlink; }, expect: 4 },
  { title: 'rmdir of a non-empty directory', setup: (fs) => { fs.mkdir('a'); fs.mkdir('a/x'); }, run: (fs) => fs.rmdir('a'), expect: 'ENOTEMPTY' },
  { title: 'unlink of a directory', setup: (fs) => fs.mkdir('a'), run: (fs) => fs.unlink('a'), expect: 'EISDIR' },
  { title: 'rmdir of a file', setup: (fs) => writeFile(fs, 'f', 'x'), run: (fs) => fs.rmdir('f'), expect: 'ENOTDIR' },
  { title: 'a file used as a directory', setup: (fs) => writeFile(fs, 'f', 'x'), run: (fs) => fs.lstat('f/x'), expect: 'ENOTDIR' },

  // ---- files and names -------------------------------------------------------------------------
  { title: 'a written file has its size and the mode asked less the umask', run: (fs) => { writeFile(fs, 'f', 'hello'); return [fs.stat('f').size, octal(fs.stat('f'))]; }, expect: [5, '644'] },
  { title: 'O_EXCL on an existing file', setup: (fs) => writeFile(fs, 'f', 'x'), run: (fs) => fs.open('f', 'wx'), expect: 'EEXIST' },
  { title: 'open of a missing file', run: (fs) => fs.open('missing', 'r'), expect: 'ENOENT' },
  { title: 'a name of 256 bytes', run: (fs) => writeFile(fs, 'n'.repeat(256), ''), expect: 'ENAMETOOLONG' },
  // Answered by the agent itself where it posts the change: the name's length must be checked there.
  { title: 'mkdir of a name of 256 bytes', run: (fs) => fs.mkdir('n'.repeat(256)), expect: 'ENAMETOOLONG' },
  {
    title: 'rename to a name of 256 bytes leaves the file where it was',
    setup: (fs) => writeFile(fs, 'f', 'x'),
    run: (fs) => { try { fs.rename('f', 'n'.repeat(256)); return 'renamed'; } catch (e) { return [(e as NodeJS.ErrnoException).code, fs.readdir('').map((d) => d.name.toString())]; } },
    expect: ['ENAMETOOLONG', ['f']],
  },
  { title: 'a name of 255 bytes', run: (fs) => { writeFile(fs, 'n'.repeat(255), ''); fs.unlink('n'.repeat(255)); }, expect: 'ok' },
  {
    title: 'a name with bytes that are not UTF-8, a space and a newline',
    run: (fs) => {
      const name = Buffer.from([0x66, 0xff, 0xfe, 0x20, 0x0a, 0xc3, 0xa9]);
      writeFile(fs, name, 'x');
      const seen = fs.readdir('').some((e) => e.name.equals(name));
      fs.unlink(name);
      return [seen, fs.readdir('').length];
    },
    expect: [true, 0],
  },

  // ---- rename ----------------------------------------------------------------------------------
  { title: 'rename of a directory into itself', setup: renameTree, run: (fs) => fs.rename('a', 'a/x/a'), expect: 'EINVAL' },
  { title: 'rename of a file over a directory', setup: renameTree, run: (fs) => fs.rename('f', 'a/y'), expect: 'EISDIR' },
  { title: 'rename of a directory over a file', setup: renameTree, run: (fs) => fs.rename('a/y', 'f'), expect: 'ENOTDIR' },
  { title: 'rename of a directory over a non-empty directory', setup: (fs) => { renameTree(fs); fs.mkdir('b'); fs.mkdir('b/c'); }, run: (fs) => fs.rename('b', 'a'), expect: 'ENOTEMPTY' },
  {
    title: 'rename of a directory over an empty directory',
    setup: (fs) => { renameTree(fs); fs.mkdir('b'); fs.mkdir('b/c'); },
    run: (fs) => { fs.rename('b', 'a/y'); return [names(fs, 'a'), names(fs, 'a/y'), names(fs, ''), fs.stat('a').nlink]; },
    expect: [['x', 'y'], ['c'], ['a', 'f'], 4],
  },
  {
    title: 'rename over a file replaces it',
    setup: (fs) => writeFile(fs, 'f', 'first'),
    run: (fs) => {
      writeFile(fs, 'g', 'second');
      const ino = fs.stat('g').ino;
      fs.rename('g', 'f');
      return [readFile(fs, 'f'), fs.stat('f').ino === ino, exists(fs, 'g')];
    },
    expect: ['second', true, false],
  },
  {
    title: 'RENAME_NOREPLACE over an existing name',
    setup: (fs) => { writeFile(fs, 'f', 'f'); writeFile(fs, 'g', 'g'); },
    run: (fs) => [outcome(() => fs.rename('g', 'f', 'noreplace')), readFile(fs, 'f'), readFile(fs, 'g')],
    expect: ['EEXIST', 'f', 'g'],
  },
  {
    title: 'RENAME_EXCHANGE swaps two names',
    setup: (fs) => { writeFile(fs, 'f', 'f'); fs.mkdir('d'); },
    run: (fs) => { fs.rename('d', 'f', 'exchange'); return [readFile(fs, 'd'), fs.stat('f').type, outcome(() => fs.rename('f', 'missing', 'exchange'))]; },
    expect: ['f', 'd', 'ENOENT'],
  },

  // ---- links -----------------------------------------------------------------------------------
  {
    title: 'hard links share the file and count',
    setup: (fs) => writeFile(fs, 'f', 'data'),
    run: (fs) => {
      fs.link('f', 'h');
      const two = fs.stat('f').nlink;
      fs.unlink('f');
      return [two, fs.stat('h').nlink, readFile(fs, 'h'), outcome(() => fs.link('h', 'h'))];
    },
    expect: [2, 1, 'data', 'EEXIST'],
  },
  { title: 'a hard link to a directory', setup: (fs) => fs.mkdir('a'), run: (fs) => fs.link('a', 'a2'), expect: 'EPERM' },
  {
    title: 'a symlink keeps its target, its size is the target\'s length',
    run: (fs) => { fs.symlink('h', 's'); const st = fs.lstat('s'); return [fs.readlink('s'), st.size, st.type, outcome(() => fs.readlink(''))]; },
    expect: ['h', 1, 'l', 'EINVAL'],
  },
  {
    title: 'a file read through a symlink',
    kernel: 'following symlinks',
    setup: (fs) => writeFile(fs, 'h', 'through'),
    run: (fs) => { fs.symlink('h', 's'); return readFile(fs, 's'); },
    expect: 'through',
  },
  {
    title: 'a dangling symlink',
    kernel: 'following symlinks',
    run: (fs) => { fs.symlink('nowhere', 's2'); return [fs.lstat('s2').type, outcome(() => fs.stat('s2'))]; },
    expect: ['l', 'ENOENT'],
  },

  // ---- open files ------------------------------------------------------------------------------
  {
    title: 'a file unlinked while open stays readable and writable',
    run: (fs) => {
      const fd = fs.open('u', 'w+');
      fs.pwrite(fd, 'still here', 0);
      fs.unlink('u');
      const n = fs.fstat(fd).nlink;
      fs.pwrite(fd, '!', 10);
      const b = fs.pread(fd, 11, 0);
      fs.close(fd);
      return [n, b.toString(), exists(fs, 'u')];
    },
    expect: [0, 'still here!', false],
  },
  {
    title: 'O_APPEND writes at the end whatever the offset',
    kernel: 'O_APPEND offsets',
    setup: (fs) => writeFile(fs, 'ap', 'abc'),
    run: (fs) => {
      const fd = fs.open('ap', 'a');
      fs.pwrite(fd, 'de', null);
      fs.pwrite(fd, 'f', 0); // Linux appends even with an offset
      fs.close(fd);
      return readFile(fs, 'ap');
    },
    expect: 'abcdef',
  },
  {
    title: 'truncate up reads zeros, truncate down cuts',
    setup: (fs) => writeFile(fs, 'ap', 'abcdef'),
    run: (fs) => {
      fs.truncate('ap', 10000);
      const grown = readBytes(fs, 'ap');
      fs.truncate('ap', 2);
      return [grown.length, grown.subarray(6).every((x) => x === 0), readFile(fs, 'ap'), outcome(() => fs.truncate('', 10))];
    },
    expect: [10000, true, 'ab', 'EISDIR'],
  },
  {
    title: 'truncate of a directory to size 0',
    run: (fs) => fs.truncate('', 0),
    expect: 'EISDIR',
  },
  { title: 'O_TRUNC empties a file before the write', setup: (fs) => writeFile(fs, 'ap', 'abcdef'), run: (fs) => { writeFile(fs, 'ap', 'z'); return readFile(fs, 'ap'); }, expect: 'z' },
  {
    title: 'utimensat keeps nanoseconds and leaves an omitted time alone',
    setup: (fs) => writeFile(fs, 'ap', 'x'),
    run: (fs) => {
      fs.utimens('ap', null, [1580702706, 123456789]);
      fs.utimens('ap', [978307200, 1], null);
      const st = fs.stat('ap');
      return [st.mtime, st.atime];
    },
    expect: [[1580702706, 123456789], [978307200, 1]],
  },
  {
    title: 'a sparse file beyond 4 GiB',
    run: (fs) => {
      const fd = fs.open('sparse', 'w+');
      const at = 5 * 2 ** 30 + 12345;
      fs.pwrite(fd, 'tail', 0);
      fs.pwrite(fd, 'end', at);
      const hole = fs.pread(fd, 8, 4 * 2 ** 30 + 7);
      const st = fs.fstat(fd);
      const back = fs.pread(fd, 3, at);
      fs.close(fd);
      return [st.size, hole.length, hole.every((x) => x === 0), back.toString(), st.blocks * 512 < 4 << 20];
    },
    expect: [5 * 2 ** 30 + 12348, 8, true, 'end', true],
  },

  // ---- attributes ------------------------------------------------------------------------------
  { title: 'chmod keeps set-id and sticky bits', setup: (fs) => writeFile(fs, 'h', 'x'), run: (fs) => { fs.chmod('h', 0o4751); const a = octal(fs.stat('h')); fs.chmod('h', 0o1700); return [a, octal(fs.stat('h'))]; }, expect: ['4751', '1700'] },
  { title: 'chown sets owner and group', privileged: true, setup: (fs) => writeFile(fs, 'h', 'x'), run: (fs) => { fs.chown('h', NOBODY, 100); const st = fs.stat('h'); return [st.uid, st.gid]; }, expect: [NOBODY, 100] },
  {
    title: 'chown drops the set-user-ID bit',
    kernel: 'set-id bits dropped on chown',
    privileged: true,
    setup: (fs) => writeFile(fs, 'h', 'x'),
    run: (fs) => { fs.chmod('h', 0o4751); fs.chown('h', NOBODY, 100); const a = octal(fs.stat('h')); fs.chmod('h', 0o4755); fs.chown('h', 0, 0); return [a, octal(fs.stat('h'))]; },
    expect: ['751', '755'],
  },
  {
    title: 'chown drops setgid of a group-executable file, a directory keeps it',
    kernel: 'set-id bits dropped on chown',
    privileged: true,
    setup: (fs) => { writeFile(fs, 'h', 'x'); fs.mkdir('d'); },
    run: (fs) => { fs.chmod('h', 0o2755); fs.chmod('d', 0o2755); fs.chown('h', NOBODY, 100); fs.chown('d', NOBODY, 100); return [octal(fs.stat('h')), octal(fs.stat('d'))]; },
    expect: ['755', '2755'],
  },
  {
    title: 'a write by root keeps set-id bits (CAP_FSETID)',
    kernel: KILLPRIV,
    setup: (fs) => { writeFile(fs, 'h', 'x'); fs.chmod('h', 0o6755); },
    run: (fs) => { const fd = fs.open('h', 'r+'); try { fs.pwrite(fd, 'y', 1); } finally { fs.close(fd); } return octal(fs.stat('h')); },
    expect: '6755',
  },
  {
    title: 'a write by nobody drops setuid, and setgid unless the group may not execute and nobody is in it',
    as: 'nobody',
    kernel: KILLPRIV,
    privileged: true,
    setup: (fs) => {
      sharedDirs(fs);
      for (const [f, m] of [['pub/a', 0o6777], ['pub/b', 0o6767], ['pub/c', 0o6767]] as const) { writeFile(fs, f, 'x'); fs.chmod(f, m); }
      fs.chown('pub/c', 0, NOBODY);
      fs.chmod('pub/c', 0o6767);
    },
    run: (fs) => ['pub/a', 'pub/b', 'pub/c'].map((f) => { const fd = fs.open(f, 'r+'); try { fs.pwrite(fd, 'y', 1); } finally { fs.close(fd); } return octal(fs.stat(f)); }),
    expect: ['777', '767', '2767'],
  },
  {
    title: 'a truncation by nobody drops set-id bits, by truncate and by open(O_TRUNC)',
    as: 'nobody',
    kernel: KILLPRIV,
    setup: (fs) => { sharedDirs(fs); for (const f of ['pub/t', 'pub/o']) { writeFile(fs, f, 'xyz'); fs.chmod(f, 0o6777); } },
    run: (fs) => { fs.truncate('pub/t', 1); fs.close(fs.open('pub/o', 'w')); return [octal(fs.stat('pub/t')), octal(fs.stat('pub/o')), fs.stat('pub/t').size]; },
    expect: ['777', '777', 1],
  },
  {
    title: 'a write drops the file\'s capabilities (security.capability), even by root',
    kernel: KILLPRIV,
    setup: (fs) => { writeFile(fs, 'h', 'x'); fs.setxattr('h', 'security.capability', FILE_CAPS); },
    run: (fs) => { const had = fs.getxattr('h', 'security.capability').length; const fd = fs.open('h', 'r+'); try { fs.pwrite(fd, 'y', 1); } finally { fs.close(fd); } return [had, outcome(() => fs.getxattr('h', 'security.capability'))]; },
    expect: [20, 'ENODATA'],
  },
  { title: 'mkfifo makes a FIFO', run: (fs) => { fs.mkfifo('fifo'); const st = fs.lstat('fifo'); return [st.type, octal(st), names(fs, '')]; }, expect: ['p', '644', ['fifo']] },
  {
    title: 'xattrs: set, get, create and replace flags, list, remove',
    setup: (fs) => writeFile(fs, 'h', 'x'),
    run: (fs) => [
      outcome(() => fs.setxattr('h', 'user.k', Buffer.from('v1'))),
      outcome(() => fs.getxattr('h', 'user.k').toString()),
      outcome(() => fs.getxattr('h', 'user.none')),
      outcome(() => fs.setxattr('h', 'user.k', Buffer.from('x'), 'create')),
      outcome(() => fs.setxattr('h', 'user.q', Buffer.from('x'), 'replace')),
      outcome(() => fs.setxattr('h', 'user.e', Buffer.alloc(0))),
      outcome(() => fs.getxattr('h', 'user.e').length),
      outcome(() => fs.listxattr('h').sort()),
      outcome(() => fs.removexattr('h', 'user.k')),
      outcome(() => fs.removexattr('h', 'user.k')),
      outcome(() => fs.listxattr('h')),
    ],
    expect: ['ok', 'v1', 'ENODATA', 'EEXIST', 'ENODATA', 'ok', 0, ['user.e', 'user.k'], 'ok', 'ENODATA', ['user.e']],
  },

  // ---- reading directories ---------------------------------------------------------------------
  {
    title: 'readdir lists each entry once, with its type',
    setup: (fs) => { fs.mkdir('d'); writeFile(fs, 'f', ''); fs.symlink('f', 'l'); fs.mkfifo('p'); },
    run: (fs) => fs.readdir('').map((e) => `${e.name.toString()}:${e.type}`).sort(),
    expect: ['d:d', 'f:f', 'l:l', 'p:p'],
  },
  {
    title: 'a directory of 3,000 entries lists each once',
    run: (fs) => {
      fs.mkdir('many');
      for (let i = 0; i < 3000; i++) writeFile(fs, `many/entry-${i}`, '');
      const all = names(fs, 'many');
      return [all.length, new Set(all).size];
    },
    expect: [3000, 3000],
  },

  // ---- as an unprivileged user -----------------------------------------------------------------
  { title: 'nobody lists a private directory', as: 'nobody', kernel: PERMISSIONS, setup: sharedDirs, run: (fs) => fs.readdir('priv'), expect: 'EACCES' },
  { title: 'nobody creates in root\'s directory', as: 'nobody', kernel: PERMISSIONS, setup: sharedDirs, run: (fs) => writeFile(fs, 'mine', ''), expect: 'EACCES' },
  {
    title: 'nobody creates in a public directory: the file is theirs',
    as: 'nobody',
    setup: sharedDirs,
    run: (fs) => { writeFile(fs, 'pub/mine', 'x'); fs.mkdir('pub/d'); const st = fs.stat('pub/mine'); return [st.uid, st.gid, fs.stat('pub/d').uid, octal(fs.stat('pub/d'))]; },
    expect: [NOBODY, NOBODY, NOBODY, '755'],
  },
  { title: 'nobody writes a read-only file', as: 'nobody', kernel: PERMISSIONS, setup: sharedDirs, run: (fs) => writeFile(fs, 'ro', 'x'), expect: 'EACCES' },
  { title: 'nobody reads a read-only file', as: 'nobody', kernel: PERMISSIONS, setup: sharedDirs, run: (fs) => readFile(fs, 'ro'), expect: 'r' },
  { title: 'nobody chmods a file not theirs', as: 'nobody', kernel: PERMISSIONS, setup: sharedDirs, run: (fs) => fs.chmod('ro', 0o777), expect: 'EPERM' },
  { title: 'nobody gives their file away', as: 'nobody', kernel: PERMISSIONS, setup: sharedDirs, run: (fs) => { writeFile(fs, 'pub/mine', 'x'); fs.chown('pub/mine', 0, 0); }, expect: 'EPERM' },
  { title: 'nobody unlinks another\'s file in a sticky directory', as: 'nobody', kernel: PERMISSIONS, setup: sharedDirs, run: (fs) => fs.unlink('sticky/roots'), expect: 'EPERM' },
  { title: 'nobody unlinks their own file in a sticky directory', as: 'nobody', kernel: PERMISSIONS, setup: sharedDirs, run: (fs) => { writeFile(fs, 'sticky/mine', ''); fs.unlink('sticky/mine'); }, expect: 'ok' },
  { title: 'nobody renames another\'s file out of a sticky directory', as: 'nobody', kernel: PERMISSIONS, setup: sharedDirs, run: (fs) => fs.rename('sticky/roots', 'pub/stolen'), expect: 'EPERM' },
  {
    title: 'a setgid directory gives its group, and its bit to subdirectories',
    as: 'nobody',
    setup: sharedDirs,
    run: (fs) => { writeFile(fs, 'sg/f', ''); fs.mkdir('sg/d'); return [fs.stat('sg/f').gid, fs.stat('sg/d').gid, octal(fs.stat('sg/d'))]; },
    expect: [100, 100, '2755'],
  },
  { title: 'nobody sets the times of a file not theirs', as: 'nobody', kernel: PERMISSIONS, setup: sharedDirs, run: (fs) => fs.utimens('ro', [1, 0], [1, 0]), expect: 'EPERM' },
  { title: 'nobody writes a file not theirs in a public directory', as: 'nobody', kernel: PERMISSIONS, setup: (fs) => { sharedDirs(fs); writeFile(fs, 'pub/w', ''); fs.chmod('pub/w', 0o666); }, run: (fs) => { writeFile(fs, 'pub/w', 'x'); return readFile(fs, 'pub/w'); }, expect: 'x' },
];

/** The check of a title (a child process running one as nobody finds it so). */
export function checkNamed(title: string): PosixCheck {
  const c = checks.find((x) => x.title === title);
  if (!c) throw new Error(`no check named ${JSON.stringify(title)}`);
  return c;
}
