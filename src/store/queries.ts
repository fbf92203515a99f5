// What the read commands ask of a store (`prism ls`, `stat`, `cat`, `volume diff`, `store stats`), as
// plain data: answered by the store in the CLI's own process, or, while `prism host serve` owns the
// store, by the host through its admin socket (src/host/admin.ts) with the same functions.
import { isDir, isLnk } from '../posix/mode.js';
import type { Attr } from '../posix/types.js';
import { diffVolumes, type DiffResult } from './diff.js';
import type { Store, StoreStats } from './store.js';

export interface ListedEntry { name: string; attr: Attr; target?: string }

/** The bytes `cat` asks for at a time (one admin message each). */
export const READ_PIECE = 1 << 20;

/** A directory's entries with their attributes (symlinks with their target); a file lists itself. */
export function listPath(s: Store, vol: string, path: string): ListedEntry[] {
  const v = s.volume(vol);
  const ino = v.resolve(path);
  const a = v.getattr(ino);
  const entries = isDir(a.mode) ? v.readdir(ino).map((e) => ({ name: e.name.toString(), attr: v.getattr(e.ino) })) : [{ name: path.split('/').pop()!, attr: a }];
  return entries.map((e) => (isLnk(e.attr.mode) ? { ...e, target: v.readlink(e.attr.ino).toString() } : e));
}

export function statPath(s: Store, vol: string, path: string): Attr {
  const v = s.volume(vol);
  return v.getattr(v.resolve(path));
}

/** Up to `length` bytes of a file from `offset`, and the file's size. */
export function readPath(s: Store, vol: string, path: string, offset: number, length: number): { data: Buffer; size: number } {
  const v = s.volume(vol);
  const ino = v.resolve(path);
  const size = v.getattr(ino).size;
  return { data: offset < size ? Buffer.from(v.read(ino, offset, Math.min(length, READ_PIECE)).data) : Buffer.alloc(0), size };
}

export function diffOf(s: Store, a: string, b: string): DiffResult {
  return diffVolumes(s, a, b);
}

export function storeStats(s: Store): StoreStats {
  return s.stats();
}
