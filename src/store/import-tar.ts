// Import from a tar archive (.tar, .tar.gz), streamed: file data is cut into pieces for the hash
// workers as it goes by. PAX headers give exact times and large ids; GNU sparse members (PAX 1.0)
// are written run by run, so holes cost nothing.
import fs from 'node:fs';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { PrismError, fromNodeError, isPrismError } from '../errors.js';
import { timeFromMs } from '../posix/clock.js';
import { makedev } from './device-numbers.js';
import { Importer, TASK_BYTES, type Meta, type Task } from './import-pipeline.js';
import { BLOCK_SIZE } from './layout.js';
import { MAX_FILE_SIZE } from '../posix/limits.js';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, isDir } from '../posix/mode.js';
import type { Time } from '../posix/types.js';

export class TarImport extends Importer {
  /** Read the archive in file and queue its members. */
  async read(file: string): Promise<void> {
    const fd = fs.openSync(file, 'r');
    const magic = Buffer.alloc(512);
    const n = fs.readSync(fd, magic, 0, 512, 0);
    fs.closeSync(fd);
    const gz = n >= 2 && magic[0] === 0x1f && magic[1] === 0x8b;
    const ustar = n >= 262 && magic.toString('latin1', 257, 262) === 'ustar';
    if (!gz && !ustar && !/\.(tar|tgz|tar\.gz)$/i.test(file)) {
      throw new PrismError('EINVAL', `${file} is neither a directory nor a tar archive`);
    }
    // Progress of an archive counts bytes of the archive read, of its size.
    this.totalBytes = fs.statSync(file).size;
    let archiveBytes = 0;
    const input = fs.createReadStream(file, { highWaterMark: 1024 * 1024 });
    input.on('data', (c) => { archiveBytes += c.length; });
    const extract = tar.extract();
    const fail = (e: Error) => extract.destroy(fromNodeError(e, file));
    input.on('error', fail);
    if (gz) input.pipe(zlib.createGunzip()).on('error', fail).pipe(extract);
    else input.pipe(extract);

    const dirs = new Map<string, number>([['', this.destIno]]);
    try {
      for await (const entry of extract) {
        const h = entry.header;
        const type = h.type ?? 'file';
        const sparse = sparseOf(h, file);
        const parts = tarPath(sparse ? sparse.name : h.name);
        if (parts === null || (parts.length === 0 && type !== 'directory')) { entry.resume(); continue; }
        const rel = parts.join('/');
        const parentRel = parts.slice(0, -1).join('/');
        const name = parts[parts.length - 1] ?? '';
        const m = tarMeta(h);
        const parent = () => this.tarDir(dirs, parentRel);
        if (type !== 'directory') this.totalFiles++;
        if (sparse && (type === 'file' || type === 'contiguous-file')) {
          m.size = sparse.size;
          await this.tarSparseFile(entry as unknown as AsyncIterable<Buffer>, m, parent, name, file);
        } else if (type === 'file' || type === 'contiguous-file') {
          await this.tarFile(entry as unknown as AsyncIterable<Buffer>, m, parent, name, file);
        } else if (type === 'directory') {
          entry.resume();
          this.ops.push({ piece: 0, run: () => { dirs.set(rel, this.make(parts.length === 0 ? -1 : parent(), name, m)); } });
        } else if (type === 'link') {
          entry.resume();
          const target = tarPath(h.linkname ?? '');
          if (target === null || target.length === 0) throw new PrismError('EINVAL', `${file}: bad hard link target for ${h.name}`);
          this.ops.push({
            piece: 0,
            run: () => {
              const dir = this.tarDir(dirs, target.slice(0, -1).join('/'));
              this.link(this.v.lookup(dir, target[target.length - 1]).ino, parent(), name);
            },
          });
        } else if (type === 'symlink' || type === 'character-device' || type === 'block-device' || type === 'fifo') {
          entry.resume();
          const target = Buffer.from(h.linkname ?? '');
          this.ops.push({ piece: 0, run: () => { this.make(parent(), name, m, target); } });
        } else {
          this.totalFiles--; // sockets or unknown types: tar cannot hold them
          entry.resume();
        }
        this.progressBytes = archiveBytes;
        if (this.mustWait) await this.drain();
        else this.runReady();
      }
    } catch (e) {
      input.destroy();
      throw fromNodeError(e, file); // a PrismError as it is
    }
  }

