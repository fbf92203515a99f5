// Import from a directory tree: the workers list directories (parents before children) and read
// files by path; hard links are found by device and inode number. Symlinks are not followed.
import fs from 'node:fs';
import type { Piscina } from 'piscina';
import { fromNodeError } from '../errors.js';
import { timeFromNs } from '../posix/clock.js';
import { F, STAT_FIELDS, type ListTask, type Listing } from './hash-worker.js';
import { Importer, TASK_BYTES, nameBuf, type Meta } from './import-pipeline.js';
import { BLOCK_SIZE } from './layout.js';
import { S_IFDIR, S_IFMT, S_IFREG } from '../posix/mode.js';

/** Directories per listing task. */
const LIST_DIRS = 32;

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

export class DirectoryImport extends Importer {
  private walking: Walk | null = null;

  /** Walk the tree at root (a real path) and queue its entries. */
  async read(root: string): Promise<void> {
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

  protected override counting(): boolean {
    return this.walking !== null && !this.walking.done;
  }

  protected override async settle(): Promise<void> {
    if (this.walking) await this.walking.settled;
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

function join(dir: string | Uint8Array, name: string | Uint8Array): string | Uint8Array {
  if (typeof dir === 'string' && typeof name === 'string') return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
  return new Uint8Array(Buffer.concat([nameBuf(dir), Buffer.from('/'), nameBuf(name)]));
}

function show(p: string | Uint8Array): string {
  return typeof p === 'string' ? p : Buffer.from(p).toString();
}
