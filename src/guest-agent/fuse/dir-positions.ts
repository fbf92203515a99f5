// Directory positions: the offsets a READDIR resumes from. Each entry's position is a hash of its name,
// and a listing is served in position order, so a position does not move when other entries come or
// go. A reader resuming after a change then sees every unchanged entry exactly once, whichever
// listing serves it (POSIX leaves only the changed names unspecified): listings can be kept per
// directory rather than per open, and the kernel need not open directories at all (session.ts).
import type { FuseDirEntry } from './fs.js';

/** "." and ".." come first; names hash above them. */
const DOT = 1, DOTDOT = 2, FIRST_NAME = 3;

/** A name's position: 52 bits of hash above ".." (exact in a double, positive as the kernel's loff_t). */
export function positionOf(name: string): number {
  if (name === '.') return DOT;
  if (name === '..') return DOTDOT;
  // Two independent 32-bit lanes (FNV-1a and a multiply-xorshift), finalised, make 32 + 20 bits.
  let a = 0x811c9dc5, b = 0x9e3779b9;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  a ^= a >>> 16; a = Math.imul(a, 0x85ebca6b); a ^= a >>> 13;
  b ^= b >>> 16; b = Math.imul(b, 0xc2b2ae35); b ^= b >>> 16;
  return (a >>> 0) * 0x100000 + (b >>> 12) + FIRST_NAME;
}

/** A listing in position order (ties, which 52 bits make rare, by name). */
export interface PositionedListing {
  readonly entries: readonly FuseDirEntry[];
  readonly positions: readonly number[];
}

export function inPositionOrder(list: readonly FuseDirEntry[]): PositionedListing {
  const keyed = list.map((e) => ({ e, p: positionOf(e.name) }));
  keyed.sort((x, y) => x.p - y.p || (x.e.name < y.e.name ? -1 : x.e.name > y.e.name ? 1 : 0));
  return { entries: keyed.map((k) => k.e), positions: keyed.map((k) => k.p) };
}

/** The index of the first entry after position `pos` (0 for the start). */
export function firstAfter(l: PositionedListing, pos: number): number {
  let lo = 0, hi = l.positions.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (l.positions[mid]! <= pos) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * How many entries from `start` fit in `size` bytes, each taking `sizeOf(entry)`. A run of entries
 * sharing one position is not split between two replies (a resume could not tell them apart), unless
 * the run alone fills the reply.
 */
export function entriesThatFit(l: PositionedListing, start: number, size: number, sizeOf: (e: FuseDirEntry) => number): number {
  let end = start, used = 0;
  while (end < l.entries.length) {
    const n = sizeOf(l.entries[end]!);
    if (used + n > size) break;
    used += n;
    end++;
  }
  if (end < l.entries.length) {
    let back = end;
    while (back - 1 > start && l.positions[back - 1] === l.positions[end]) back--;
    if (l.positions[back - 1] !== l.positions[end]) end = back;
  }
  return end - start;
}