  /** A regular file of an archive: its data is cut into pieces for the workers as it streams by. */
  private async tarFile(entry: AsyncIterable<Buffer>, m: Meta, parent: () => number, name: string, file: string): Promise<void> {
    const size = m.size;
    let ino = 0, off = 0;
    if (size === 0) this.ops.push({ piece: 0, run: () => { this.setTimes(this.make(parent(), name, m), m); } });
    let cur: { task: Task; piece: number; view: Uint8Array; filled: number } | null = null;
    for await (const chunk of entry) {
      let at = 0;
      while (at < chunk.length) {
        if (!cur) {
          if (off >= size) throw new PrismError('EIO', `${file}: more data than its header says in a file`);
          const len = Math.min(TASK_BYTES, size - off);
          const [task, piece] = this.addPiece(len);
          cur = { task, piece, view: new Uint8Array(task.req.buf, task.at[piece], len), filled: 0 };
        }
        const take = Math.min(chunk.length - at, cur.view.length - cur.filled);
        cur.view.set(chunk.subarray(at, at + take), cur.filled);
        cur.filled += take;
        at += take;
        if (cur.filled < cur.view.length) continue;
        const { task, piece } = cur;
        const pieceOff = off, len = cur.view.length;
        cur = null;
        off += len;
        this.ops.push({
          task, piece,
          run: () => {
            if (pieceOff === 0) ino = this.make(parent(), name, m);
            this.writePiece(ino, pieceOff / BLOCK_SIZE, task, piece, len);
            if (pieceOff + len >= size) { this.bytes += size; this.setTimes(ino, m); }
          },
        });
        if (this.mustWait) await this.drain();
      }
    }
    if (off < size) throw new PrismError('EIO', `${file}: the archive ends inside a file`);
  }

  /**
   * A PAX 1.0 sparse member (GNU tar --sparse, or prism's export): a map of [offset, length] runs,
   * zero-padded to 512 bytes, then the runs' data. Written in order on the main thread once all that
   * was queued before it is in; only the runs are written, so holes cost nothing.
   */
  private async tarSparseFile(entry: AsyncIterable<Buffer>, m: Meta, parent: () => number, name: string, file: string): Promise<void> {
    const bad = (why: string) => new PrismError('EINVAL', `${file}: sparse member ${name}: ${why}`);
    this.submit();
    await this.drain(true);
    const ino = this.make(parent(), name, m);
    const map = new SparseMapReader(m.size, bad);
    let run = 0, done = 0, sinceCommit = 0;
    for await (const chunk of entry) {
      let at = map.feed(chunk);
      while (at < chunk.length) {
        const r = map.runs[run];
        if (!r) throw bad('more data than its map says');
        const take = Math.min(chunk.length - at, r[1] - done);
        if (take > 0) this.v.write(ino, r[0] + done, chunk.subarray(at, at + take));
        at += take;
        done += take;
        sinceCommit += take;
        if (done === r[1]) { run++; done = 0; }
      }
      if (sinceCommit >= 64 * 1024 * 1024) { sinceCommit = 0; this.store.maybeCommit(); }
    }
    if (!map.complete) throw bad('the archive ends inside its map');
    while (run < map.runs.length && map.runs[run][1] === 0) run++;
    if (run < map.runs.length) throw new PrismError('EIO', `${file}: the archive ends inside the file ${name}`);
    if (this.v.getattr(ino).size < m.size) this.v.setattr(ino, { size: m.size });
    this.bytes += m.size;
    this.setTimes(ino, m);
  }

  /** The volume directory for a path in the archive, made (0755) if the archive has not had it yet. */
  private tarDir(dirs: Map<string, number>, rel: string): number {
    const known = dirs.get(rel);
    if (known !== undefined) return known;
    const i = rel.lastIndexOf('/');
    const parent = this.tarDir(dirs, i < 0 ? '' : rel.slice(0, i));
    const name = rel.slice(i + 1);
    let ino: number;
    try {
      ino = this.v.mkdir(parent, name, 0o755, 0, 0).ino;
      this.dirs++;
    } catch (e) {
      if (!isPrismError(e, 'EEXIST')) throw e;
      const a = this.v.lookup(parent, name);
      if (!isDir(a.mode)) throw new PrismError('ENOTDIR', `${rel} in the archive is not a directory`);
      ino = a.ino;
    }
    dirs.set(rel, ino);
    return ino;
  }

  /** Progress counts bytes of the archive read: at the end, all of them. */
  protected override doneBytes(): number {
    return this.totalBytes;
  }
}

/**
 * The real name and size of a GNU sparse member (PAX 1.0 format), null for an ordinary member. Older
 * GNU sparse formats (0.0, 0.1, and the old 'S' type) are refused rather than imported as their
 * packed data.
 */
