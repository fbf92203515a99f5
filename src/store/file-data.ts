// The data of a volume's regular files: read, write, truncate, holes (seek, fallocate), sharing blocks
// (copy_file_range, import). Whole blocks are hashed and stored as they are written; partial ones wait
// in the dirty-block cache (dirty-blocks.ts) until the file is flushed or closed.
import { PrismError } from '../errors.js';
import { now } from '../posix/clock.js';
import { PAGE_SIZE, contentOf, copyOut, copyStored, loggable, type DirtyBlock } from './dirty-blocks.js';
import type { PageRecord } from './intent-log.js';
import { BLOCK_SIZE, Kind, blockIndexOfKey, blockKey, kindRange, layerOf, localOf, type InodeRec } from './layout.js';
import { VolumeXattrs } from './xattrs.js';
import { MAX_FILE_SIZE } from '../posix/limits.js';
import { isDir, isReg } from '../posix/mode.js';
import type { Attr } from '../posix/types.js';

export abstract class VolumeFileData extends VolumeXattrs {
  private regInode(ino: number): InodeRec {
    const rec = this.inode(ino);
    if (isDir(rec.mode)) throw new PrismError('EISDIR', 'is a directory');
    if (!isReg(rec.mode)) throw new PrismError('EINVAL', 'not a regular file');
    return rec;
  }

  /** A stored block's content (dirty blocks read the blocks under them through this). */
  private readonly readBlock = (h: Buffer): Buffer => this.host.blocks.read(h);

  /** Copy bytes [from, to) of one block (dirty, stored or a hole) into `out` at `outAt`. */
  private copyBlock(ino: number, idx: number, from: number, to: number, out: Buffer, outAt: number): void {
    const d = this.dirty.of(ino)?.get(idx);
    if (d) return copyOut(d, from, to, out, outAt, this.readBlock);
    const h = this.storedBlock(ino, idx);
    if (h) copyStored(this.readBlock(h), from, to - from, out, outAt);
    else out.fill(0, outAt, outAt + to - from);
  }

  /** Read up to length bytes at offset; `into`, if given and large enough, receives them (no allocation). */
  read(ino: number, offset: number, length: number, into?: Buffer): { data: Buffer; eof: boolean } {
    const rec = this.regInode(ino);
    if (offset < 0 || length < 0) throw new PrismError('EINVAL', 'negative offset or length');
    const end = Math.min(rec.size, offset + length);
    if (offset >= end) return { data: Buffer.alloc(0), eof: true };
    // Not zeroed up front: every byte is either copied or explicitly zeroed (holes, short blocks).
    const out = into && into.length >= end - offset ? into.subarray(0, end - offset) : Buffer.allocUnsafe(end - offset);
    for (let idx = Math.floor(offset / BLOCK_SIZE); idx * BLOCK_SIZE < end; idx++) {
      const bStart = idx * BLOCK_SIZE;
      const from = Math.max(offset, bStart) - bStart;
      const upto = Math.min(end - bStart, BLOCK_SIZE);
      this.copyBlock(ino, idx, from, upto, out, bStart + from - offset);
    }
    return { data: out, eof: end >= rec.size };
  }

  /**
   * `keepTimes`: leave mtime and ctime as they are (a client whose kernel stamps them itself and
   * sends them with SETATTR: FUSE's writeback cache).
   */
  write(ino: number, offset: number, data: Buffer, keepTimes = false): Attr {
    this.writable();
    const rec = this.regInode(ino);
    if (offset < 0) throw new PrismError('EINVAL', 'negative offset');
    const end = offset + data.length;
    if (end > MAX_FILE_SIZE) throw new PrismError('EFBIG', 'file too large');
    if (data.length === 0) return this.attr(ino, rec);
    this.checkQuota(ino, offset, end);
    const grows = end > rec.size;
    for (let idx = Math.floor(offset / BLOCK_SIZE); idx * BLOCK_SIZE < end; idx++) {
      const bStart = idx * BLOCK_SIZE;
      const from = Math.max(offset, bStart);
      const to = Math.min(end, bStart + BLOCK_SIZE);
      const chunk = data.subarray(from - offset, to - offset);
      if (chunk.length === BLOCK_SIZE) {
        this.dirty.drop(ino, idx);
        this.setBlock(ino, idx, chunk);
        continue;
      }
      const d = this.dirty.of(ino)?.get(idx) ?? this.dirty.add(ino, idx, this.storedBlock(ino, idx));
      this.dirty.write(ino, idx, d, from - bStart, chunk, this.readBlock, grows);
    }
    if (keepTimes) return this.attr(ino, end > rec.size ? this.update(ino, { size: end }) : this.inode(ino));
    const t = now();
    return this.attr(ino, this.update(ino, { size: Math.max(rec.size, end), mtime: t, ctime: t }));
  }

