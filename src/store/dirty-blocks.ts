// The dirty-block cache: blocks of a volume's files written in part and not yet hashed and stored.
// A block with nothing stored under it is held dense, sized to what it holds (small files stay small),
// growing by doubling from 4 KiB to a whole block. A block written over a stored one holds only the
// 4 KiB pages written, over the stored block's hash: a small write into a big file neither reads the
// block nor fills a fresh 64 KiB buffer (16 page faults, each a trap to the hypervisor in a VM); the
// stored block is read when a byte not written is wanted (a page written in part, a read) and at the
// flush, into one scratch buffer. Buffers are pooled (buffer-pool.ts). A block held counts against
// the store's budget of unflushed data: a dense one BLOCK_SIZE (the work of its flush, hashing a whole
// block, whatever the memory it holds), one over a stored block the pages it holds (a COMMIT logs its
// pages instead of hashing it, and the checkpoint that stores it later runs in slices: what bounds
// such blocks is memory).
import { giveBuffer, takeBuffer } from './buffer-pool.js';
import { BLOCK_SIZE } from './layout.js';

export const PAGE_SIZE = 4096;

/** A stored block's content by hash (checked on its way in). */
export type ReadBlock = (hash: Buffer) => Buffer;

/**
 * A partially written block. Dense (no `base`): bytes [0, len) are its content, the rest reads as
 * zeros. Over a stored block (`base`, its hash): page i is `pages[i]` where written (whole), else the
 * stored block's bytes there, zeros past its end; `buf` and `len` are unused. `fresh`: no stored
 * block was under it when it became dirty (its bytes count as new in the file's usage).
 */
export interface DirtyBlock {
  buf: Buffer; len: number; fresh: boolean; base?: Buffer; pages?: Array<Buffer | undefined>;
  /** When it became dirty (performance.now()), and whether a write into it grew the file. */
  since: number; grew: boolean;
  /** Pages of it are in the intent log (intent-log.ts): storing or dropping it calls for a checkpoint. */
  logged?: boolean;
  /** Pages written since it was last logged (a block over a stored one). */
  unlogged?: Set<number>;
  /** What it counts against the budget of unflushed data (see above). */
  charged: number;
}

/** The buffer of a block that holds nothing yet: grow() replaces it on the first write. */
export const EMPTY = Buffer.alloc(0);

/** A dirty block with nothing stored under it. */
function denseBlock(): DirtyBlock {
  return { buf: EMPTY, len: 0, fresh: true, since: performance.now(), grew: false, charged: 0 };
}

/** A dirty block over the stored block `base` (nothing written yet). */
function overBlock(base: Buffer): DirtyBlock {
  return { buf: EMPTY, len: 0, fresh: false, base, pages: [], since: performance.now(), grew: false, charged: 0 };
}

/** Make room for `need` bytes in a dense block's buffer, keeping its first `len` bytes. */
function grow(d: DirtyBlock, need: number): void {
  if (d.buf.length >= need) return;
  let size = 4096;
  while (size < need) size *= 2;
  const next = takeBuffer(Math.min(size, BLOCK_SIZE));
  d.buf.copy(next, 0, 0, d.len);
  giveBuffer(d.buf);
  d.buf = next;
}

/** Write `chunk` at byte `at` of the block. */
function writeInto(d: DirtyBlock, at: number, chunk: Buffer, read: ReadBlock): void {
  const pages = d.pages;
  if (!pages) {
    grow(d, at + chunk.length);
    if (at > d.len) d.buf.fill(0, d.len, at);
    chunk.copy(d.buf, at);
    d.len = Math.max(d.len, at + chunk.length);
    return;
  }
  const end = at + chunk.length;
  for (let p = Math.floor(at / PAGE_SIZE); p * PAGE_SIZE < end; p++) {
    const pStart = p * PAGE_SIZE;
    const from = Math.max(at, pStart);
    const to = Math.min(end, pStart + PAGE_SIZE);
    (d.unlogged ??= new Set()).add(p);
    let page = pages[p];
    if (!page) {
      page = takeBuffer(PAGE_SIZE);
      // A page written in part keeps the stored bytes around the write.
      if (from > pStart || to < pStart + PAGE_SIZE) copyStored(read(d.base!), pStart, PAGE_SIZE, page, 0);
      pages[p] = page;
    }
    chunk.copy(page, from - pStart, from - at, to - at);
  }
}

