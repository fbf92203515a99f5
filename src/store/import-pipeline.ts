// The import pipeline: the main thread owns the store and makes the entries, in source order. A pool
// of worker threads (hash-worker.ts) reads and hashes file content: many small files per task, big
// files in chunks, into shared buffers that are reused, so no data is copied between threads and
// nothing is allocated per file. The main thread looks each hash up and appends only the blocks the
// store does not hold; the rest of a file is a few tree updates. Several tasks are in flight, so
// reading, hashing and the tree updates overlap. A source (import-directory.ts, import-tar.ts)
// extends Importer: it reads its input and queues the entries.
import type { Piscina } from 'piscina';
import { PrismError, isPrismError } from '../errors.js';
import type { HashResult, HashTask, Piece } from './hash-worker.js';
import { BLOCK_SIZE, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, isDir, type Time } from './layout.js';
import type { Store } from './store.js';
import type { Attr, Volume } from './volume.js';

export interface ImportProgress {
  /** Entries other than directories made so far, of totalFiles. */
  files: number;
  /** Bytes of file content stored so far, of totalBytes (for an archive: archive bytes read, of its size). */
  bytes: number;
  totalFiles: number;
  totalBytes: number;
}

/** Bytes per hash task: many small files, or one chunk of a big file. A multiple of BLOCK_SIZE. */
export const TASK_BYTES = 2 * 1024 * 1024;
const TASK_PIECES = 256;
/** Hash tasks in flight per worker thread (each holds a TASK_BYTES buffer). */
const TASKS_PER_THREAD = 3;
/** Queued entries before the producer waits for the store to catch up. */
const MAX_OPS = 20_000;

/** A hash task: pieces of files (or data) read into one shared buffer. */
export interface Task {
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
export interface Op {
  task?: Task;
  piece: number;
  run(): void;
}

/** What to give an inode once it exists. */
export interface Meta {
  mode: number; // with the type bits
  uid: number;
  gid: number;
  size: number;
  rdev: number;
  atime: Time;
  mtime: Time;
}

export abstract class Importer {
  protected ops: Op[] = [];
  private head = 0;
  protected inflight = 0;
  private readonly maxInflight: number;
  private batch: Task | null = null;
  private buffers: SharedArrayBuffer[] = [];
  private dirAttrs: Array<[number, Meta]> = [];
  private files = 0;
  protected dirs = 0;
  protected bytes = 0;
  private newBytes = 0;
  protected progressBytes = 0;
  protected totalFiles = 0;
  protected totalBytes = 0;
  private lastProgress = 0;
  private sinceCommit = 0;

  constructor(
    protected readonly store: Store,
    protected readonly v: Volume,
    protected readonly pool: Piscina,
    protected readonly destIno: number,
    private readonly onProgress?: (p: ImportProgress) => void,
  ) {
    this.maxInflight = Math.max(1, pool.maxThreads) * TASKS_PER_THREAD;
  }

  result() {
    return { files: this.files, dirs: this.dirs, bytes: this.bytes, newBytes: this.newBytes };
  }

  /** Read the source (a path) and queue its entries; finish() then waits for them to be stored. */
  abstract read(src: string): Promise<void>;

  /** Whether the source is still counting the totals (progress is reported once they are known). */
  protected counting(): boolean {
    return false;
  }

  /** After an error: wait for the source's own work in flight. */
  protected async settle(): Promise<void> {}

  /** Bytes of progress once everything is stored. */
  protected doneBytes(): number {
    return this.progressBytes;
  }

  // ---- tasks and ops ----

  /** Add a piece of `length` (<= TASK_BYTES) bytes to the batch: read from a file, or filled in by the caller. */
  protected addPiece(length: number, piece?: Piece): [Task, number] {
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

  protected submit(): void {
    const b = this.batch;
    if (!b) return;
    this.batch = null;
    this.inflight++;
    b.promise = this.pool.run(b.req) as Promise<HashResult>;
    b.promise.then((r) => { b.result = r; }, () => { /* reported where awaited */ });
  }

  protected get mustWait(): boolean {
    return this.inflight >= this.maxInflight || this.ops.length - this.head > MAX_OPS;
  }

  /** Run ready ops; then, while too much is queued (or with all, until nothing is), wait for hashes and run more. */
  protected async drain(all = false): Promise<void> {
    for (;;) {
      this.runReady();
      if (this.head >= this.ops.length || !(all || this.mustWait)) break;
      const t = this.ops[this.head].task!;
      if (!t.promise) this.submit();
      await t.promise;
    }
    if (this.head > 4096 && this.head * 2 > this.ops.length) { this.ops = this.ops.slice(this.head); this.head = 0; }
  }

  protected runReady(): void {
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

  protected progress(force: boolean): void {
    if (!this.onProgress || this.counting()) return; // totals not known yet
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
    this.progressBytes = this.doneBytes();
    this.progress(true);
  }

  /** After an error: let the tasks in flight end, so none outlives the pool. */
  async abort(): Promise<void> {
    this.submit();
    await Promise.allSettled(this.ops.slice(this.head).map((op) => op.task?.promise));
    await this.settle();
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
  protected make(dir: number, name: string | Uint8Array, m: Meta, target?: Uint8Array): number {
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

  protected setTimes(ino: number, m: Meta): void {
    this.v.setattr(ino, { atime: m.atime, mtime: m.mtime });
  }

  protected link(target: number, dir: number, name: string | Uint8Array): void {
    const n = typeof name === 'string' ? name : nameBuf(name);
    this.place(dir, name, false, () => this.v.link(target, dir, n));
    this.files++;
  }

  /** Store one hashed piece of a file: its blocks from block index `first` on. */
  protected writePiece(ino: number, first: number, task: Task, piece: number, got: number): void {
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
}

function isZeroHash(h: Buffer): boolean {
  for (let i = 0; i < 32; i++) if (h[i] !== 0) return false;
  return true;
}

/** A name or path from a source as a Buffer (no copy for a byte array). */
export function nameBuf(n: string | Uint8Array): Buffer {
  return typeof n === 'string' ? Buffer.from(n) : Buffer.from(n.buffer, n.byteOffset, n.length);
}
