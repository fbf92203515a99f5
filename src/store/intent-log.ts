// The intent log: what makes a COMMIT of small overwrites durable without hashing and storing their
// 64 KiB blocks (as ZFS's intent log does for synchronous writes). A COMMIT appends the 4 KiB pages
// written over stored blocks to the log and syncs it; the blocks stay buffered and are stored later,
// all of them in one commit (a checkpoint) that also records in LMDB that the log files before the
// current one are spent. Opening the store replays what is not spent. See docs/durability.md.
//
// Files: log/<generation, 16 hex digits>, each a sequence of batches, one per COMMIT:
//   magic u32 "PRLG" | version u8 | 3 reserved | record count u32 | payload length u32 | crc32 u32
//   (of the payload) | payload
// Version 2 records (docs/store-format.md): kind u8 | 3 reserved | volume id u32 | inode u64, then
//   kind 1, a page: file offset u64 | length u32 | data
//   kind 2, an inode's times: atime, mtime, ctime, each seconds i64 | nanoseconds u32
// Version 1 (read only) had pages alone: volume id u32 | inode u64 | file offset u64 | length u32 | data.
// A batch is whole or not at all: replay stops at the first one that is short or fails its crc (a
// COMMIT cut off by the crash, never acknowledged).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { PrismError } from '../errors.js';
import type { Time } from '../posix/types.js';
import { ioError, syncPath } from './durable-files.js';

export const LOG_MAGIC = 0x474c5250; // "PRLG" little-endian
export const LOG_VERSION = 2;
/** A log file's name: its generation in 16 hex digits. */
const FILE_NAME = /^[0-9a-f]{16}$/;
const BATCH_HEADER = 20;
/** Kind, volume and inode; then a page's offset and length, or three times. */
const RECORD_HEAD = 16;
const PAGE_HEAD = RECORD_HEAD + 12;
const TIMES_SIZE = RECORD_HEAD + 36;
const V1_PAGE_HEAD = 24;
const KIND_PAGE = 1;
const KIND_TIMES = 2;

/** One page (or less, at the end of a file) written over a stored block. */
export interface PageRecord { volume: number; ino: number; offset: number; data: Buffer }
/**
 * An inode's times, changed alone since the last commit: a COMMIT that writes nothing to LMDB logs
 * them (Store.logOnly). Replay takes them only over older ones (an earlier ctime).
 */
export interface TimesRecord { volume: number; ino: number; atime: Time; mtime: Time; ctime: Time }
export type LogRecord = PageRecord | TimesRecord;

export function isPage(r: LogRecord): r is PageRecord {
  return 'data' in r;
}

export class IntentLog {
  private fd: number | null = null;
  /** Bytes appended to the live file (0: it may not exist yet). */
  private liveBytes = 0;
  /** Files before this generation were deleted (retire). */
  private retiredBelow = -1;
  /** Directories whose new entries (the live file, log/ itself) the next sync makes durable. */
  private dirsToSync: string[] = [];

  /**
   * `spentBelow` (LMDB's `logGen`): files of older generations are spent. `live` is the generation
   * appended to; it starts past every file found, so replayed files are never appended to.
   */
  private constructor(private readonly dir: string, public spentBelow: number, private live: number, private readonly found: number[]) {}

  static open(storeDir: string, spentBelow: number): IntentLog {
    const dir = path.join(storeDir, 'log');
    let found: number[] = [];
    try {
      found = fs.readdirSync(dir).filter((f) => FILE_NAME.test(f)).map((f) => parseInt(f, 16)).sort((a, b) => a - b);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(e, 'read the intent log directory');
    }
    const last = found.length ? found[found.length - 1] : -1;
    return new IntentLog(dir, spentBelow, Math.max(spentBelow, last + 1), found);
  }

  /** Records of the files not spent, in order, batch by batch; a torn batch ends its file. */
  *unspent(): Generator<LogRecord[]> {
    for (const gen of this.found) {
      if (gen < this.spentBelow) continue;
      let buf: Buffer;
      try { buf = fs.readFileSync(this.file(gen)); } catch (e) { throw ioError(e, `read intent log ${gen}`); }
      for (let at = 0; ;) {
        const batch = decodeBatch(buf, at);
        // Short or torn: a batch never acknowledged (its COMMIT failed or was cut off); a later file
        // may follow one whose append failed.
        if (!batch) break;
        yield batch.records;
        at = batch.end;
      }
    }
  }

