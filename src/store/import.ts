// Import a directory tree or a tar archive into a volume: the entry point. The pipeline that stores
// what a source finds is import-pipeline.ts; the sources are import-directory.ts and import-tar.ts.
import fs from 'node:fs';
import os from 'node:os';
import { Piscina } from 'piscina';
import { PrismError, fromNodeError, isPrismError } from '../errors.js';
import { DirectoryImport } from './import-directory.js';
import { type ImportProgress } from './import-pipeline.js';
import { TarImport } from './import-tar.js';
import { normalizePath, type Store } from './store.js';
import type { Volume } from './volume.js';
import { isDir } from '../posix/mode.js';
import type { Attr } from '../posix/types.js';

export interface ImportOptions {
  /** Directory inside the volume to import into (made if missing); default '/'. */
  dest?: string;
  onProgress?: (p: ImportProgress) => void;
  /** A pool from hashPool(), to share between imports; by default each import makes its own. */
  pool?: Piscina;
}

export interface ImportResult {
  /** Entries other than directories: regular files, symlinks, devices, fifos, sockets, hard links. */
  files: number;
  /** Directories made or merged (not counting the destination itself). */
  dirs: number;
  /** Bytes of regular file content (each inode once). */
  bytes: number;
  /** Bytes of blocks the store did not hold before. */
  newBytes: number;
  seconds: number;
}

const HASH_WORKER = new URL('./hash-worker.js', import.meta.url);

/** A worker pool for imports; pass it to several importPath calls to start its threads once. */
export function hashPool(threads = Math.min(8, Math.max(1, os.availableParallelism()))): Piscina {
  return new Piscina({ filename: HASH_WORKER.href, minThreads: threads, maxThreads: threads, idleTimeout: 30_000 });
}

/**
 * Import a directory tree (symlinks inside are not followed) or a tar archive (.tar, .tar.gz) into
 * dest of a volume (made if there is none): files, directories, symlinks, hard links, devices, fifos,
 * with mode, owner and times. An existing directory is merged into; an existing non-directory of the
 * same name is replaced. All or nothing: the import fills a hidden copy of the volume (Store.stage),
 * which replaces the volume at the end; a failure (EDQUOT, a bad archive, a crash) leaves the volume
 * as it was. Ends with a durable commit.
 */
export async function importPath(store: Store, volumeName: string, src: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const t0 = process.hrtime.bigint();
  let st: fs.Stats;
  try {
    st = fs.statSync(src);
  } catch (e) {
    throw fromNodeError(e, `cannot import ${src}`);
  }
  if (!st.isDirectory() && !st.isFile()) throw new PrismError('EINVAL', `${src} is neither a directory nor a tar archive`);
  const staged = store.stage(volumeName);
  const own = opts.pool ? undefined : hashPool();
  const Source = st.isDirectory() ? DirectoryImport : TarImport;
  let imp: InstanceType<typeof Source> | undefined;
  try {
    const destIno = mkdirs(staged.volume, normalizePath(opts.dest ?? '/'));
    imp = new Source(store, staged.volume, opts.pool ?? own!, destIno, opts.onProgress);
    await imp.read(st.isDirectory() ? fs.realpathSync(src) : src);
    await imp.finish();
    staged.publish();
  } catch (e) {
    await imp?.abort();
    staged.drop();
    store.commit();
    throw fromNodeError(e, `import of ${src} failed`); // a PrismError as it is
  } finally {
    if (own) await own.destroy();
  }
  store.commit();
  return { ...imp.result(), seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

/** The volume directory at an absolute path, made (0755, root) where missing. */
function mkdirs(v: Volume, p: string): number {
  let ino = v.rootIno;
  for (const part of p.split('/').filter(Boolean)) {
    let a: Attr;
    try {
      a = v.lookup(ino, part);
    } catch (e) {
      if (!isPrismError(e, 'ENOENT')) throw e;
      a = v.mkdir(ino, part, 0o755, 0, 0);
    }
    if (!isDir(a.mode)) throw new PrismError('ENOTDIR', `${p}: ${part} is not a directory`);
    ino = a.ino;
  }
  return ino;
}