  private checkQuota(ino: number, offset: number, end: number): void {
    const quota = this.rec.quota;
    if (quota === undefined) return;
    let grow = 0;
    const m = this.dirty.of(ino);
    for (let idx = Math.floor(offset / BLOCK_SIZE); idx * BLOCK_SIZE < end; idx++) {
      if (m?.has(idx) || this.storedBlock(ino, idx)) continue;
      grow += Math.min(BLOCK_SIZE, end - idx * BLOCK_SIZE);
    }
    this.checkRoom(grow);
  }

  /** Replace one block's content (null or all zeros make a hole). */
  private setBlock(ino: number, idx: number, data: Buffer | null): void {
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    const layer = layerOf(ino);
    const key = blockKey(localOf(ino), idx);
    const old = this.tget(layer, key) as Buffer | undefined;
    const oldLen = old ? this.host.blocks.length(old) : 0;
    let newLen = 0;
    if (data && data.length > 0 && !isZero(data)) {
      const h = this.host.blocks.put(data);
      if (old && old.equals(h)) return;
      this.tput(layer, key, h);
      newLen = data.length;
    } else if (old) {
      this.tdel(layer, key);
    }
    if (newLen !== oldLen) {
      const rec = this.inode(ino);
      this.putInode(ino, { ...rec, bytes: (rec.bytes ?? 0) + newLen - oldLen });
      this.host.usage(this).bytes += newLen - oldLen;
    }
  }

  /**
   * Set whole blocks firstIndex.. of a regular file to content already in the block index (import):
   * no re-hashing. A null hash makes a hole; lengths[i] is the block's length (BLOCK_SIZE but for the
   * last block of a file). The size grows to cover the blocks; accounting as setBlock.
   */
  writeBlocks(ino: number, firstIndex: number, hashes: Array<Buffer | null>, lengths: number[]): void {
    this.writable();
    const rec = this.regInode(ino);
    if (hashes.length === 0) return;
    const end = (firstIndex + hashes.length - 1) * BLOCK_SIZE + lengths[hashes.length - 1];
    if (end > MAX_FILE_SIZE) throw new PrismError('EFBIG', 'file too large');
    this.checkQuota(ino, firstIndex * BLOCK_SIZE, end);
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    const layer = layerOf(ino);
    const local = localOf(ino);
    let delta = 0;
    for (let i = 0; i < hashes.length; i++) {
      const idx = firstIndex + i;
      this.dirty.drop(ino, idx);
      const key = blockKey(local, idx);
      const old = this.tget(layer, key) as Buffer | undefined;
      const h = hashes[i];
      if (h) {
        if (old && old.equals(h)) continue;
        this.tput(layer, key, h);
        delta += lengths[i];
      } else if (old) {
        this.tdel(layer, key);
      }
      if (old) delta -= this.host.blocks.length(old);
    }
    const t = now();
    this.putInode(ino, { ...rec, size: Math.max(rec.size, end), bytes: (rec.bytes ?? 0) + delta, mtime: t, ctime: t });
    this.host.usage(this).bytes += delta;
  }

  /**
   * Make blocks [first, first + count) of a regular file hold `blocks` (indexes relative to first,
   * content already in the block index) and holes elsewhere: copy_file_range's shared path. Work is
   * bounded by the blocks given and the blocks the destination has there, not by count.
   */
  private shareBlocks(ino: number, first: number, count: number, blocks: Array<[number, Buffer]>): void {
    const rec = this.regInode(ino);
    const quota = this.rec.quota;
    if (quota !== undefined) {
      let grow = 0;
      const m = this.dirty.of(ino);
      for (const [i, h] of blocks) if (!m?.has(first + i) && !this.storedBlock(ino, first + i)) grow += this.host.blocks.length(h);
      this.checkRoom(grow);
    }
    this.host.usage(this); // materialize before the change (compose leaves it uncounted)
    const given = new Set(blocks.map(([i]) => first + i));
    this.dirty.dropRange(ino, first, first + count);
    const layer = layerOf(ino);
    const local = localOf(ino);
    let delta = 0;
    for (const [idx, old] of this.storedBlocks(ino, first, first + count)) {
      if (given.has(idx)) continue;
      this.tdel(layer, blockKey(local, idx));
      delta -= this.host.blocks.length(old);
    }
    for (const [i, h] of blocks) {
      const key = blockKey(local, first + i);
      const old = this.tget(layer, key) as Buffer | undefined;
      if (old && old.equals(h)) continue;
      this.tput(layer, key, h);
      delta += this.host.blocks.length(h) - (old ? this.host.blocks.length(old) : 0);
    }
    const t = now();
    this.putInode(ino, { ...this.inode(ino), bytes: (rec.bytes ?? 0) + delta, mtime: t, ctime: t });
    this.host.usage(this).bytes += delta;
  }

