// The content-addressed block index: SHA-256 -> where the block lives and how many tree leaves
// reference it. Changes are held in memory and written by the store's commit, in one transaction.
import crypto from 'node:crypto';
import type { Database } from 'lmdb';
import { PrismError } from '../errors.js';
import { HEADER_SIZE, Segments } from './segments.js';

export interface BlockRec {
  s: number; // segment
  o: number; // offset of the data in the segment
  n: number; // length
  r: number; // references from tree leaves
}

export interface SegmentStat { live: number; blocks: number }

/** Index changes handed to one commit (see LmdbNodeStore.cut): never changed after the cut. */
export interface FrozenBlocks {
  readonly dirty: Map<string, BlockRec>;
  /** Blocks first stored since the previous cut (not in the index yet). */
  readonly fresh: Set<string>;
}

export function sha256(data: Buffer): Buffer {
  return crypto.createHash('sha256').update(data).digest();
}

const CACHE_BYTES = 32 * 1024 * 1024;

export class Blocks {
  private cache = new Map<string, Buffer>();
  private cacheBytes = 0;
  private dirty = new Map<string, BlockRec>();
  private fresh = new Set<string>();
  /** Cut but not yet committed, oldest first. */
  private frozen: FrozenBlocks[] = [];
  /** Totals over committed blocks: physical bytes of block data and number of blocks. */
  physical = 0;
  count = 0;

  constructor(
    private readonly db: Database<BlockRec, Buffer>,
    private readonly segStats: Database<SegmentStat, number>,
    readonly segments: Segments,
  ) {}

  get(hash: Buffer): BlockRec | undefined {
    return this.pendingRec(hash.toString('latin1')) ?? this.db.get(hash);
  }

  private pendingRec(k: string): BlockRec | undefined {
    const d = this.dirty.get(k);
    if (d) return d;
    for (let i = this.frozen.length - 1; i >= 0; i--) {
      const f = this.frozen[i].dirty.get(k);
      if (f) return f;
    }
    return undefined;
  }

  /** Store content once; returns its hash. A new block has no references until a tree leaf retains it. */
  put(data: Buffer, hash: Buffer = sha256(data)): Buffer {
    if (this.get(hash)) return hash;
    const loc = this.segments.append(hash, data);
    const k = hash.toString('latin1');
    this.dirty.set(k, { s: loc.s, o: loc.o, n: data.length, r: 0 });
    this.fresh.add(k);
    return hash;
  }

  /**
   * A block's content (checked on its way in from the segment). Recently read blocks are cached:
   * content-addressed blocks never change, and small sequential reads hit one block many times.
   * Never write into the result.
   */
  read(hash: Buffer): Buffer {
    const k = hash.toString('latin1');
    const hit = this.cache.get(k);
    if (hit) {
      this.cache.delete(k);
      this.cache.set(k, hit);
      return hit;
    }
    const rec = this.get(hash);
    if (!rec) throw new PrismError('EIO', `block ${hash.toString('hex').slice(0, 16)} is missing from the index`);
    const data = this.segments.read(rec, rec.n, hash);
    this.cache.set(k, data);
    this.cacheBytes += data.length;
    for (const [old, b] of this.cache) {
      if (this.cacheBytes <= CACHE_BYTES) break;
      this.cache.delete(old);
      this.cacheBytes -= b.length;
    }
    return data;
  }

  /** Forget cached content (gc moves blocks; fsck wants to read what is on disk). */
  dropCache(): void {
    this.cache.clear();
    this.cacheBytes = 0;
  }

  length(hash: Buffer): number {
    return this.get(hash)?.n ?? 0;
  }

  retain(hash: Buffer): void {
    this.adjust(hash, +1);
  }

  release(hash: Buffer): void {
    this.adjust(hash, -1);
  }

  private adjust(hash: Buffer, d: number): void {
    const k = hash.toString('latin1');
    let rec = this.dirty.get(k);
    if (!rec) {
      // A frozen record is copied, never changed: a commit in progress writes it as it was cut.
      const stored = this.pendingRec(k) ?? this.db.get(hash);
      if (!stored) throw new PrismError('EIO', `reference to unknown block ${hash.toString('hex').slice(0, 16)}`);
      rec = { ...stored };
      this.dirty.set(k, rec);
    }
    rec.r += d;
    if (rec.r < 0) throw new PrismError('EIO', `block ${hash.toString('hex').slice(0, 16)} reference count below zero`);
  }

  /** Overwrite a block's record (gc moves blocks; fsck repairs counts). */
  set(hash: Buffer, rec: BlockRec): void {
    const k = hash.toString('latin1');
    this.dirty.set(k, rec);
  }

  get pending(): number {
    return this.dirty.size;
  }

  /** Freeze the changes so far for a commit; new changes collect apart from them. */
  cut(): FrozenBlocks {
    const f: FrozenBlocks = { dirty: this.dirty, fresh: this.fresh };
    this.frozen.push(f);
    this.dirty = new Map();
    this.fresh = new Set();
    return f;
  }

  /** After f is durable (or its commit failed: its changes are pending again, under newer ones). */
  settled(f: FrozenBlocks, ok: boolean): void {
    const i = this.frozen.indexOf(f);
    if (i < 0) return;
    // Older cuts still frozen are in LMDB already, before f (see LmdbNodeStore.settled): forget them
    // too, or reads would prefer their records to f's. No record cache to fix: get() reads LMDB.
    if (ok) { this.frozen.splice(0, i + 1); return; }
    this.frozen.splice(i, 1);
    for (const [k, rec] of f.dirty) if (!this.dirty.has(k)) this.dirty.set(k, rec);
    for (const k of f.fresh) this.fresh.add(k);
  }

  /** Write frozen changes; must run inside the store's write transaction. Unreferenced blocks are dropped. */
  write(f: FrozenBlocks): void {
    const segDelta = new Map<number, SegmentStat>();
    const bump = (s: number, bytes: number, blocks: number) => {
      const d = segDelta.get(s) ?? { live: 0, blocks: 0 };
      d.live += bytes; d.blocks += blocks;
      segDelta.set(s, d);
    };
    for (const [k, rec] of f.dirty) {
      const hash = Buffer.from(k, 'latin1');
      const isFresh = f.fresh.has(k);
      const before = isFresh ? undefined : this.db.get(hash);
      if (before && (before.s !== rec.s || before.o !== rec.o)) {
        bump(before.s, -(before.n + HEADER_SIZE), -1);
        if (rec.r > 0) bump(rec.s, rec.n + HEADER_SIZE, 1);
      } else if (before && rec.r <= 0) {
        bump(before.s, -(before.n + HEADER_SIZE), -1);
      } else if (!before && rec.r > 0) {
        bump(rec.s, rec.n + HEADER_SIZE, 1);
      }
      if (rec.r > 0) {
        this.db.put(hash, rec);
        if (!before) { this.physical += rec.n; this.count++; }
      } else if (before) {
        this.db.remove(hash);
        this.physical -= before.n; this.count--;
      }
    }
    for (const [s, d] of segDelta) {
      const cur = this.segStats.get(s) ?? { live: 0, blocks: 0 };
      const next = { live: cur.live + d.live, blocks: cur.blocks + d.blocks };
      if (next.blocks <= 0) this.segStats.remove(s);
      else this.segStats.put(s, next);
    }
  }
}