  /**
   * Append one batch (synchronous write: sync() later covers it). Throws ENOSPC or EIO, having
   * written nothing that replay would take (a short batch fails its length or crc).
   */
  append(records: LogRecord[]): void {
    if (records.length === 0) return;
    const buf = encodeBatch(records);
    try {
      if (this.fd === null) {
        if (fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 }) !== undefined) this.dirsToSync.push(path.dirname(this.dir));
        this.fd = fs.openSync(this.file(this.live), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND, 0o600);
        this.dirsToSync.push(this.dir);
      }
      let done = 0;
      while (done < buf.length) done += fs.writeSync(this.fd, buf, done, buf.length - done);
    } catch (e) {
      // A partial batch at the end must not be followed by whole ones: start the next file.
      this.closeFile();
      this.live++;
      this.liveBytes = 0;
      throw ioError(e, 'append to the intent log');
    }
    this.liveBytes += buf.length;
  }

  /**
   * fdatasync the live file on libuv's thread pool, and fsync the directories a new file was made
   * in: without that, a file's synced data may come back after a power loss with no name to reach
   * it. The descriptor stays open until the sync is done, even if a rotation lets go of it meanwhile
   * (closeFile), so the number can never be another file's.
   */
  async sync(): Promise<void> {
    const fd = this.fd;
    if (this.liveBytes === 0 || fd === null) return;
    const dirs = this.dirsToSync.splice(0);
    this.syncing++;
    try {
      await new Promise<void>((resolve, reject) => fs.fdatasync(fd, (e) => (e ? reject(e) : resolve())));
      for (const d of dirs) await syncPath(d, false);
    } catch (e) {
      this.dirsToSync.push(...dirs);
      throw ioError(e, 'sync the intent log');
    } finally {
      if (--this.syncing === 0) for (const f of this.toClose.splice(0)) closeQuietly(f);
    }
  }
  /** Syncs in progress, and descriptors let go of meanwhile: closed when the last one ends. */
  private syncing = 0;
  private readonly toClose: number[] = [];

  /**
   * A checkpoint: every logged block is about to be stored in the commit being cut. Later batches go
   * to a new file, and that commit records its generation as the first not spent.
   */
  rotate(): void {
    if (this.liveBytes > 0) {
      this.closeFile();
      this.live++;
      this.liveBytes = 0;
    }
    this.spentBelow = this.live;
  }

  /** A commit that recorded `spentBelow` is durable: delete the files before it. */
  retire(spentBelow: number): void {
    if (spentBelow <= this.retiredBelow) return;
    this.retiredBelow = spentBelow;
    let names: string[];
    try { names = fs.readdirSync(this.dir); } catch { return; }
    for (const f of names) {
      if (FILE_NAME.test(f) && parseInt(f, 16) < spentBelow) {
        try { fs.unlinkSync(path.join(this.dir, f)); } catch { /* deleted by a retire before; the next one tries again */ }
      }
    }
  }

  close(): void {
    this.closeFile();
  }

  private closeFile(): void {
    if (this.fd === null) return;
    if (this.syncing > 0) this.toClose.push(this.fd);
    else closeQuietly(this.fd);
    this.fd = null;
  }

  private file(gen: number): string {
    return path.join(this.dir, gen.toString(16).padStart(16, '0'));
  }
}

function closeQuietly(fd: number): void {
  try { fs.closeSync(fd); } catch { /* already gone */ }
}

