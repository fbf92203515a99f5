// Export a volume (or a directory of it) to a directory or a tar archive (.tar, or gzipped for .tar.gz
// and .tgz): files, directories, symlinks,
// hard links, devices, fifos and sockets, with modes, owners (when run as root) and times. Sparse
// files stay sparse: only the blocks a file has are written, to a directory at their offsets (holes
// are left unwritten), to a tar as PAX 1.0 sparse entries (which GNU tar and bsdtar extract sparse).
//
// Times: Node sets file times through a double and libuv keeps microseconds, so a directory export
// has the volume's times to the microsecond (truncated). A tar keeps nanoseconds in pax headers.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { PrismError, fromNodeError } from '../errors.js';
import { mknod } from '../native/files.js';
import { devMajor, devMinor } from './device-numbers.js';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, isDir } from '../posix/mode.js';
import type { Attr, Time } from '../posix/types.js';
import { BLOCK_SIZE } from './layout.js';
import { normalizePath, type Store } from './store.js';
import type { Volume } from './volume.js';

export interface ExportProgress { files: number; totalFiles: number; bytes: number; totalBytes: number }

export interface ExportOptions {
  /** Directory of the volume to export; default '/'. */
  src?: string;
  onProgress?: (p: ExportProgress) => void;
}

export interface ExportResult {
  /** Entries other than directories. */
  files: number;
  /** Bytes of regular file content (each inode once). */
  bytes: number;
}

interface Item {
  rel: Buffer; // path below the exported directory; empty for the directory itself
  attr: Attr;
  /** An earlier item of the same inode (this one is a hard link to it). */
  link?: Item;
}

const SLASH = Buffer.from('/');

export async function exportPath(store: Store, volumeName: string, dest: string, opts: ExportOptions = {}): Promise<ExportResult> {
  const v = store.volume(volumeName);
  const srcPath = normalizePath(opts.src ?? '/');
  const root = v.resolve(srcPath);
  if (!isDir(v.getattr(root).mode)) throw new PrismError('ENOTDIR', `${volumeName}:${srcPath} is not a directory`);
  const items = collect(v, root);
  const p = new Progress(items, opts.onProgress);
  if (/\.(tar|tar\.gz|tgz)$/.test(dest)) await toTar(store, v, items, dest, /\.(tar\.gz|tgz)$/.test(dest), p);
  else toDir(store, v, items, dest, p);
  p.report(true);
  return { files: p.files, bytes: p.bytes };
}

/**
 * Every entry below root in depth-first order (a directory's subtree is contiguous, as tar readers
 * expect to set a directory's times once they leave it); hard links after the first name of their inode.
 */
function collect(v: Volume, root: number): Item[] {
  const items: Item[] = [];
  const inodes = new Map<number, Item>();
  const stack: Item[] = [{ rel: Buffer.alloc(0), attr: v.getattr(root) }];
  while (stack.length) {
    const item = stack.pop()!;
    const a = item.attr;
    if (a.nlink > 1 && !isDir(a.mode)) {
      const first = inodes.get(a.ino);
      if (first) item.link = first;
      else inodes.set(a.ino, item);
    }
    items.push(item);
    if (!isDir(a.mode)) continue;
    const children = v.readdir(a.ino);
    for (let i = children.length - 1; i >= 0; i--) {
      const e = children[i];
      stack.push({ rel: item.rel.length ? Buffer.concat([item.rel, SLASH, e.name]) : e.name, attr: v.getattr(e.ino) });
    }
  }
  return items;
}

class Progress {
  files = 0;
  bytes = 0;
  private readonly totalFiles: number;
  private readonly totalBytes: number;
  private last = 0;
  constructor(items: Item[], private readonly fn?: (p: ExportProgress) => void) {
    let files = 0, bytes = 0;
    for (const it of items) {
      if (isDir(it.attr.mode)) continue;
      files++;
      if ((it.attr.mode & S_IFMT) === S_IFREG && !it.link) bytes += it.attr.size;
    }
    this.totalFiles = files;
    this.totalBytes = bytes;
  }
  report(force = false): void {
    if (!this.fn) return;
    const now = Date.now();
    if (!force && now - this.last < 100) return;
    this.last = now;
    this.fn({ files: this.files, totalFiles: this.totalFiles, bytes: this.bytes, totalBytes: this.totalBytes });
  }
}

