// Import a directory tree or a tar archive into a volume.
//
// The main thread owns the store and makes the entries, in source order. A pool of worker threads
// (hash-worker.ts) lists directories for the walk and reads and hashes file content: many small files
// per task, big files in chunks, into shared buffers that are reused, so no data is copied between
// threads and nothing is allocated per file. The main thread looks each hash up and appends only the
// blocks the store does not hold; the rest of a file is a few tree updates. Several tasks are in
// flight, so reading, hashing and the tree updates overlap.
import fs from 'node:fs';
import os from 'node:os';
import zlib from 'node:zlib';
import { Piscina } from 'piscina';
import tar from 'tar-stream';
import { PrismError, fromNodeError, isPrismError } from '../errors.js';
import { timeFromMs, timeFromNs } from './clock.js';
import { F, STAT_FIELDS, type HashResult, type HashTask, type ListTask, type Listing, type Piece } from './hash-worker.js';
import { BLOCK_SIZE, MAX_FILE_SIZE, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, isDir, type Time } from './layout.js';
import { normalizePath, type Store } from './store.js';
import type { Attr, Volume } from './volume.js';

export interface ImportProgress {
  /** Entries other than directories made so far, of totalFiles. */
  files: number;
  /** Bytes of file content stored so far, of totalBytes (for an archive: archive bytes read, of its size). */
  bytes: number;
  totalFiles: number;
  totalBytes: number;
}

export interface ImportOptions {
  /** Directory inside the volume to import into (made if missing); default '/'. */
  dest?: string;
  onProgress?: (p: ImportProgress) => void;
  /** A pool from hashPool(), to share between imports; by default each import makes its own. */
  pool?: Piscina;
}

export interface ImportResult {
  /** Entries other than directories: regular files, symlinks, devices, fifos, sockets, hard links. */
  files: number;
  /** Directories made or merged (not counting the destination itself). */
  dirs: number;
  /** Bytes of regular file content (each inode once). */
  bytes: number;
  /** Bytes of blocks the store did not hold before. */
  newBytes: number;
  seconds: number;
}

/** Bytes per hash task: many small files, or one chunk of a big file. A multiple of BLOCK_SIZE. */
const TASK_BYTES = 2 * 1024 * 1024;
const TASK_PIECES = 256;
/** Hash tasks in flight per worker thread (each holds a TASK_BYTES buffer). */
const TASKS_PER_THREAD = 3;
/** Queued entries before the producer waits for the store to catch up. */
const MAX_OPS = 20_000;
/** Directories per listing task. */
const LIST_DIRS = 32;

const HASH_WORKER = new URL('./hash-worker.js', import.meta.url);

/** A worker pool for imports; pass it to several importPath calls to start its threads once. */
export function hashPool(threads = Math.min(8, Math.max(1, os.availableParallelism()))): Piscina {
  return new Piscina({ filename: HASH_WORKER.href, minThreads: threads, maxThreads: threads, idleTimeout: 30_000 });
}

/**
 * Import a directory tree (symlinks inside are not followed) or a tar archive (.tar, .tar.gz) into
 * dest of a volume: files, directories, symlinks, hard links, devices, fifos, with mode, owner and
 * times. An existing directory is merged into; an existing non-directory of the same name is
 * replaced. Ends with a durable commit; an error stops the import where it was (nothing is undone).
 */