export function encodeBatch(records: LogRecord[]): Buffer {
  let size = BATCH_HEADER;
  for (const r of records) size += isPage(r) ? PAGE_HEAD + r.data.length : TIMES_SIZE;
  const buf = Buffer.allocUnsafe(size);
  let at = BATCH_HEADER;
  for (const r of records) {
    buf.writeUInt32LE(isPage(r) ? KIND_PAGE : KIND_TIMES, at); // the kind byte, then 3 reserved zero bytes
    buf.writeUInt32LE(r.volume, at + 4);
    buf.writeBigUInt64LE(BigInt(r.ino), at + 8);
    if (isPage(r)) {
      buf.writeBigUInt64LE(BigInt(r.offset), at + RECORD_HEAD);
      buf.writeUInt32LE(r.data.length, at + RECORD_HEAD + 8);
      r.data.copy(buf, at + PAGE_HEAD);
      at += PAGE_HEAD + r.data.length;
    } else {
      [r.atime, r.mtime, r.ctime].forEach(([sec, ns], i) => {
        buf.writeBigInt64LE(BigInt(sec), at + RECORD_HEAD + i * 12);
        buf.writeUInt32LE(ns, at + RECORD_HEAD + i * 12 + 8);
      });
      at += TIMES_SIZE;
    }
  }
  buf.writeUInt32LE(LOG_MAGIC, 0);
  buf.writeUInt32LE(LOG_VERSION, 4); // version byte, then 3 reserved zero bytes
  buf.writeUInt32LE(records.length, 8);
  buf.writeUInt32LE(size - BATCH_HEADER, 12);
  buf.writeUInt32LE(zlib.crc32(buf.subarray(BATCH_HEADER)), 16);
  return buf;
}

/** The batch at `at`, or undefined if none whole is there (the end, or a torn or foreign one). */
export function decodeBatch(buf: Buffer, at: number): { records: LogRecord[]; end: number } | undefined {
  if (at + BATCH_HEADER > buf.length || buf.readUInt32LE(at) !== LOG_MAGIC) return undefined;
  const version = buf.readUInt8(at + 4);
  if (version !== LOG_VERSION && version !== 1) {
    throw new PrismError('EINVAL', `intent log version ${version} is not supported (this is version ${LOG_VERSION})`);
  }
  const count = buf.readUInt32LE(at + 8);
  const len = buf.readUInt32LE(at + 12);
  const end = at + BATCH_HEADER + len;
  if (end > buf.length) return undefined;
  const payload = buf.subarray(at + BATCH_HEADER, end);
  if (zlib.crc32(payload) !== buf.readUInt32LE(at + 16)) return undefined;
  const records: LogRecord[] = [];
  for (let p = 0; records.length < count;) {
    const r = version === 1 ? decodeV1Page(payload, p) : decodeRecord(payload, p);
    if (!r) return undefined;
    records.push(r.record);
    p = r.end;
  }
  return { records, end };
}

/** The version-2 record at `p` of a batch's payload, and where the next begins (undefined: malformed). */
function decodeRecord(payload: Buffer, p: number): { record: LogRecord; end: number } | undefined {
  if (p + RECORD_HEAD > payload.length) return undefined;
  const kind = payload.readUInt8(p);
  const volume = payload.readUInt32LE(p + 4);
  const ino = Number(payload.readBigUInt64LE(p + 8));
  if (kind === KIND_PAGE) {
    if (p + PAGE_HEAD > payload.length) return undefined;
    const n = payload.readUInt32LE(p + RECORD_HEAD + 8);
    if (p + PAGE_HEAD + n > payload.length) return undefined;
    const offset = Number(payload.readBigUInt64LE(p + RECORD_HEAD));
    return { record: { volume, ino, offset, data: payload.subarray(p + PAGE_HEAD, p + PAGE_HEAD + n) }, end: p + PAGE_HEAD + n };
  }
  if (kind === KIND_TIMES) {
    if (p + TIMES_SIZE > payload.length) return undefined;
    const time = (i: number): Time => [Number(payload.readBigInt64LE(p + RECORD_HEAD + i * 12)), payload.readUInt32LE(p + RECORD_HEAD + i * 12 + 8)];
    return { record: { volume, ino, atime: time(0), mtime: time(1), ctime: time(2) }, end: p + TIMES_SIZE };
  }
  return undefined;
}

/** A version-1 record (a page; stores of format 2 wrote them). */
function decodeV1Page(payload: Buffer, p: number): { record: LogRecord; end: number } | undefined {
  if (p + V1_PAGE_HEAD > payload.length) return undefined;
  const n = payload.readUInt32LE(p + 20);
  if (p + V1_PAGE_HEAD + n > payload.length) return undefined;
  return {
    record: {
      volume: payload.readUInt32LE(p),
      ino: Number(payload.readBigUInt64LE(p + 4)),
      offset: Number(payload.readBigUInt64LE(p + 12)),
      data: payload.subarray(p + V1_PAGE_HEAD, p + V1_PAGE_HEAD + n),
    },
    end: p + V1_PAGE_HEAD + n,
  };
}