/** Copy the block's bytes [from, to) into `out` at `outAt`. */
export function copyOut(d: DirtyBlock, from: number, to: number, out: Buffer, outAt: number, read: ReadBlock): void {
  const pages = d.pages;
  if (!pages) return copyStored(d.buf.subarray(0, d.len), from, to - from, out, outAt);
  let stored: Buffer | undefined;
  for (let p = Math.floor(from / PAGE_SIZE); p * PAGE_SIZE < to; p++) {
    const a = Math.max(from, p * PAGE_SIZE);
    const b = Math.min(to, (p + 1) * PAGE_SIZE);
    const page = pages[p];
    if (page) page.copy(out, outAt + a - from, a - p * PAGE_SIZE, b - p * PAGE_SIZE);
    else copyStored(stored ??= read(d.base!), a, b - a, out, outAt + a - from);
  }
}

/**
 * The block's first `len` bytes (its length in the file), zeros past what it holds. A block over a
 * stored one (or a dense one shorter than len) is assembled in `scratch` (BLOCK_SIZE bytes): the
 * result is then valid until scratch is reused.
 */
export function contentOf(d: DirtyBlock, len: number, scratch: Buffer, read: ReadBlock): Buffer {
  if (!d.pages && len <= d.buf.length) {
    if (len > d.len) d.buf.fill(0, d.len, len);
    return d.buf.subarray(0, len);
  }
  copyOut(d, 0, len, scratch, 0, read);
  return scratch.subarray(0, len);
}

/** Turn a block over a stored one into a dense one (DirtyBlocks.densify). */
function densify(d: DirtyBlock, read: ReadBlock): void {
  const pages = d.pages;
  if (!pages) return;
  const stored = read(d.base!);
  let len = stored.length;
  pages.forEach((_, p) => { len = Math.max(len, (p + 1) * PAGE_SIZE); });
  const buf = takeBuffer(BLOCK_SIZE);
  copyOut(d, 0, len, buf, 0, read);
  release(d);
  d.buf = buf;
  d.len = len;
  d.base = undefined;
  d.pages = undefined;
}

/**
 * Whether a timed commit may leave a block for later: it overwrites a stored block within the file
 * (the stored one is a consistent older content, as ext4's data=ordered leaves overwrites out of a
 * journal commit), and it became dirty after `since`. New blocks and blocks that grew the file never
 * wait: the metadata committed must not expose bytes that are not there.
 */
export function deferrable(d: DirtyBlock, since: number): boolean {
  return loggable(d) && d.since > since;
}

/**
 * Whether a COMMIT may log the block's written pages instead of storing it (intent-log.ts): it only
 * overwrites stored bytes within the file, so its pages alone, written over the stored block, make it.
 */
export function loggable(d: DirtyBlock): boolean {
  return d.pages !== undefined && !d.grew;
}

/** Give a block's buffers back to the pool (the block is not used after). */
function release(d: DirtyBlock): void {
  giveBuffer(d.buf);
  d.buf = EMPTY;
  if (d.pages) for (const page of d.pages) if (page) giveBuffer(page);
}

/** Copy `n` bytes of a block's content from `at` into `out` at `outAt`; zeros past its end. */
export function copyStored(stored: Buffer, at: number, n: number, out: Buffer, outAt: number): void {
  const have = Math.max(0, Math.min(n, stored.length - at));
  if (have > 0) stored.copy(out, outAt, at, at + have);
  if (have < n) out.fill(0, outAt + have, outAt + n);
}

/** One volume's dirty blocks: inode -> block index -> block. */
export class DirtyBlocks {
  private readonly files = new Map<number, Map<number, DirtyBlock>>();
  /** Per file, how many of its dirty blocks are fresh: usage is asked on every write (attr), so kept, not counted. */
  private readonly fresh = new Map<number, number>();

  /**
   * `host.dirtyData` is told of every block held or let go (the store flushes past a limit), and
   * `loggedGone` of a logged block stored or dropped (the next commit must be a checkpoint).
   */
  constructor(private readonly host: { dirtyData(delta: number): void; loggedGone(): void }) {}

  /** A file's dirty blocks by index, if it has any. */
  of(ino: number): Map<number, DirtyBlock> | undefined {
    return this.files.get(ino);
  }

  /** Inodes that have dirty blocks. */
  inodes(): IterableIterator<number> {
    return this.files.keys();
  }

  /** How many files have dirty blocks. */
  get size(): number { return this.files.size; }

  /** How many blocks are held. */
  get blockCount(): number { return this.held; }
  private held = 0;
  /** Held blocks that are not loggable (new, or grew their file). */
  private unloggable = 0;
  /** Blocks that pages were written into since they were last logged: inode -> indexes. */
  private readonly toLog = new Map<number, Set<number>>();

  /** Whether every held block is loggable (Store.logOnly). */
  get allLoggable(): boolean { return this.unloggable === 0; }

