// Worker of the import pool (piscina). Two kinds of task:
//  - hash: read pieces of files (or take data the main thread put there) into a shared buffer and
//    hash their BLOCK_SIZE blocks. The data stays in the shared buffer, so nothing is copied back:
//    the main thread stores only the blocks whose hash the store does not know.
//  - list: read directories and lstat their entries, for the walk before an import.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { move, transferableSymbol, valueSymbol } from 'piscina';
import { S_IFDIR, S_IFLNK, S_IFMT } from '../posix/mode.js';
import { BLOCK_SIZE } from './layout.js';

/** A piece of a file: [path, offset, length]; offset is a multiple of BLOCK_SIZE. */
export type Piece = [path: string | Uint8Array, offset: number, length: number];

export interface HashTask {
  kind: 'hash';
  /** Pieces land here back to back (piece i at the sum of the lengths before it). */
  buf: SharedArrayBuffer;
  /** Read these pieces into buf; without pieces, buf already holds data of these lengths. */
  pieces?: Piece[];
  lengths?: number[];
}

export interface HashResult {
  /** Bytes actually read per piece (fewer than asked if the file shrank). */
  got: number[];
  /** 32 bytes per block of every piece in order (each piece takes ceil(asked / BLOCK_SIZE) slots); zeros for an all-zero block (a hole). */
  hashes: ArrayBuffer;
  /** Per piece: [code, message] if it could not be read. */
  errors: Array<[string, string] | null>;
}

export interface ListTask {
  kind: 'list';
  dirs: Array<string | Uint8Array>;
}

/** Per entry of a listed directory, these numbers (in a Float64Array, STAT_FIELDS per entry). */
export const STAT_FIELDS = 10;
export const enum F { Mode, Uid, Gid, Size, Rdev, Nlink, ASec, ANsec, MSec, MNsec }

export interface Listing {
  /** Names; a Uint8Array where the name is not valid UTF-8. */
  names: Array<string | Uint8Array>;
  stats: Float64Array;
  /** Entry index -> "dev:ino", for non-directories with more than one link. */
  inodes: Record<number, string>;
  /** Entry index -> symlink target. */
  targets: Record<number, Uint8Array>;
  error?: [string, string];
}

const ZERO = Buffer.alloc(BLOCK_SIZE);

// Not following a symlink, nor waiting on a fifo, should the file have been replaced since the walk.
const READ_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

function readPiece(path: string | Uint8Array, offset: number, length: number, into: Buffer, at: number): number {
  const fd = fs.openSync(typeof path === 'string' ? path : Buffer.from(path.buffer, path.byteOffset, path.length), READ_FLAGS);
  try {
    let got = 0;
    while (got < length) {
      const n = fs.readSync(fd, into, at + got, length - got, offset + got);
      if (n === 0) break;
      got += n;
    }
    return got;
  } finally {
    fs.closeSync(fd);
  }
}

function hashTask(task: HashTask): unknown {
  const lengths = task.pieces ? task.pieces.map((p) => p[2]) : (task.lengths ?? []);
  let nblocks = 0;
  for (const n of lengths) nblocks += Math.ceil(n / BLOCK_SIZE);
  const data = Buffer.from(task.buf);
  const hashes = new ArrayBuffer(nblocks * 32);
  const hbuf = Buffer.from(hashes);
  const got: number[] = [];
  const errors: Array<[string, string] | null> = [];
  let at = 0, b = 0;
  for (let i = 0; i < lengths.length; i++) {
    const want = lengths[i];
    let n = want;
    let err: [string, string] | null = null;
    if (task.pieces) {
      const [p, offset] = task.pieces[i];
      try {
        n = readPiece(p, offset, want, data, at);
      } catch (e) {
        n = 0;
        const x = e as NodeJS.ErrnoException;
        err = [x.code ?? 'EIO', x.message];
      }
    }
    for (let off = 0, k = b; off < n; off += BLOCK_SIZE, k++) {
      const len = Math.min(BLOCK_SIZE, n - off);
      const block = data.subarray(at + off, at + off + len);
      if (block.equals(len === BLOCK_SIZE ? ZERO : ZERO.subarray(0, len))) continue;
      crypto.createHash('sha256').update(block).digest().copy(hbuf, k * 32);
    }
    got.push(n);
    errors.push(err);
    at += want;
    b += Math.ceil(want / BLOCK_SIZE);
  }
  const result: HashResult = { got, hashes, errors };
  return move({
    get [transferableSymbol]() { return [hashes]; },
    get [valueSymbol]() { return result; },
  });
}

