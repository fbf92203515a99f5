// The files behind shared memory (a VM's VRPC region, its metadata table), as the host makes and
// keeps them: created O_EXCL|O_NOFOLLOW, mode 0600 (0660 with a group for QEMU), owned by the host's
// user, written out in full, and locked, so that no other local user can pre-create, swap in, or
// share one, and a second host (or agent) on the same file is refused. docs/shm-layout.md, "Files".
import fs from 'node:fs';
import { PrismError, fromNodeError } from '../errors.js';
import { lockByte, map, mappingLost, unmap } from '../native/memory.js';

/** Lock bytes (F_OFD_SETLK): the host serving the file holds byte 0, an agent attached to it byte 1. */
export const HOST_LOCK_BYTE = 0;
export const AGENT_LOCK_BYTE = 1;

const { O_RDWR, O_RDONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } = fs.constants;

export interface OwnOptions {
  /** Bytes of the file (and of the mapping). */
  size: number;
  /** A group that may map the file too (QEMU as another user): mode 0660 instead of 0600. */
  group?: number;
  /** Who holds the file when it is locked, for the EBUSY message (read from the file, e.g. a pid word). */
  holder?: (fd: number) => string;
  /**
   * A leftover file of ours with another size is replaced by a new one (renamed over it), never
   * resized under whoever maps it; this is told the old mapping first (to mark it dead).
   */
  retire?: (old: ArrayBuffer) => void;
}

export interface OwnedFile {
  readonly path: string;
  readonly fd: number;
  readonly buffer: ArrayBuffer;
  /** Whether it was made now (false: a leftover of an earlier run of this host, taken over). */
  readonly created: boolean;
  /** What went wrong with the file since (truncated, replaced or removed), or undefined. */
  problem(): FileProblem | undefined;
  /** Unmap, unlock and close. */
  close(): void;
}

export interface FileProblem { kind: 'truncated' | 'replaced' | 'removed'; message: string }

/**
 * Make `path` ours, locked, written out and mapped (guarded against truncation). A leftover of an
 * earlier run is taken over only if it is a regular file of this user with the expected mode and one
 * link, and no live process holds its lock: anything else is refused with a PrismError naming it.
 */
export function ownFile(path: string, o: OwnOptions): OwnedFile {
  const mode = o.group === undefined ? 0o600 : 0o660;
  for (let attempt = 0; ; attempt++) {
    const got = openOrCreate(path, mode);
    const { fd, created } = got;
    try {
      if (!created) checkOurs(path, fs.fstatSync(fd), mode);
      if (!lockByte(fd, HOST_LOCK_BYTE, true)) {
        const who = o.holder?.(fd);
        throw new PrismError('EBUSY', `${path} is in use by another host${who ? ` (${who})` : ''}: one host per VM`);
      }
      // Whoever created or replaced the name between our open and our lock: start again.
      if (!samePath(path, fd)) {
        fs.closeSync(fd);
        if (attempt >= 3) throw new PrismError('EBUSY', `${path} keeps being replaced while the host opens it`);
        continue;
      }
      if (created) {
        if (o.group !== undefined) fs.fchownSync(fd, process.geteuid?.() ?? 0, o.group);
        fs.fchmodSync(fd, mode); // exactly this, whatever the umask
      }
      const size = fs.fstatSync(fd).size;
      if (!created && size !== o.size) {
        const fresh = replace(path, fd, size, o, mode);
        closeQuietly(fd); // the old file's lock goes with it, once the new one holds the name
        return fresh;
      }
      if (created) writeOut(path, fd, o.size);
      return owned(path, fd, o.size, created);
    } catch (e) {
      closeQuietly(fd);
      if (created && !(e instanceof PrismError && e.code === 'EBUSY')) fs.rmSync(path, { force: true });
      throw e;
    }
  }
}

/** Open an existing file for an agent: it must be a regular file of root or of this user. */
/**
 * The inodes that processes other than this one map (QEMU, an agent), from /proc/PID/maps (Linux;
 * none where /proc cannot tell), read once for all the files a caller asks about. A file someone maps
 * must stay: a restarted host takes it up again.
 */