  /**
   * Hash and store a file's partially written blocks (at most `max` of them), but those `keep` says
   * stay buffered. Returns how many were stored.
   */
  flushFile(ino: number, keep?: KeepBlock, max = Infinity): number {
    const m = this.dirty.of(ino);
    if (!m) return 0;
    const size = this.inode(ino).size;
    let n = 0;
    for (const [idx, d] of [...m].sort((x, y) => x[0] - y[0])) {
      if (n >= max) break;
      if (keep?.(d)) continue;
      const len = Math.max(0, Math.min(BLOCK_SIZE, size - idx * BLOCK_SIZE));
      this.setBlock(ino, idx, len > 0 ? contentOf(d, len, SCRATCH, this.readBlock) : null);
      // Let go of each block once stored: if a later one fails (a full disk), the rest stay held
      // and no buffer still held goes back to the pool.
      this.dirty.drop(ino, idx);
      n++;
    }
    return n;
  }

  flush(keep?: KeepBlock): void {
    this.flushSome(Infinity, keep);
  }

  /** Hash and store up to `max` buffered blocks (a slice of a long flush; `keep` as flushFile); returns how many. */
  flushSome(max: number, keep?: KeepBlock): number {
    let n = 0;
    for (const ino of [...this.dirty.inodes()]) {
      if (n >= max) break;
      n += this.flushFile(ino, keep, max - n);
    }
    return n;
  }

  /** Whether every buffered block could be logged (none is new or grew its file): Store.logOnly. */
  onlyLoggable(): boolean {
    return this.dirty.allLoggable;
  }

  /** Blocks a COMMIT could log that have never been (counted up to `limit`). */
  newlyLoggable(limit: number): number {
    let n = 0;
    for (const [, , d] of this.dirty.unlogged()) if (!d.logged && ++n >= limit) return n;
    return n;
  }

  /**
   * The pages written over stored blocks since they were last logged, as intent-log records (a
   * COMMIT logs them instead of storing their blocks), and what marks them logged once appended.
   * A page is cut at the end of the file (such a block never grew it: every byte written is below).
   */
  unloggedPages(): { records: PageRecord[]; logged(): void } {
    const records: PageRecord[] = [];
    const blocks: DirtyBlock[] = [];
    for (const [ino, idx, d] of this.dirty.unlogged()) {
      const size = this.inode(ino).size;
      for (const p of d.unlogged!) {
        const offset = idx * BLOCK_SIZE + p * PAGE_SIZE;
        const len = Math.min(PAGE_SIZE, size - offset);
        if (len > 0) records.push({ volume: this.rec.id, ino, offset, data: d.pages![p]!.subarray(0, len) });
      }
      blocks.push(d);
    }
    return { records, logged: () => this.dirty.loggedAll(blocks) };
  }

  get hasDirtyData(): boolean { return this.dirty.size > 0; }

  /** Let go of every buffered block, unstored (the volume is being removed). */
  discardBuffered(): void {
    for (const ino of [...this.dirty.inodes()]) this.dirty.dropFile(ino);
  }

  /** Buffered blocks (what a flush of everything would hash). */
  get dirtyBlockCount(): number { return this.dirty.blockCount; }

  protected truncate(ino: number, size: number): void {
    this.writable();
    const rec = this.regInode(ino);
    if (size < 0) throw new PrismError('EINVAL', 'negative size');
    if (size > MAX_FILE_SIZE) throw new PrismError('EFBIG', 'file too large');
    if (size > rec.size) {
      this.update(ino, { size });
      return;
    }
    const keep = Math.ceil(size / BLOCK_SIZE);
    this.dropBlocks(ino, keep, Infinity);
    if (size % BLOCK_SIZE !== 0) {
      const idx = keep - 1;
      const cut = size - idx * BLOCK_SIZE;
      const d = this.dirty.of(ino)?.get(idx);
      if (d) {
        this.dirty.densify(d, this.readBlock);
        d.len = Math.min(d.len, cut);
      }
      else {
        const h = this.storedBlock(ino, idx);
        if (h) {
          const data = this.host.blocks.read(h);
          if (data.length > cut) this.setBlock(ino, idx, data.subarray(0, cut));
        }
      }
    }
    this.update(ino, { size });
  }