function sparseOf(h: tar.Header, file: string): { name: string; size: number } | null {
  const pax = (h.pax ?? {}) as Record<string, string | undefined>;
  const major = pax['GNU.sparse.major'];
  if (major === undefined && pax['GNU.sparse.size'] === undefined && pax['GNU.sparse.numblocks'] === undefined) return null;
  if (major !== '1' || pax['GNU.sparse.minor'] !== '0') {
    throw new PrismError('EINVAL', `${file}: ${h.name} is in a GNU sparse format other than 1.0 (make the archive with --sparse-version=1.0)`);
  }
  const name = pax['GNU.sparse.name'];
  const size = num(pax['GNU.sparse.realsize']);
  if (!name || size === undefined || size > MAX_FILE_SIZE) throw new PrismError('EINVAL', `${file}: ${h.name} has a bad sparse name or size`);
  return { name, size };
}

/** Most runs one sparse member's map may have. */
const MAX_SPARSE_RUNS = 1 << 20;

/**
 * Reads the map at the start of a PAX 1.0 sparse member: a count, then offset and length of each run,
 * decimal, one a line, padded with zeros to 512 bytes. Runs must be in order, not overlap, and lie
 * within the file's size.
 */
class SparseMapReader {
  readonly runs: Array<[number, number]> = [];
  complete = false;
  private count = -1;
  private line = '';
  private pending: number | null = null;
  private consumed = 0;
  private padTo = 0;

  constructor(private readonly size: number, private readonly bad: (why: string) => Error) {}

  /** Take the map's bytes from the front of chunk; returns where the data starts in it. */
  feed(chunk: Buffer): number {
    let i = 0;
    while (!this.complete && i < chunk.length) {
      if (this.padTo) {
        const skip = Math.min(chunk.length - i, this.padTo - this.consumed);
        i += skip;
        this.consumed += skip;
        if (this.consumed === this.padTo) this.complete = true;
        continue;
      }
      const c = chunk[i++];
      this.consumed++;
      if (c !== 0x0a) {
        if (c < 0x30 || c > 0x39 || this.line.length >= 16) throw this.bad('its map is not decimal numbers');
        this.line += String.fromCharCode(c);
        continue;
      }
      if (this.line === '') throw this.bad('its map has an empty line');
      this.number(Number(this.line));
      this.line = '';
      if (this.count === this.runs.length && this.pending === null) {
        this.padTo = Math.ceil(this.consumed / 512) * 512;
        if (this.padTo === this.consumed) this.complete = true;
      }
    }
    return i;
  }

  private number(n: number): void {
    if (this.count < 0) {
      // Each run is held in memory until the member is written (~60 bytes of heap): a crafted map of
      // millions of empty runs must not exhaust it. A million runs is far beyond real sparse files.
      if (n > MAX_SPARSE_RUNS) throw this.bad(`its map has ${n} runs (at most ${MAX_SPARSE_RUNS})`);
      this.count = n;
      return;
    }
    if (this.pending === null) { this.pending = n; return; }
    const at = this.pending, len = n;
    this.pending = null;
    const prev = this.runs[this.runs.length - 1];
    if (at + len > this.size || (prev && at < prev[0] + prev[1])) throw this.bad('its map has runs out of order or beyond its size');
    this.runs.push([at, len]);
  }
}

/** The parts of a member's path; null for a path that would leave the destination. */
function tarPath(name: string): string[] | null {
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return null;
  return parts;
}

const TYPE_BITS: Record<string, number> = {
  file: S_IFREG, 'contiguous-file': S_IFREG, link: S_IFREG, directory: S_IFDIR, symlink: S_IFLNK,
  'character-device': S_IFCHR, 'block-device': S_IFBLK, fifo: S_IFIFO,
};

function tarMeta(h: tar.Header): Meta {
  const pax = (h.pax ?? {}) as Record<string, string | undefined>;
  const mtime = paxTime(pax.mtime) ?? timeFromMs(h.mtime ? h.mtime.getTime() : 0);
  return {
    mode: (TYPE_BITS[h.type ?? 'file'] ?? S_IFREG) | ((h.mode ?? 0o644) & 0o7777),
    uid: num(pax.uid) ?? h.uid ?? 0, gid: num(pax.gid) ?? h.gid ?? 0,
    size: h.size ?? 0, rdev: makedev(h.devmajor ?? 0, h.devminor ?? 0),
    atime: paxTime(pax.atime) ?? mtime, mtime,
  };
}

function num(s: string | undefined): number | undefined {
  return s !== undefined && /^\d+$/.test(s) ? Number(s) : undefined;
}

/** A pax time such as "1700000000.123456789", exactly. */
export function paxTime(s: string | undefined): Time | undefined {
  const m = s ? /^(-?)(\d+)(?:\.(\d*))?$/.exec(s) : null;
  if (!m) return undefined;
  let sec = Number(m[2]);
  let ns = Number(((m[3] ?? '') + '000000000').slice(0, 9));
  if (m[1]) { sec = -sec; if (ns) { sec -= 1; ns = 1e9 - ns; } }
  return [sec, ns];
}