export async function importPath(store: Store, volumeName: string, src: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const t0 = process.hrtime.bigint();
  const volume = store.volume(volumeName);
  let st: fs.Stats;
  try {
    st = fs.statSync(src);
  } catch (e) {
    throw fromNodeError(e, `cannot import ${src}`);
  }
  if (!st.isDirectory() && !st.isFile()) throw new PrismError('EINVAL', `${src} is neither a directory nor a tar archive`);
  const destIno = mkdirs(volume, normalizePath(opts.dest ?? '/'));
  const own = opts.pool ? undefined : hashPool();
  const imp = new Importer(store, volume, opts.pool ?? own!, destIno, opts.onProgress);
  try {
    if (st.isDirectory()) await imp.directory(fs.realpathSync(src));
    else await imp.archive(src);
    await imp.finish();
  } catch (e) {
    await imp.abort();
    throw fromNodeError(e, `import of ${src} failed`); // a PrismError as it is
  } finally {
    if (own) await own.destroy();
  }
  store.commit();
  return { ...imp.result(), seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

// ---- the pipeline ---------------------------------------------------------------------------------------

/** A hash task: pieces of files (or data) read into one shared buffer. */
interface Task {
  req: HashTask;
  bytes: number;
  blocks: number;
  promise?: Promise<HashResult>;
  result?: HashResult;
  /** Byte offset and first hash slot of each piece. */
  at: number[];
  block: number[];
}

/** One step, run on the main thread in order, once its task (if any) is hashed. */
interface Op {
  task?: Task;
  piece: number;
  run(): void;
}

/** What to give an inode once it exists. */
interface Meta {
  mode: number; // with the type bits
  uid: number;
  gid: number;
  size: number;
  rdev: number;
  atime: Time;
  mtime: Time;
}

/** An entry of a source tree, from the walk. */
interface Entry {
  path: string | Uint8Array;
  name: string | Uint8Array;
  parent: Entry | null;
  /** An earlier entry of the same inode (this one is a hard link to it). */
  link: Entry | null;
  target?: Uint8Array;
  m: Meta;
  ino: number; // in the volume, once made
}

class Importer {
  private ops: Op[] = [];
  private head = 0;
  private inflight = 0;
  private readonly maxInflight: number;
  private batch: Task | null = null;
  private buffers: SharedArrayBuffer[] = [];
  private dirAttrs: Array<[number, Meta]> = [];
  private files = 0;
  private dirs = 0;
  private bytes = 0;
  private newBytes = 0;
  private progressBytes = 0;
  private totalFiles = 0;
  private totalBytes = 0;
  private lastProgress = 0;
  private sinceCommit = 0;
  private walking: Walk | null = null;
  private archiveMode = false;

  constructor(
    private readonly store: Store,
    private readonly v: Volume,
    private readonly pool: Piscina,
    private readonly destIno: number,
    private readonly onProgress?: (p: ImportProgress) => void,
  ) {
    this.maxInflight = Math.max(1, pool.maxThreads) * TASKS_PER_THREAD;
  }

  result() {
    return { files: this.files, dirs: this.dirs, bytes: this.bytes, newBytes: this.newBytes };
  }

  // ---- tasks and ops ----

  /** Add a piece of `length` (<= TASK_BYTES) bytes to the batch: read from a file, or filled in by the caller. */
  private addPiece(length: number, piece?: Piece): [Task, number] {
    let b = this.batch;
    if (b && (b.bytes + length > TASK_BYTES || b.at.length >= TASK_PIECES)) { this.submit(); b = null; }
    if (!b) {
      const buf = this.buffers.pop() ?? new SharedArrayBuffer(TASK_BYTES);
      b = { req: piece ? { kind: 'hash', buf, pieces: [] } : { kind: 'hash', buf, lengths: [] }, bytes: 0, blocks: 0, at: [], block: [] };
      this.batch = b;
    }
    const i = b.at.length;
    b.at.push(b.bytes);
    b.block.push(b.blocks);
    if (piece) b.req.pieces!.push(piece);
    else b.req.lengths!.push(length);
    b.bytes += length;
    b.blocks += Math.ceil(length / BLOCK_SIZE);
    return [b, i];
  }

  private submit(): void {
    const b = this.batch;
    if (!b) return;
    this.batch = null;
    this.inflight++;
    b.promise = this.pool.run(b.req) as Promise<HashResult>;
    b.promise.then((r) => { b.result = r; }, () => { /* reported where awaited */ });
  }

  private get mustWait(): boolean {
    return this.inflight >= this.maxInflight || this.ops.length - this.head > MAX_OPS;
  }

  /** Run ready ops; then, while too much is queued (or with all, until nothing is), wait for hashes and run more. */
  private async drain(all = false): Promise<void> {
    for (;;) {
      this.runReady();
      if (this.head >= this.ops.length || !(all || this.mustWait)) break;
      const t = this.ops[this.head].task!;
      if (!t.promise) this.submit();
      await t.promise;
    }
    if (this.head > 4096 && this.head * 2 > this.ops.length) { this.ops = this.ops.slice(this.head); this.head = 0; }
  }

  private runReady(): void {
    const ops = this.ops;
    while (this.head < ops.length) {
      const op = ops[this.head];
      const t = op.task;
      if (t && !t.result) break;
      this.head++;
      op.run();
      if (t && op.piece === t.at.length - 1) { // the task's last piece: its buffer is free again
        this.inflight--;
        this.buffers.push(t.req.buf);
        t.result = undefined;
      }
      if (++this.sinceCommit >= 256) { this.sinceCommit = 0; this.store.maybeCommit(); this.progress(false); }
    }
  }

  private progress(force: boolean): void {
    if (!this.onProgress || (this.walking && !this.walking.done)) return; // totals not known yet
    const now = Date.now();
    if (!force && now - this.lastProgress < 100) return;
    this.lastProgress = now;
    this.onProgress({ files: this.files, bytes: this.progressBytes, totalFiles: this.totalFiles, totalBytes: this.totalBytes });
  }

  async finish(): Promise<void> {
    this.submit();
    await this.drain(true);
    // Directories last: making their entries changed their times.
    for (let i = this.dirAttrs.length - 1; i >= 0; i--) {
      const [ino, m] = this.dirAttrs[i];
      this.v.setattr(ino, { mode: m.mode, uid: m.uid, gid: m.gid, atime: m.atime, mtime: m.mtime });
    }
    this.totalFiles = Math.max(this.totalFiles, this.files);
    if (this.archiveMode) this.progressBytes = this.totalBytes;
    this.progress(true);
  }

  /** After an error: let the tasks in flight end, so none outlives the pool. */
  async abort(): Promise<void> {
    this.submit();
    await Promise.allSettled(this.ops.slice(this.head).map((op) => op.task?.promise));
    if (this.walking) await this.walking.settled;
  }

  // ---- making entries (main thread, in order) ----

  /** Make an entry, replacing a non-directory of the same name; a directory merges with a directory. */
  private place(dir: number, name: string | Uint8Array, wantDir: boolean, make: () => Attr): number {
    try {
      return make().ino;
    } catch (e) {
      if (!isPrismError(e, 'EEXIST')) throw e;
      const n = nameBuf(name);
      const old = this.v.lookup(dir, n);
      if (isDir(old.mode)) {
        if (wantDir) return old.ino;
        throw new PrismError('EEXIST', `cannot replace the directory ${JSON.stringify(n.toString())} with a non-directory`);
      }
      this.v.unlink(dir, n);
      return make().ino;
    }
  }

  /** Make an entry; dir -1 is the destination itself (the source root). A regular file gets its times when its data is in. */
  private make(dir: number, name: string | Uint8Array, m: Meta, target?: Uint8Array): number {
    const v = this.v;
    const type = m.mode & S_IFMT;
    const n = typeof name === 'string' ? name : nameBuf(name);
    if (type === S_IFDIR) {
      let ino = this.destIno;
      if (dir !== -1) {
        ino = this.place(dir, name, true, () => v.mkdir(dir, n, m.mode, m.uid, m.gid));
        this.dirs++;
      }
      this.dirAttrs.push([ino, m]);
      return ino;
    }
    this.files++;
    if (type === S_IFREG) return this.place(dir, name, false, () => v.create(dir, n, m.mode, m.uid, m.gid));
    const ino = type === S_IFLNK
      ? this.place(dir, name, false, () => v.symlink(dir, n, nameBuf(target!), m.uid, m.gid))
      : this.place(dir, name, false, () => v.mknod(dir, n, m.mode, m.rdev, m.uid, m.gid));
    this.setTimes(ino, m);
    return ino;
  }

  private setTimes(ino: number, m: Meta): void {
    this.v.setattr(ino, { atime: m.atime, mtime: m.mtime });
  }

  private link(target: number, dir: number, name: string | Uint8Array): void {
    const n = typeof name === 'string' ? name : nameBuf(name);
    this.place(dir, name, false, () => this.v.link(target, dir, n));
    this.files++;
  }

  /** Store one hashed piece of a file: its blocks from block index `first` on. */
  private writePiece(ino: number, first: number, task: Task, piece: number, got: number): void {
    const n = Math.ceil(got / BLOCK_SIZE);
    if (n === 0) return;
    const r = task.result!;
    const at = task.at[piece], slot = task.block[piece];
    const hashes = Buffer.from(r.hashes);
    const blocks = this.store.blocks;
    const hs: Array<Buffer | null> = new Array(n);
    const lens: number[] = new Array(n);
    for (let j = 0; j < n; j++) {
      const len = Math.min(BLOCK_SIZE, got - j * BLOCK_SIZE);
      lens[j] = len;
      const h = hashes.subarray((slot + j) * 32, (slot + j) * 32 + 32);
      if (isZeroHash(h)) { hs[j] = null; continue; } // all zeros: a hole
      if (!blocks.get(h)) {
        blocks.put(Buffer.from(task.req.buf, at + j * BLOCK_SIZE, len), h);
        this.newBytes += len;
      }
      hs[j] = h;
    }
    this.v.writeBlocks(ino, first, hs, lens);
  }

  /** Queue a regular file read from disk, in pieces of at most TASK_BYTES. */
  private queueFile(e: Entry): void {
    const size = e.m.size;
    let total = 0;
    for (let off = 0; off < size; off += TASK_BYTES) {
      const len = Math.min(TASK_BYTES, size - off);
      const [task, piece] = this.addPiece(len, [e.path, off, len]);
      const pieceOff = off;
      this.ops.push({
        task, piece,
        run: () => {
          if (pieceOff === 0) e.ino = this.make(e.parent!.ino, e.name, e.m);
          const r = task.result!;
          const err = r.errors[piece];
          if (err) throw fromNodeError({ code: err[0], message: err[1] }, `cannot read ${show(e.path)}`);
          const got = r.got[piece];
          this.writePiece(e.ino, pieceOff / BLOCK_SIZE, task, piece, got);
          total += got;
          this.progressBytes += got;
          if (pieceOff + len >= size) { this.bytes += total; this.setTimes(e.ino, e.m); }
        },
      });
    }
  }

  // ---- a directory tree ----

  async directory(root: string): Promise<void> {
    const w = new Walk(root, this.pool, (e) => {
      const type = e.m.mode & S_IFMT;
      if (type === S_IFDIR) return;
      this.totalFiles++;
      if (type === S_IFREG && !e.link) this.totalBytes += e.m.size;
    });
    this.walking = w;
    const threads = Math.max(1, this.pool.maxThreads);
    // Entries are made as the walk finds them; progress is reported once the walk has counted them all.
    for (;;) {
      const e = w.next();
      if (!e) {
        if (w.failed) throw w.failed;
        if (w.done) break;
        if (this.inflight < threads) this.submit(); // keep the workers busy while directories are listed
        await w.more();
        this.runReady();
        if (w.done) this.progress(true);
        continue;
      }
      const type = e.m.mode & S_IFMT;
      if (e.link) {
        const first = e.link;
        this.ops.push({ piece: 0, run: () => this.link(first.ino, e.parent!.ino, e.name) });
      } else if (type === S_IFREG && e.m.size > 0) {
        this.queueFile(e);
      } else {
        this.ops.push({
          piece: 0,
          run: () => {
            e.ino = this.make(e.parent ? e.parent.ino : -1, e.name, e.m, e.target);
            if (type === S_IFREG) this.setTimes(e.ino, e.m);
          },
        });
      }
      if (this.mustWait) await this.drain();
    }
  }

  // ---- a tar archive ----

  async archive(file: string): Promise<void> {
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
    this.archiveMode = true;
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
}

/** The walk of a source tree: directories are listed by the workers, parents before children. */
class Walk {
  private entries: Entry[] = [];
  private head = 0;
  private queue: Entry[] = [];
  private inodes = new Map<string, Entry>();
  private running = 0;
  private wake: (() => void) | null = null;
  private ended!: () => void;
  /** Resolves when no listing is running any more. */
  readonly settled = new Promise<void>((resolve) => { this.ended = resolve; });
  done = false;
  failed: unknown = null;
  private readonly threads: number;

  constructor(root: string, private readonly pool: Piscina, private readonly found: (e: Entry) => void) {
    this.threads = Math.max(1, pool.maxThreads);
    const st = fs.lstatSync(root, { bigint: true });
    const e: Entry = {
      path: root, name: '', parent: null, link: null, ino: 0,
      m: {
        mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), size: 0, rdev: 0,
        atime: timeFromNs(st.atimeNs), mtime: timeFromNs(st.mtimeNs),
      },
    };
    this.entries.push(e);
    this.queue.push(e);
    this.pump();
  }

  /** The next entry found, if any yet. */
  next(): Entry | undefined {
    if (this.head >= this.entries.length) return undefined;
    const e = this.entries[this.head++];
    if (this.head > 4096 && this.head * 2 > this.entries.length) { this.entries = this.entries.slice(this.head); this.head = 0; }
    return e;
  }

  /** Resolves when more entries are found or the walk ends. */
  more(): Promise<void> {
    if (this.done || this.failed || this.head < this.entries.length) return Promise.resolve();
    return new Promise((resolve) => { this.wake = resolve; });
  }

  private pump(): void {
    while (!this.failed && this.queue.length > 0 && this.running < this.threads * 2) {
      const n = Math.min(LIST_DIRS, Math.max(1, Math.ceil(this.queue.length / (this.threads * 2))));
      const dirs = this.queue.splice(0, n);
      this.running++;
      const task: ListTask = { kind: 'list', dirs: dirs.map((d) => d.path) };
      (this.pool.run(task) as Promise<Listing[]>).then((listings) => {
        this.running--;
        try {
          listings.forEach((l, i) => this.listed(dirs[i], l));
        } catch (e) { this.failed ??= e; }
        this.pump();
      }, (e) => { this.running--; this.failed ??= e; this.pump(); });
    }
    if (this.running === 0 && !this.done) {
      this.done = true;
      this.ended();
    }
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private listed(dir: Entry, l: Listing): void {
    if (l.error) throw fromNodeError({ code: l.error[0], message: l.error[1] }, `cannot read directory ${show(dir.path)}`);
    const s = l.stats;
    for (let i = 0; i < l.names.length; i++) {
      const o = i * STAT_FIELDS;
      const name = l.names[i];
      const mode = s[o + F.Mode];
      const e: Entry = {
        path: join(dir.path, name), name, parent: dir, link: null, ino: 0,
        m: {
          mode, uid: s[o + F.Uid], gid: s[o + F.Gid], size: s[o + F.Size], rdev: s[o + F.Rdev],
          atime: [s[o + F.ASec], s[o + F.ANsec]], mtime: [s[o + F.MSec], s[o + F.MNsec]],
        },
      };
      const key = l.inodes[i];
      if (key !== undefined) {
        const first = this.inodes.get(key);
        if (first) e.link = first;
        else this.inodes.set(key, e);
      }
      const target = l.targets[i];
      if (target) e.target = target;
      this.entries.push(e);
      this.found(e);
      if ((mode & S_IFMT) === S_IFDIR) this.queue.push(e);
    }
  }
}

// ---- helpers --------------------------------------------------------------------------------------------

function isZeroHash(h: Buffer): boolean {
  for (let i = 0; i < 32; i++) if (h[i] !== 0) return false;
  return true;
}

function nameBuf(n: string | Uint8Array): Buffer {
  return typeof n === 'string' ? Buffer.from(n) : Buffer.from(n.buffer, n.byteOffset, n.length);
}

function join(dir: string | Uint8Array, name: string | Uint8Array): string | Uint8Array {
  if (typeof dir === 'string' && typeof name === 'string') return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
  return new Uint8Array(Buffer.concat([nameBuf(dir), Buffer.from('/'), nameBuf(name)]));
}

function show(p: string | Uint8Array): string {
  return typeof p === 'string' ? p : Buffer.from(p).toString();
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

/** Linux dev_t from major and minor (glibc's gnu_dev_makedev), as an exact double. */
export function makedev(major: number, minor: number): number {
  const lo = ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & 0xfff00) << 12)) >>> 0;
  const hi = (((minor >>> 20) & 0xfff) | (major & 0xfffff000)) >>> 0;
  return hi * 2 ** 32 + lo;
}
export function devMajor(dev: number): number {
  const lo = dev % 2 ** 32, hi = Math.floor(dev / 2 ** 32);
  return (((lo >>> 8) & 0xfff) | (hi & 0xfffff000)) >>> 0;
}
export function devMinor(dev: number): number {
  const lo = dev % 2 ** 32, hi = Math.floor(dev / 2 ** 32);
  return ((lo & 0xff) | ((lo >>> 12) & 0xfff00) | ((hi & 0xfff) << 20)) >>> 0;
}

/** The volume directory at an absolute path, made (0755, root) where missing. */
function mkdirs(v: Volume, p: string): number {
  let ino = v.rootIno;
  for (const part of p.split('/').filter(Boolean)) {
    let a: Attr;
    try {
      a = v.lookup(ino, part);
    } catch (e) {
      if (!isPrismError(e, 'ENOENT')) throw e;
      a = v.mkdir(ino, part, 0o755, 0, 0);
    }
    if (!isDir(a.mode)) throw new PrismError('ENOTDIR', `${p}: ${part} is not a directory`);
    ino = a.ino;
  }
  return ino;
}
