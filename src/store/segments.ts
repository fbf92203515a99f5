// Content blocks are appended to segment files, never overwritten in place; space held by freed blocks
// comes back when gc copies a segment's live blocks forward and deletes the segment.
//
// Record: magic u32 | data length u32 | crc32(data) u32 | reserved u32 | sha256 (32 bytes) | data.
// The crc is checked on every read; the hash by fsck. Either mismatch reads as EIO, never wrong data.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { PrismError } from '../errors.js';
import { ioError, syncPath, syncPathNow } from './durable-files.js';
import { nativeAvailable } from '../native/ivshmem.js';
import { map, unmap } from '../native/memory.js';

export const RECORD_MAGIC = 0x50525342; // "PRSB"
export const HEADER_SIZE = 48;
export const SEGMENT_MAX = 256 * 1024 * 1024;

export interface Location { s: number; o: number }

const STAGE_SIZE = 4 * 1024 * 1024;
/** How much the active segment grows before it is mapped again (mapped). */
const REMAP_STEP = 32 * 1024 * 1024;

export class Segments {
  private fds = new Map<number, number>();
  private maps = new Map<number, Buffer>();
  private verified = new Set<number>();
  private readonly canMap = nativeAvailable().ok;
  private unsynced = new Set<number>();
  private header = Buffer.alloc(HEADER_SIZE);
  /** Small records are staged and written together: one syscall per few MiB, not per block. */
  private stage = Buffer.allocUnsafe(STAGE_SIZE);
  private staged = 0;