export function inodesMappedElsewhere(): Set<number> {
  const out = new Set<number>();
  let pids: string[];
  try { pids = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d) && Number(d) !== process.pid); } catch { return out; }
  for (const pid of pids) {
    let maps: string;
    try { maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8'); } catch { continue; } // gone, or not ours to read
    for (const line of maps.split('\n')) {
      // start-end perms offset dev inode path: only file mappings (a path) count
      const f = line.split(/\s+/, 6);
      if (f[5]?.startsWith('/') && f[4] !== '0') out.add(Number(f[4]));
    }
  }
  return out;
}

export function checkServedFile(path: string, st: fs.Stats): void {
  const me = process.geteuid?.() ?? 0;
  if (st.isFile() && st.uid !== 0 && st.uid !== me) {
    throw new PrismError('EACCES', `${path} belongs to uid ${st.uid}, neither root nor this user: not a host's file, refusing it`);
  }
}

/**
 * An agent's lock on a region file it attaches to with --shm (byte 1; the host holds byte 0): a
 * second agent on the same region is refused with EBUSY. `holder` names the first (its pid word).
 */
export function lockAsAgent(path: string, holder?: (fd: number) => string): { close(): void } {
  let fd: number;
  try {
    fd = fs.openSync(path, O_RDWR | O_NOFOLLOW | O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new PrismError('ENOENT', `cannot map ${path}: no such file (is the host serving this VM?)`);
    throw openError(path, e);
  }
  try {
    const st = fs.fstatSync(fd);
    checkServedFile(path, st);
    if (!st.isFile()) return { close: () => closeQuietly(fd) }; // a device: one per VM, nothing to share
    if (!lockByte(fd, AGENT_LOCK_BYTE, true)) {
      const who = holder?.(fd);
      throw new PrismError('EBUSY', `${path} is in use by another agent${who ? ` (${who})` : ''}: one agent per region`);
    }
  } catch (e) {
    closeQuietly(fd);
    throw e;
  }
  return { close: () => closeQuietly(fd) };
}

function openOrCreate(path: string, mode: number): { fd: number; created: boolean } {
  for (let i = 0; i < 4; i++) {
    try {
      return { fd: fs.openSync(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK, mode), created: true };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw openError(path, e);
    }
    try {
      return { fd: fs.openSync(path, O_RDWR | O_NOFOLLOW | O_NONBLOCK), created: false };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw openError(path, e); // removed meanwhile: again
    }
  }
  throw new PrismError('EBUSY', `${path} keeps appearing and vanishing while the host opens it`);
}

function openError(path: string, e: unknown): PrismError {
  const p = fromNodeError(e, `cannot open ${path}`);
  if (p.code === 'ELOOP') return new PrismError('ELOOP', `${path} is a symbolic link: refusing it (region files are made by the host itself)`);
  if (p.code === 'ENOSPC') return new PrismError('ENOSPC', `cannot create ${path}: no space left`);
  if (p.code === 'EPERM') return new PrismError('EACCES', p.detail); // not ours to open, as EACCES says
  if (p.code === 'ENOENT') return new PrismError('ENOENT', `cannot open ${path}: it does not exist`);
  return p;
}

/** A leftover is adopted only if it is exactly what this host would have made. */
function checkOurs(path: string, st: fs.Stats, mode: number): void {
  const me = process.geteuid?.() ?? 0;
  const why = !st.isFile() ? 'is not a regular file'
    : st.uid !== me ? `belongs to uid ${st.uid}, not to this host's user (uid ${me})`
    : (st.mode & 0o7777) !== mode ? `has mode 0${(st.mode & 0o7777).toString(8)}, not 0${mode.toString(8)}`
    : st.nlink !== 1 ? `has ${st.nlink} links`
    : undefined;
  if (why) throw new PrismError(st.uid !== me || !st.isFile() ? 'EACCES' : 'EEXIST', `${path} ${why}: not a file this host made, refusing it (remove it if it is stale)`);
}

/** Whether `path` (not following a link) is still the file open as `fd`. */
function samePath(path: string, fd: number): boolean {
  try {
    const a = fs.lstatSync(path), b = fs.fstatSync(fd);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

/**
 * Write the whole file out with zeros: a full file system (/dev/shm) is ENOSPC here instead of a
 * SIGBUS at the first write into a hole, and no page fault allocates a page under a request later.
 */
function writeOut(path: string, fd: number, size: number): void {
  const zeros = Buffer.alloc(1 << 20);
  try {
    for (let off = 0; off < size; off += zeros.length) fs.writeSync(fd, zeros, 0, Math.min(zeros.length, size - off), off);
  } catch (e) {
    const p = fromNodeError(e, `cannot write out ${path}`);
    throw p.code === 'ENOSPC' ? new PrismError('ENOSPC', `cannot write out ${path} (${size >> 20} MiB): no space left`) : p;
  }
}

/** Our leftover has another size: retire it, make a new file beside it, rename it over the name. */
function replace(path: string, oldFd: number, oldSize: number, o: OwnOptions, mode: number): OwnedFile {
  if (o.retire && oldSize > 0) {
    const old = map(oldFd, { size: oldSize, guard: true });
    try { o.retire(old); } finally { unmap(old); }
  }
  const fresh = `${path}.new`;
  fs.rmSync(fresh, { force: true });
  const { fd, created } = openOrCreate(fresh, mode);
  try {
    if (!created || !lockByte(fd, HOST_LOCK_BYTE, true)) throw new PrismError('EBUSY', `${fresh} is being made by someone else`);
    if (o.group !== undefined) fs.fchownSync(fd, process.geteuid?.() ?? 0, o.group);
    fs.fchmodSync(fd, mode);
    writeOut(fresh, fd, o.size);
    fs.renameSync(fresh, path);
    return owned(path, fd, o.size, true);
  } catch (e) {
    closeQuietly(fd);
    fs.rmSync(fresh, { force: true });
    throw e;
  }
}

function owned(path: string, fd: number, size: number, created: boolean): OwnedFile {
  let buffer: ArrayBuffer;
  try {
    buffer = map(fd, { size, guard: true });
  } catch (e) {
    throw fromNodeError(e, `cannot map ${path}`);
  }
  const st = fs.fstatSync(fd);
  let closed = false;
  return {
    path, fd, buffer, created,
    problem(): FileProblem | undefined {
      if (closed) return undefined;
      if (mappingLost(buffer)) return { kind: 'truncated', message: `${path} was truncated under the host (its pages are gone)` };
      let now: fs.Stats;
      try { now = fs.fstatSync(fd); } catch { return undefined; }
      if (now.size < size) return { kind: 'truncated', message: `${path} was truncated to ${now.size} bytes under the host` };
      let there: fs.Stats;
      try { there = fs.lstatSync(path); } catch { return { kind: 'removed', message: `${path} was removed while the host serves it` }; }
      if (there.ino !== st.ino || there.dev !== st.dev) return { kind: 'replaced', message: `${path} was replaced by another file while the host serves it` };
      return undefined;
    },
    close(): void {
      if (closed) return;
      closed = true;
      unmap(buffer);
      closeQuietly(fd);
    },
  };
}

function closeQuietly(fd: number): void {
  try { fs.closeSync(fd); } catch { /* already closed */ }
}

/** Open a file read-only for an agent, refusing one that no host made (see checkServedFile). */
export function openServedFile(path: string, write: boolean): number {
  let fd: number;
  try {
    fd = fs.openSync(path, (write ? O_RDWR : O_RDONLY) | O_NONBLOCK);
  } catch (e) {
    throw openError(path, e);
  }
  try {
    checkServedFile(path, fs.fstatSync(fd));
  } catch (e) {
    closeQuietly(fd);
    throw e;
  }
  return fd;
}