  /**
   * Stored blocks of a file with first <= index < last, in order: found by walking the keys that
   * exist, so the work is bounded by what is stored, never by the range a request names.
   */
  private storedBlocks(ino: number, first: number, last: number): Array<[number, Buffer]> {
    const local = localOf(ino);
    const hi = last === Infinity || last > MAX_BLOCK_INDEX ? kindRange(local, Kind.Block)[1] : blockKey(local, last);
    const out: Array<[number, Buffer]> = [];
    this.host.tree.each(this.root(layerOf(ino)), blockKey(local, first), hi, (k, v) => { out.push([blockIndexOfKey(k), v as Buffer]); });
    return out;
  }

  /** Make blocks [first, last) holes: drops the dirty and stored ones there are, nothing else. */
  private dropBlocks(ino: number, first: number, last: number): void {
    this.dirty.dropRange(ino, first, last);
    for (const [idx] of this.storedBlocks(ino, first, last)) this.setBlock(ino, idx, null);
  }

  /** The first block index >= from (below limit, else limit) that holds data, or that is a hole. */
  private nextBlock(ino: number, from: number, want: 'data' | 'hole', limit: number): number {
    const layer = layerOf(ino);
    const local = localOf(ino);
    const dirty = this.dirty.of(ino);
    const [, hi] = kindRange(local, Kind.Block);
    if (want === 'data') {
      let found = limit;
      this.host.tree.each(this.root(layer), blockKey(local, from), hi, (k) => { found = blockIndexOfKey(k); return false; });
      if (dirty) for (const idx of dirty.keys()) if (idx >= from && idx < found) found = idx;
      return found;
    }
    // A hole: walk stored blocks from `from` while they are consecutive (or covered by dirty ones).
    let idx = from;
    for (;;) {
      while (dirty?.has(idx)) idx++;
      let moved = false;
      this.host.tree.each(this.root(layer), blockKey(local, idx), hi, (k) => {
        const at = blockIndexOfKey(k);
        if (at !== idx) return false;
        idx++;
        moved = true;
        while (dirty?.has(idx)) idx++;
        return idx < limit;
      });
      if (!moved || idx >= limit) return Math.min(idx, limit);
    }
  }

  /** lseek(SEEK_DATA / SEEK_HOLE) at block granularity; the end of the file is a hole. */
  seek(ino: number, offset: number, what: 'data' | 'hole'): number {
    const rec = this.regInode(ino);
    if (offset < 0) throw new PrismError('EINVAL', 'negative offset');
    if (offset >= rec.size) throw new PrismError('ENXIO', 'offset at or beyond the end of the file');
    const blocks = Math.ceil(rec.size / BLOCK_SIZE);
    const idx = this.nextBlock(ino, Math.floor(offset / BLOCK_SIZE), what, blocks);
    if (idx >= blocks) {
      if (what === 'hole') return rec.size;
      throw new PrismError('ENXIO', 'no data after this offset');
    }
    return Math.min(rec.size, Math.max(offset, idx * BLOCK_SIZE));
  }

  /**
   * fallocate(2). Space is not reserved ahead in a deduplicating store: mode 0 only extends the
   * size; PUNCH_HOLE and ZERO_RANGE turn whole blocks into holes and zero the partial ends.
   */
  fallocate(ino: number, offset: number, length: number, mode: { keepSize: boolean; punchHole: boolean; zeroRange: boolean }): Attr {
    this.writable();
    const rec = this.regInode(ino);
    if (offset < 0 || length <= 0) throw new PrismError('EINVAL', 'offset must be >= 0 and length > 0');
    const end = offset + length;
    if (end > MAX_FILE_SIZE) throw new PrismError('EFBIG', 'file too large');
    if (mode.punchHole && !mode.keepSize) throw new PrismError('ENOTSUP', 'PUNCH_HOLE needs KEEP_SIZE');
    if (mode.punchHole || mode.zeroRange) {
      const zeroTo = Math.min(end, rec.size);
      if (zeroTo > offset) this.zero(ino, offset, zeroTo);
    }
    const t = now();
    const size = !mode.keepSize && end > rec.size ? end : rec.size;
    const changed = size !== rec.size || mode.punchHole || mode.zeroRange;
    return this.attr(ino, changed ? this.update(ino, { size, mtime: t, ctime: t }) : this.inode(ino));
  }