  /**
   * readOnly: a reader beside the process that owns the store (Store.openReadOnly). It never
   * truncates (the bytes past the committed end may be the owner's appends) and never writes.
   */
  constructor(private readonly dir: string, public active: number, public end: number, private readonly readOnly = false) {
    if (readOnly) return;
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 }); // private, as the whole store (store.ts)
    // Bytes past the committed end belong to no committed block (a crash between append and commit).
    const p = this.file(active);
    if (fs.existsSync(p) && fs.statSync(p).size > end) fs.truncateSync(p, end);
  }

  private writable(): void {
    if (this.readOnly) throw new PrismError('EROFS', 'the store is open read-only');
  }

  file(seg: number): string {
    return path.join(this.dir, `${String(seg).padStart(8, '0')}.seg`);
  }

  list(): number[] {
    return fs.readdirSync(this.dir).filter((f) => /^\d{8}\.seg$/.test(f)).map((f) => Number(f.slice(0, 8))).sort((a, b) => a - b);
  }

  size(seg: number): number {
    try { return fs.statSync(this.file(seg)).size; } catch { return 0; }
  }

  /** A segment file was made since the directory was last synced (its name must survive a power loss too). */
  private dirUnsynced = false;

  private fd(seg: number): number {
    let fd = this.fds.get(seg);
    if (fd === undefined) {
      if (seg === this.active && !this.readOnly && !fs.existsSync(this.file(seg))) this.dirUnsynced = true;
      fd = fs.openSync(this.file(seg), seg === this.active && !this.readOnly ? fs.constants.O_RDWR | fs.constants.O_CREAT : fs.constants.O_RDONLY, 0o600);
      this.fds.set(seg, fd);
    }
    return fd;
  }

  append(hash: Buffer, data: Buffer): Location {
    this.writable();
    const size = HEADER_SIZE + data.length;
    if (this.end + size > SEGMENT_MAX && this.end > 0) this.roll();
    if (this.staged + size > STAGE_SIZE) this.flushStage();
    const at = this.end;
    if (size > STAGE_SIZE) {
      this.writeAt([this.headerFor(hash, data, this.header, 0), data], at);
    } else {
      this.headerFor(hash, data, this.stage, this.staged);
      data.copy(this.stage, this.staged + HEADER_SIZE);
      this.staged += size;
    }
    this.end += size;
    this.unsynced.add(this.active);
    return { s: this.active, o: at + HEADER_SIZE };
  }

  private headerFor(hash: Buffer, data: Buffer, into: Buffer, off: number): Buffer {
    into.writeUInt32LE(RECORD_MAGIC, off);
    into.writeUInt32LE(data.length, off + 4);
    into.writeUInt32LE(zlib.crc32(data), off + 8);
    into.writeUInt32LE(0, off + 12);
    hash.copy(into, off + 16);
    return into.subarray(off, off + HEADER_SIZE);
  }

  private writeAt(bufs: Buffer[], at: number): void {
    const want = bufs.reduce((n, b) => n + b.length, 0);
    let written: number;
    try {
      written = fs.writevSync(this.fd(this.active), bufs, at);
    } catch (e) {
      throw ioError(e, 'append to segment');
    }
    if (written !== want) throw new PrismError('ENOSPC', 'short write to segment');
  }

  /** Write staged records to the active segment file. */
  private flushStage(): void {
    if (this.staged === 0) return;
    const at = this.end - this.staged;
    const n = this.staged;
    this.staged = 0;
    this.writeAt([this.stage.subarray(0, n)], at);
  }

  /**
   * A segment mapped read-only (no syscall per read), when the native addon is there. A mapped segment
   * is never truncated (only the active one is, on open, before any mapping; gc unlinks whole files),
   * so the mapping stays valid.
   */
  private mapped(seg: number, end: number): Buffer | undefined {
    if (!this.canMap) return undefined;
    let m = this.maps.get(seg);
    if (!m || m.length < end) {
      // The active segment grows: map it again, larger. The old mapping is left to the garbage
      // collector (its finalizer unmaps), because cached blocks may still be views of it, and until
      // then the pages both map count twice in the process's RSS. So it is mapped again only once
      // it has grown by REMAP_STEP: the newest records in between are read with pread.
      if (m && seg === this.active && this.end - m.length < REMAP_STEP) return undefined;
      try {
        m = Buffer.from(map(this.file(seg), { readonly: true }));
      } catch {
        return undefined;
      }
      if (m.length < end) return undefined;
      this.maps.set(seg, m);
    }
    return m;
  }

  /**
   * Read a block's data, checking the record around it. The result may be a read-only view of the
   * segment file: never write into it.
   */
  read(loc: Location, length: number, hash: Buffer): Buffer {
    if (loc.s === this.active && loc.o + length > this.end - this.staged) this.flushStage();
    const start = loc.o - HEADER_SIZE;
    let buf: Buffer;
    let n: number;
    const m = this.mapped(loc.s, loc.o + length);
    if (m) {
      buf = m.subarray(start, start + HEADER_SIZE + length);
      n = start >= 0 ? buf.length : 0;
    } else {
      buf = Buffer.allocUnsafe(HEADER_SIZE + length);
      try {
        n = fs.readSync(this.fd(loc.s), buf, 0, buf.length, start);
      } catch (e) {
        throw ioError(e, `read segment ${loc.s}`);
      }
    }
    const data = buf.subarray(HEADER_SIZE);
    // A mapped record already checked is not checked again (crc32 dominated reads); fsck rechecks all.
    const key = m ? start + loc.s * SEGMENT_MAX : -1;
    if (m && this.verified.has(key) && n === buf.length) return data;
    if (n !== buf.length || buf.readUInt32LE(0) !== RECORD_MAGIC || buf.readUInt32LE(4) !== length
      || !buf.subarray(16, 48).equals(hash) || buf.readUInt32LE(8) !== zlib.crc32(data)) {
      throw new PrismError('EIO', `block ${hash.toString('hex').slice(0, 16)} is corrupt (segment ${loc.s} offset ${loc.o})`);
    }
    if (m) {
      if (this.verified.size >= 1 << 20) this.verified.clear();
      this.verified.add(key);
    }
    return data;
  }

  /** Make every append so far durable (before the metadata commit that references it). */
  sync(): void {
    this.syncNow(this.cut());
  }

  /** fdatasync calls made so far (by sync, syncNow and syncAsync). */
  dataSyncs = 0;

  /**
   * Write the staged records and hand over the segments appended to since the last cut: a later
   * fdatasync of each covers every record written before this returned.
   */
  cut(): number[] {
    this.flushStage();
    const segs = [...this.unsynced];
    this.unsynced.clear();
    return segs;
  }

  /** fdatasync the segments, blocking. */
  syncNow(segs: Iterable<number>): void {
    for (const s of segs) {
      this.dataSyncs++;
      try { fs.fdatasyncSync(this.fd(s)); } catch (e) { throw ioError(e, `sync segment ${s}`); }
    }
    if (this.dirUnsynced) {
      try { syncPathNow(this.dir); } catch (e) { throw ioError(e, 'sync the segments directory'); }
      this.dirUnsynced = false;
    }
  }

  /**
   * fdatasync the segments on libuv's thread pool, off the event loop. Each file is opened anew, so a
   * segment closed meanwhile (roll, close) cannot turn the sync into one of a reused descriptor.
   */
  async syncAsync(segs: Iterable<number>): Promise<void> {
    await Promise.all([...segs].map(async (s) => {
      this.dataSyncs++;
      try { await syncPath(this.file(s), true); } catch (e) { throw ioError(e, `sync segment ${s}`); }
    }));
    if (this.dirUnsynced) {
      // Cleared before: a file made while this sync runs sets it again for the next one.
      this.dirUnsynced = false;
      try {
        await syncPath(this.dir, false);
      } catch (e) {
        this.dirUnsynced = true;
        throw ioError(e, 'sync the segments directory');
      }
    }
  }

  /** A commit that took segments from cut() failed: they still need their fdatasync. */
  unsyncedAgain(segs: Iterable<number>): void {
    for (const s of segs) this.unsynced.add(s);
  }

  private roll(): void {
    this.writable();
    this.sync(); // also writes the stage
    const fd = this.fds.get(this.active);
    if (fd !== undefined) { fs.closeSync(fd); this.fds.delete(this.active); }
    this.active += 1;
    this.end = 0;
    if (fs.existsSync(this.file(this.active))) fs.truncateSync(this.file(this.active), 0);
  }

  /** Start a new active segment (gc compacts into a fresh one). */
  rollNow(): void { if (this.end > 0) this.roll(); }

  remove(seg: number): void {
    this.writable();
    this.unmapSegment(seg);
    const fd = this.fds.get(seg);
    if (fd !== undefined) { fs.closeSync(fd); this.fds.delete(seg); }
    fs.rmSync(this.file(seg), { force: true });
  }

  private unmapSegment(seg: number): void {
    const m = this.maps.get(seg);
    if (m) { unmap(m.buffer as ArrayBuffer); this.maps.delete(seg); }
  }

  close(): void {
    this.flushStage();
    for (const seg of [...this.maps.keys()]) this.unmapSegment(seg);
    for (const fd of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
  }
}