  /** Loggable blocks with pages written since they were last logged, as [inode, index, block]. */
  *unlogged(): Generator<[number, number, DirtyBlock]> {
    for (const [ino, idxs] of this.toLog) {
      const m = this.files.get(ino);
      for (const idx of idxs) {
        const d = m?.get(idx);
        if (d && loggable(d) && d.unlogged) yield [ino, idx, d];
      }
    }
  }

  /** Blocks given by unlogged() are in the log now. */
  loggedAll(blocks: Iterable<DirtyBlock>): void {
    for (const d of blocks) { d.logged = true; d.unlogged = undefined; }
    this.toLog.clear();
  }

  /** Hold a new dirty block where none is: over the stored block `base` if there is one, else dense. */
  add(ino: number, idx: number, base: Buffer | undefined): DirtyBlock {
    const d = base ? overBlock(base) : denseBlock();
    let m = this.files.get(ino);
    if (!m) { m = new Map(); this.files.set(ino, m); }
    m.set(idx, d);
    this.held++;
    if (!loggable(d)) this.unloggable++;
    if (d.fresh) this.fresh.set(ino, (this.fresh.get(ino) ?? 0) + 1);
    this.charge(d);
    return d;
  }

  /**
   * Write `chunk` at byte `at` of a held block; `read` gives a stored block's bytes around it; `grows`:
   * the write makes the file longer.
   */
  write(ino: number, idx: number, d: DirtyBlock, at: number, chunk: Buffer, read: ReadBlock, grows: boolean): void {
    if (grows && loggable(d)) this.unloggable++;
    if (grows) d.grew = true;
    writeInto(d, at, chunk, read);
    if (!d.pages) return;
    this.charge(d);
    let idxs = this.toLog.get(ino);
    if (!idxs) this.toLog.set(ino, idxs = new Set());
    idxs.add(idx);
  }

  /** Turn a block over a stored one into a dense one (a truncation is about to cut it). */
  densify(d: DirtyBlock, read: ReadBlock): void {
    if (loggable(d)) this.unloggable++;
    densify(d, read);
    this.charge(d);
  }

  /** Tell the budget what the block counts now. */
  private charge(d: DirtyBlock): void {
    let now = BLOCK_SIZE;
    if (d.pages) {
      now = 0;
      for (const page of d.pages) if (page) now += PAGE_SIZE;
    }
    if (now !== d.charged) {
      this.host.dirtyData(now - d.charged);
      d.charged = now;
    }
  }

  /**
   * Bytes of a file of `size` bytes held only in its fresh dirty blocks: each counts up to the end of
   * the file. Dirty blocks lie below the end (a truncation drops those past it), so all but the one
   * holding the last byte are whole.
   */
  freshBytes(ino: number, size: number): number {
    const n = this.fresh.get(ino);
    if (!n || size <= 0) return 0;
    const last = Math.floor((size - 1) / BLOCK_SIZE);
    const tail = this.files.get(ino)?.get(last)?.fresh ? BLOCK_SIZE - (size - last * BLOCK_SIZE) : 0;
    return n * BLOCK_SIZE - tail;
  }

  /** Let go of one block, if held; its buffer goes back to the pool. */
  drop(ino: number, idx: number): void {
    const m = this.files.get(ino);
    const d = m?.get(idx);
    if (m && d) {
      m.delete(idx);
      this.held--;
      if (!loggable(d)) this.unloggable--;
      this.toLog.get(ino)?.delete(idx);
      if (d.fresh) this.unfresh(ino, 1);
      if (d.logged) this.host.loggedGone();
      this.host.dirtyData(-d.charged);
      release(d);
      if (m.size === 0) this.files.delete(ino);
    }
  }

  /** Let go of a file's blocks with first <= index < last. */
  dropRange(ino: number, first: number, last: number): void {
    const m = this.files.get(ino);
    if (m) for (const idx of [...m.keys()]) if (idx >= first && idx < last) this.drop(ino, idx);
  }

  /** Let go of all of a file's blocks (the file is gone). */
  dropFile(ino: number): void {
    const m = this.files.get(ino);
    if (m) {
      let charged = 0;
      for (const d of m.values()) {
        if (d.logged) this.host.loggedGone();
        if (!loggable(d)) this.unloggable--;
        charged += d.charged;
        release(d);
      }
      this.host.dirtyData(-charged);
      this.held -= m.size;
      this.files.delete(ino);
      this.fresh.delete(ino);
      this.toLog.delete(ino);
    }
  }

  private unfresh(ino: number, k: number): void {
    const n = (this.fresh.get(ino) ?? 0) - k;
    if (n > 0) this.fresh.set(ino, n);
    else this.fresh.delete(ino);
  }
}