// ---- to a directory ---------------------------------------------------------------------------------------

function toDir(store: Store, v: Volume, items: Item[], dest: string, p: Progress): void {
  const top = path.resolve(dest);
  let st: fs.Stats | undefined;
  try { st = fs.statSync(top); } catch { st = undefined; }
  if (st && (!st.isDirectory() || fs.readdirSync(top).length > 0)) {
    throw new PrismError('EEXIST', `${dest} exists and is not an empty directory`);
  }
  // only the last part is made: a destination under a missing or special directory (/proc) fails at once
  if (!st) {
    try { fs.mkdirSync(top, 0o700); } catch (e) { throw fromNodeError(e, `cannot make ${dest}`); }
  }
  const topBuf = Buffer.from(top);
  const full = (it: Item) => (it.rel.length ? Buffer.concat([topBuf, SLASH, it.rel]) : topBuf);
  const asRoot = process.getuid?.() === 0;
  const owner = (f: Buffer, a: Attr) => { if (asRoot) fs.lchownSync(f, a.uid, a.gid); };
  const dirs: Item[] = [];
  for (const it of items) {
    const a = it.attr;
    const f = full(it);
    const type = a.mode & S_IFMT;
    try {
      if (type === S_IFDIR) {
        if (it.rel.length) fs.mkdirSync(f, 0o700);
        dirs.push(it); // modes, owners and times once the directory is filled
        continue;
      }
      p.files++;
      if (it.link) {
        fs.linkSync(full(it.link), f);
      } else if (type === S_IFREG) {
        const fd = fs.openSync(f, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
        try {
          writeContent(store, v, a, fd, p);
          if (asRoot) fs.fchownSync(fd, a.uid, a.gid);
          fs.fchmodSync(fd, a.mode & 0o7777);
          fs.futimesSync(fd, utime(a.atime), utime(a.mtime));
        } finally {
          fs.closeSync(fd);
        }
      } else if (type === S_IFLNK) {
        fs.symlinkSync(v.readlink(a.ino), f);
        owner(f, a);
        fs.lutimesSync(f, utime(a.atime), utime(a.mtime));
      } else {
        // A FIFO, a device or a socket (a socket file with no listener, as one whose server exited).
        mknod(f, type | 0o600, type === S_IFCHR || type === S_IFBLK ? a.rdev : 0);
        owner(f, a);
        fs.chmodSync(f, a.mode & 0o7777);
        fs.utimesSync(f, utime(a.atime), utime(a.mtime));
      }
    } catch (e) {
      throw fromNodeError(e, f.toString());
    }
    p.report();
  }
  // Deepest first, so setting a directory's times is the last change inside its parent.
  for (let i = dirs.length - 1; i >= 0; i--) {
    const a = dirs[i].attr;
    const f = full(dirs[i]);
    try {
      owner(f, a);
      fs.chmodSync(f, a.mode & 0o7777);
      fs.utimesSync(f, utime(a.atime), utime(a.mtime));
    } catch (e) {
      throw fromNodeError(e, f.toString());
    }
  }
}

/** Write a file's blocks at their offsets (runs of blocks in one call); holes are left unwritten. */
function writeContent(store: Store, v: Volume, a: Attr, fd: number, p: Progress): void {
  const list = v.blockList(a.ino);
  let run: Buffer[] = [];
  let runAt = 0, runEnd = 0;
  const flush = () => {
    if (run.length) writevAll(fd, run, runAt);
    run = [];
  };
  for (const [idx, hash] of list) {
    const at = idx * BLOCK_SIZE;
    if (at >= a.size) break;
    let data = store.blocks.read(hash);
    if (at + data.length > a.size) data = data.subarray(0, a.size - at);
    if (run.length && (at !== runEnd || run.length >= 64)) flush();
    if (!run.length) runAt = at;
    run.push(data);
    runEnd = at + data.length;
  }
  p.bytes += a.size;
  flush();
  if (runEnd < a.size) fs.ftruncateSync(fd, a.size); // a hole at the end
}

function writevAll(fd: number, bufs: Buffer[], at: number): void {
  let rest = bufs;
  while (rest.length) {
    let n = fs.writevSync(fd, rest, at);
    at += n;
    const next: Buffer[] = [];
    for (const b of rest) {
      if (n >= b.length) { n -= b.length; continue; }
      next.push(n > 0 ? b.subarray(n) : b);
      n = 0;
    }
    rest = next;
  }
}

/** Seconds for utimes: libuv keeps microseconds (truncating), so aim at the middle of the microsecond. */
function utime(t: Time): number {
  return t[0] + (Math.floor(t[1] / 1000) * 1000 + 500) / 1e9;
}

// ---- to a tar archive -----------------------------------------------------------------------------------

async function toTar(store: Store, v: Volume, items: Item[], dest: string, gzip: boolean, p: Progress): Promise<void> {
  let st: fs.Stats | undefined;
  try { st = fs.statSync(dest); } catch { st = undefined; }
  if (st && !(st.isFile() && st.size === 0)) throw new PrismError('EEXIST', `${dest} exists`);
  const pack = tar.pack();
  // opened now: a destination that cannot be written fails before anything is read
  let fd: number;
  try { fd = fs.openSync(dest, 'w', 0o644); } catch (e) { throw fromNodeError(e, dest); }
  const out = fs.createWriteStream(dest, { fd });
  let failed: Error | null = null;
  const done = new Promise<void>((resolve, reject) => {
    out.on('close', () => (failed ? reject(failed) : resolve()));
    out.on('error', (e) => { failed ??= e; reject(e); });
    pack.on('error', (e: Error) => { failed ??= e; out.destroy(e); });
  });
  done.catch(() => { /* awaited below */ });
  if (gzip) {
    const z = zlib.createGzip();
    z.on('error', (e: Error) => { failed ??= e; out.destroy(e); });
    pack.pipe(z).pipe(out);
  } else pack.pipe(out);
  try {
    for (const it of items) {
      if (failed) break;
      const a = it.attr;
      const type = a.mode & S_IFMT;
      if (type === S_IFSOCK) continue; // tar has no sockets
      const name = it.rel.length ? it.rel.toString() : '.';
      const header: tar.Header & { pax?: Record<string, string> } = {
        name: type === S_IFDIR ? `${name}/` : name,
        mode: a.mode & 0o7777, uid: a.uid, gid: a.gid, size: 0,
        mtime: new Date(a.mtime[0] * 1000 + Math.floor(a.mtime[1] / 1e6)),
        type: 'file', linkname: '', uname: '', gname: '', devmajor: 0, devminor: 0,
      };
      const pax: Record<string, string> = {};
      if (a.mtime[1] !== 0 || a.mtime[0] < 0) { pax.mtime = paxTime(a.mtime); pax.atime = paxTime(a.atime); }
      if (a.uid > 0o7777777) pax.uid = String(a.uid);
      if (a.gid > 0o7777777) pax.gid = String(a.gid);
      if (Object.keys(pax).length) header.pax = pax;
      if (type !== S_IFDIR) p.files++;
      if (it.link) {
        header.type = 'link';
        header.linkname = it.link.rel.toString();
        await entry(pack, header);
      } else if (type === S_IFDIR) {
        header.type = 'directory';
        await entry(pack, header);
      } else if (type === S_IFLNK) {
        header.type = 'symlink';
        header.linkname = v.readlink(a.ino).toString();
        await entry(pack, header);
      } else if (type === S_IFREG) {
        await fileEntry(store, v, pack, header, a, p);
      } else {
        header.type = type === S_IFIFO ? 'fifo' : type === S_IFCHR ? 'character-device' : 'block-device';
        if (type !== S_IFIFO) { header.devmajor = devMajor(a.rdev); header.devminor = devMinor(a.rdev); }
        await entry(pack, header);
      }
      p.report();
    }
  } finally {
    pack.finalize();
  }
  try {
    await done;
  } catch (e) {
    throw fromNodeError(e, dest);
  }
}

function entry(pack: tar.Pack, header: tar.Header): Promise<void> {
  return new Promise((resolve, reject) => { pack.entry(header, (err) => (err ? reject(err) : resolve())); });
}

/** A run of stored data in a file: `len` bytes at `at`, from consecutive blocks. */
interface Extent { at: number; len: number; blocks: Array<[Buffer, number]> } // [hash, bytes used]

/**
 * The data of a file as extents: runs of stored blocks (a short block ends a run: the rest of it is a
 * hole). Built from the blocks that exist, so a 2^50-byte sparse file costs what it stores.
 */
function extents(store: Store, v: Volume, a: Attr): Extent[] {
  const out: Extent[] = [];
  let cur: Extent | null = null;
  for (const [idx, hash] of v.blockList(a.ino)) {
    const at = idx * BLOCK_SIZE;
    if (at >= a.size) break;
    const len = Math.min(store.blocks.length(hash), a.size - at);
    if (len === 0) continue;
    if (!cur || cur.at + cur.len !== at) { cur = { at, len: 0, blocks: [] }; out.push(cur); }
    cur.blocks.push([hash, len]);
    cur.len += len;
    if (len < BLOCK_SIZE) cur = null; // the rest of this block is a hole: the next data starts a new run
  }
  return out;
}

/**
 * The map that starts the data of a PAX 1.0 sparse entry (GNU tar's format 1.0): the number of
 * extents, then offset and length of each, one decimal number a line, zero-padded to 512 bytes. A file
 * that ends in a hole gets a last, empty extent at its size (GNU tar sets the size from it).
 */
function sparseMap(ext: Extent[], size: number): Buffer {
  const pairs = ext.map((e) => [e.at, e.len]);
  const end = ext.length ? ext[ext.length - 1].at + ext[ext.length - 1].len : 0;
  if (end < size || pairs.length === 0) pairs.push([size, 0]);
  const text = `${pairs.length}\n${pairs.map(([o, n]) => `${o}\n${n}\n`).join('')}`;
  const map = Buffer.alloc(Math.ceil(text.length / 512) * 512);
  map.write(text, 'latin1');
  return map;
}

/**
 * A regular file's entry. A file with holes is written as a PAX 1.0 sparse entry (its map, then only
 * its data), so an archive never holds more than the volume stores; a file without holes as a plain
 * entry. Data is streamed in runs of up to 1 MiB.
 */
async function fileEntry(store: Store, v: Volume, pack: tar.Pack, header: tar.Header & { pax?: Record<string, string> }, a: Attr, p: Progress): Promise<void> {
  const ext = extents(store, v, a);
  const dataBytes = ext.reduce((n, e) => n + e.len, 0);
  let map: Buffer | null = null;
  if (dataBytes < a.size) {
    map = sparseMap(ext, a.size);
    const slash = header.name.lastIndexOf('/');
    const dir = slash < 0 ? '.' : header.name.slice(0, slash);
    header.pax = {
      ...header.pax,
      'GNU.sparse.major': '1', 'GNU.sparse.minor': '0',
      'GNU.sparse.name': header.name, 'GNU.sparse.realsize': String(a.size),
    };
    header.name = `${dir}/GNUSparseFile.0/${header.name.slice(slash + 1)}`;
    header.size = map.length + dataBytes;
  } else {
    header.size = a.size;
  }
  let finished!: Promise<void>;
  const sink = (() => {
    let s!: ReturnType<tar.Pack['entry']>;
    finished = new Promise((resolve, reject) => { s = pack.entry(header, (err) => (err ? reject(err) : resolve())); });
    return s;
  })();
  let chunk: Buffer[] = map ? [map] : [];
  let chunkBytes = 0;
  const put = async (data: Buffer) => {
    chunk.push(data);
    chunkBytes += data.length;
    if (chunkBytes < 1024 * 1024) return;
    const ok = sink.write(Buffer.concat(chunk));
    chunk = []; chunkBytes = 0;
    if (!ok) await new Promise<void>((resolve) => sink.once('drain', () => resolve()));
  };
  for (const e of ext) {
    for (const [hash, len] of e.blocks) await put(store.blocks.read(hash).subarray(0, len));
  }
  p.bytes += a.size;
  sink.end(chunk.length ? Buffer.concat(chunk) : undefined);
  await finished;
}

function paxTime(t: Time): string {
  const [s, ns] = t;
  if (s < 0 && ns > 0) return `-${-(s + 1)}.${String(1e9 - ns).padStart(9, '0')}`;
  return `${s}.${String(ns).padStart(9, '0')}`;
}

