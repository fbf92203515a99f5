// The dirty-block cache: blocks of a volume's files written in part and not yet hashed and stored.
// Each is held in memory sized to what it holds (small files stay small), growing by doubling from
// 4 KiB to a whole block, in pooled buffers (buffer-pool.ts). While held, each counts BLOCK_SIZE
// against the store's budget of unflushed data.
import { giveBuffer, takeBuffer } from './buffer-pool.js';
import { BLOCK_SIZE } from './layout.js';

/** A partially written block: bytes [0, len) are valid, the rest reads as zeros. */
export interface DirtyBlock { buf: Buffer; len: number }

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
    this.budget.dirtyData(BLOCK_SIZE);
  }

  /** Let go of one block, if held; its buffer goes back to the pool. */
  drop(ino: number, idx: number): void {
    const m = this.files.get(ino);
    const d = m?.get(idx);
    if (m && d) {
      m.delete(idx);
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
    }
  }
}