/** Seconds and nanoseconds (0..999999999, also before 1970) of a time in ns, into out[at], out[at + 1]. */
function splitNs(ns: bigint, out: Float64Array, at: number): void {
  let sec = ns / 1_000_000_000n, rem = ns % 1_000_000_000n;
  if (rem < 0n) { sec -= 1n; rem += 1_000_000_000n; }
  out[at] = Number(sec);
  out[at + 1] = Number(rem);
}

function decodable(names: string[]): boolean {
  for (const n of names) if (n.includes('\ufffd')) return false;
  return true;
}

function join(dir: string | Uint8Array, name: string | Uint8Array): string | Buffer {
  if (typeof dir === 'string' && typeof name === 'string') return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
  const d = typeof dir === 'string' ? Buffer.from(dir) : Buffer.from(dir.buffer, dir.byteOffset, dir.length);
  const n = typeof name === 'string' ? Buffer.from(name) : Buffer.from(name.buffer, name.byteOffset, name.length);
  return Buffer.concat([d, Buffer.from('/'), n]);
}

function listDir(dir: string | Uint8Array): Listing {
  const d = typeof dir === 'string' ? dir : Buffer.from(dir.buffer, dir.byteOffset, dir.length);
  let names: Array<string | Uint8Array>;
  try {
    const s = fs.readdirSync(d);
    // A name that is not UTF-8 would not survive as a string: read this directory as bytes.
    names = decodable(s) ? s : fs.readdirSync(d, { encoding: 'buffer' }).map((b) => {
      const str = b.toString();
      return Buffer.from(str).equals(b) ? str : new Uint8Array(b);
    });
  } catch (e) {
    const x = e as NodeJS.ErrnoException;
    return { names: [], stats: new Float64Array(0), inodes: {}, targets: {}, error: [x.code ?? 'EIO', x.message] };
  }
  const stats = new Float64Array(names.length * STAT_FIELDS);
  const inodes: Record<number, string> = {};
  const targets: Record<number, Uint8Array> = {};
  const kept: Array<string | Uint8Array> = [];
  for (const name of names) {
    const p = join(dir, name);
    try {
      const st = fs.lstatSync(p, { bigint: true, throwIfNoEntry: false });
      if (!st) continue; // removed since the listing
      const type = Number(st.mode) & S_IFMT;
      const target = type === S_IFLNK ? new Uint8Array(fs.readlinkSync(p, { encoding: 'buffer' })) : undefined;
      const i = kept.length;
      kept.push(name);
      const o = i * STAT_FIELDS;
      stats[o + F.Mode] = Number(st.mode);
      stats[o + F.Uid] = Number(st.uid);
      stats[o + F.Gid] = Number(st.gid);
      stats[o + F.Size] = Number(st.size);
      stats[o + F.Rdev] = Number(st.rdev);
      stats[o + F.Nlink] = Number(st.nlink);
      splitNs(st.atimeNs, stats, o + F.ASec);
      splitNs(st.mtimeNs, stats, o + F.MSec);
      if (st.nlink > 1n && type !== S_IFDIR) inodes[i] = `${st.dev}:${st.ino}`;
      if (target) targets[i] = target;
    } catch (e) {
      const x = e as NodeJS.ErrnoException;
      if (x.code === 'ENOENT') continue; // removed since the listing
      const shown = typeof p === 'string' ? p : p.toString();
      return { names: [], stats: new Float64Array(0), inodes: {}, targets: {}, error: [x.code ?? 'EIO', `${shown}: ${x.message}`] };
    }
  }
  return { names: kept, stats: kept.length === names.length ? stats : stats.slice(0, kept.length * STAT_FIELDS), inodes, targets };
}

export default function work(task: HashTask | ListTask): unknown {
  if (task.kind === 'list') return task.dirs.map(listDir);
  return hashTask(task);
}