  /** Make [from, to) read as zeros: whole blocks become holes, partial ones are overwritten. */
  private zero(ino: number, from: number, to: number): void {
    const first = Math.ceil(from / BLOCK_SIZE);
    const last = Math.floor(to / BLOCK_SIZE); // blocks first..last-1 are wholly inside
    const size = this.inode(ino).size;
    const overwrite = (a: number, b: number) => { if (b > a) this.write(ino, a, Buffer.alloc(b - a)); };
    if (first > last) { overwrite(from, to); return; }
    overwrite(from, first * BLOCK_SIZE);
    this.dropBlocks(ino, first, last);
    overwrite(last * BLOCK_SIZE, to);
    this.update(ino, { size }); // the partial writes must not have grown it
  }

  /**
   * copy_file_range(2): whole blocks that line up are shared by reference (no data copied, no new
   * space); unaligned edges are copied. Returns the bytes copied (less than asked at source EOF).
   */
  copyRange(src: number, srcOff: number, dst: number, dstOff: number, length: number): { copied: number; attr: Attr } {
    this.writable();
    const s = this.regInode(src);
    this.regInode(dst);
    if (srcOff < 0 || dstOff < 0 || length < 0) throw new PrismError('EINVAL', 'negative offset or length');
    const aligned = srcOff % BLOCK_SIZE === dstOff % BLOCK_SIZE;
    // Bounded work per call (callers loop on a short count, as with copy_file_range itself).
    const n = Math.max(0, Math.min(length, s.size - srcOff, aligned ? COPY_CHUNK_SHARED : COPY_CHUNK_BYTES));
    if (dstOff + n > MAX_FILE_SIZE) throw new PrismError('EFBIG', 'file too large');
    if (src === dst && srcOff < dstOff + n && dstOff < srcOff + n) throw new PrismError('EINVAL', 'overlapping ranges in one file');
    if (n === 0) return { copied: 0, attr: this.attr(dst) };
    this.flushFile(src);
    const copyBytes = (from: number, to: number, len: number) => {
      for (let done = 0; done < len; done += BLOCK_SIZE) {
        // A fresh buffer from read (no `into`): write copies it, no second copy needed.
        this.write(dst, to + done, this.read(src, from + done, Math.min(BLOCK_SIZE, len - done)).data);
      }
    };
    const head = aligned ? Math.min(n, (BLOCK_SIZE - (srcOff % BLOCK_SIZE)) % BLOCK_SIZE) : n;
    const whole = aligned ? Math.floor((n - head) / BLOCK_SIZE) : 0;
    copyBytes(srcOff, dstOff, head);
    if (whole > 0) {
      const firstSrc = (srcOff + head) / BLOCK_SIZE;
      this.shareBlocks(dst, (dstOff + head) / BLOCK_SIZE, whole, this.storedBlocks(src, firstSrc, firstSrc + whole).map(([i, h]) => [i - firstSrc, h]));
    }
    const tail = head + whole * BLOCK_SIZE;
    // A short stored block (left by a truncate) or a trailing hole does not carry the size along.
    if (this.inode(dst).size < dstOff + tail) this.update(dst, { size: dstOff + tail });
    copyBytes(srcOff + tail, dstOff + tail, n - tail);
    return { copied: n, attr: this.attr(dst) };
  }

  /** Block hashes of a file in order, with their indexes (for diff, export and scan). */
  blockList(ino: number): Array<[number, Buffer]> {
    this.flushFile(ino);
    const local = localOf(ino);
    const [lo, hi] = kindRange(local, Kind.Block);
    const out: Array<[number, Buffer]> = [];
    this.host.tree.each(this.root(layerOf(ino)), lo, hi, (k, v) => { out.push([blockIndexOfKey(k), v as Buffer]); });
    return out;
  }
}

/** Says which buffered blocks a flush leaves buffered (true: keep it). */
export type KeepBlock = (d: DirtyBlock) => boolean;

/** Most bytes one copyRange call handles: shared whole blocks are cheap, byte copies are not. */
const COPY_CHUNK_SHARED = 1 << 30;
const COPY_CHUNK_BYTES = 8 << 20;
/** Block indexes fit the 6 bytes of a block key. */
const MAX_BLOCK_INDEX = 2 ** 48 - 1;
const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);
/** Where flushFile assembles a block written over a stored one (setBlock copies what it keeps). */
const SCRATCH = Buffer.allocUnsafeSlow(BLOCK_SIZE);

function isZero(b: Buffer): boolean {
  return b.equals(ZERO_BLOCK.subarray(0, b.length));
}
