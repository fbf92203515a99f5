// The distinct file contents of some volumes, each with every volume and path that holds it: what
// `prism scan` reads once for all. Two files hold the same content when they have the same size and
// the same blocks at the same places (blocks are content-addressed), which the store knows without
// reading any data: 100 clones of an image are one scan, not 100.
import crypto from 'node:crypto';
import { isDir, isReg } from '../posix/mode.js';
import type { Store } from './store.js';
import type { Volume } from './volume.js';

export interface Holder { volume: string; path: string }

export interface UniqueContent {
  /** The content's identity in the store (size and block list, hashed): not its SHA-256. */
  id: string;
  size: number;
  holders: Holder[];
}

export interface UniqueContents {
  contents: UniqueContent[];
  /** Regular files walked, and their bytes. */
  files: number;
  bytes: number;
}

/** Every regular file of the volumes, grouped by content. */
export function uniqueContents(store: Store, volumes: string[], onFile?: (files: number) => void): UniqueContents {
  const byId = new Map<string, UniqueContent>();
  let files = 0, bytes = 0;
  for (const name of volumes) {
    const v = store.volume(name);
    const stack: Array<{ ino: number; path: string }> = [{ ino: v.rootIno, path: '' }];
    while (stack.length) {
      const dir = stack.pop()!;
      for (const e of v.readdir(dir.ino)) {
        const path = `${dir.path}/${e.name.toString()}`;
        const a = v.getattr(e.ino);
        if (isDir(a.mode)) { stack.push({ ino: e.ino, path }); continue; }
        if (!isReg(a.mode)) continue;
        const id = contentId(v, e.ino, a.size);
        let c = byId.get(id);
        if (!c) { c = { id, size: a.size, holders: [] }; byId.set(id, c); }
        c.holders.push({ volume: name, path });
        files++;
        bytes += a.size;
        if (onFile && files % 1000 === 0) onFile(files);
      }
    }
  }
  return { contents: [...byId.values()], files, bytes };
}

function contentId(v: Volume, ino: number, size: number): string {
  const h = crypto.createHash('sha256');
  const n = Buffer.alloc(8);
  n.writeBigUInt64LE(BigInt(size));
  h.update(n);
  for (const [idx, hash] of v.blockList(ino)) {
    n.writeBigUInt64LE(BigInt(idx));
    h.update(n);
    h.update(hash);
  }
  return h.digest('hex');
}

/** The bytes of a content, in pieces (from its first holder). */
export function* contentPieces(store: Store, c: UniqueContent, piece = 1 << 20): Generator<Buffer> {
  const { volume, path } = c.holders[0]!;
  const v = store.volume(volume);
  const ino = v.resolve(path);
  for (let off = 0; off < c.size; off += piece) yield Buffer.from(v.read(ino, off, Math.min(piece, c.size - off)).data);
}
