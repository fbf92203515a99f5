// The dirty-block cache: blocks of a volume's files written in part and not yet hashed and stored.
// Each is held in memory sized to what it holds (small files stay small), growing by doubling from
// 4 KiB to a whole block, in pooled buffers (buffer-pool.ts). While held, each counts BLOCK_SIZE
// against the store's budget of unflushed data.
import { giveBuffer, takeBuffer } from './buffer-pool.js';
import { BLOCK_SIZE } from './layout.js';

/**
 * A partially written block: bytes [0, len) are valid, the rest reads as zeros. `fresh`: no stored
 * block was under it when it became dirty (its bytes count as new in the file's usage).
 */
export interface DirtyBlock { buf: Buffer; len: number; fresh: boolean }

/** The buffer of a block that holds nothing yet: grow() replaces it on the first write. */
export const EMPTY = Buffer.alloc(0);

/** Make room for `need` bytes in a partial block's buffer, keeping its first `len` bytes. */
export function grow(d: DirtyBlock, need: number): void {
  if (d.buf.length >= need) return;
  let size = 4096;
  while (size < need) size *= 2;
  const next = takeBuffer(Math.min(size, BLOCK_SIZE));
  d.buf.copy(next, 0, 0, d.len);
  giveBuffer(d.buf);
  d.buf = next;
}

/** One volume's dirty blocks: inode -> block index -> block. */
export class DirtyBlocks {
  private readonly files = new Map<number, Map<number, DirtyBlock>>();
  /** Per file, how many of its dirty blocks are fresh: usage is asked on every write (attr), so kept, not counted. */
  private readonly fresh = new Map<number, number>();

  /** `budget.dirtyData` is told of every block held or let go (the store flushes past a limit). */
  constructor(private readonly budget: { dirtyData(delta: number): void }) {}

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

  /** Hold a new dirty block (none is held at that index). */
  add(ino: number, idx: number, d: DirtyBlock): void {
    let m = this.files.get(ino);
    if (!m) { m = new Map(); this.files.set(ino, m); }
    m.set(idx, d);
    if (d.fresh) this.fresh.set(ino, (this.fresh.get(ino) ?? 0) + 1);
    this.budget.dirtyData(BLOCK_SIZE);
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
      if (d.fresh) this.unfresh(ino, 1);
      giveBuffer(d.buf);
      this.budget.dirtyData(-BLOCK_SIZE);
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
      for (const d of m.values()) giveBuffer(d.buf);
      this.budget.dirtyData(-BLOCK_SIZE * m.size);
      this.files.delete(ino);
      this.fresh.delete(ino);
    }
  }

  private unfresh(ino: number, k: number): void {
    const n = (this.fresh.get(ino) ?? 0) - k;
    if (n > 0) this.fresh.set(ino, n);
    else this.fresh.delete(ino);
  }
}
