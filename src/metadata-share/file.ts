// The file behind a VM's metadata table: /dev/shm/prism-NAME-meta, mapped read-write by the host and
// read-only by the guest (directly, or in QEMU as a second ivshmem device with a readonly=on backend).
import fs from 'node:fs';
import { PrismError } from '../errors.js';
import { allocateFile, map, unmap } from '../ring/index.js';
import { MetaTable, MetaTableError } from './table.js';

/** Default table size: about 130,000 slots (an entry and its attributes take two). */
export const META_SIZE = 64 * 1024 * 1024;

export function metaPath(vm: string, dir = '/dev/shm'): string {
  return `${dir}/prism-${vm}-meta`;
}

export function checkMetaSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 1 << 20 || size > 2 ** 32 || (size & (size - 1)) !== 0) {
    throw new PrismError('EINVAL', `a metadata table size must be a power of two from 1 MiB to 4 GiB (QEMU maps it as a PCI BAR), not ${size}`);
  }
}

export interface OpenTable { table: MetaTable; buffer: ArrayBuffer; close(): void }

/**
 * Create or take over a VM's table (host side). A file of another size is never resized under a
 * guest that maps it: it is marked dead and replaced by a new file of the right size.
 */
export function openMetaTable(file: string, size: number): OpenTable {
  checkMetaSize(size);
  let existing = -1;
  let st: fs.Stats | undefined;
  try { st = fs.lstatSync(file); } catch { /* new */ }
  if (st) {
    checkOurs(file, st);
    existing = st.size;
  }
  if (existing !== size) {
    if (existing >= 0) retire(file);
    // Written out in full: ENOSPC now rather than SIGBUS later, and no page faults under requests
    // (a first write into each page of a sparse table cost ~15 us).
    const fresh = `${file}.new`;
    fs.rmSync(fresh, { force: true });
    try {
      allocateFile(fresh, size);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code === 'ENOSPC' ? 'ENOSPC' : 'EIO';
      throw new PrismError(code, `cannot make the metadata table ${file} (${size >> 20} MiB): ${(e as Error).message}; free space there or give a smaller --meta-size`);
    }
    fs.renameSync(fresh, file);
  }
  const { table, buffer } = initialize(file, size);
  return {
    table, buffer,
    close: () => { table.reset(true); unmap(buffer); },
  };
}

/**
 * A table file someone else made or can write is not adopted: its writer could feed this VM's agent
 * any answer, or truncate it under the host's mapping (SIGBUS). Not a symlink either (root would
 * map and write whatever it points to).
 */
function checkOurs(file: string, st: fs.Stats): void {
  const uid = process.geteuid?.();
  if (!st.isFile() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o002) !== 0) {
    const what = st.isSymbolicLink() ? 'a symbolic link' : !st.isFile() ? 'not a regular file' : st.uid !== uid ? `owned by uid ${st.uid}` : 'writable by anyone';
    throw new PrismError('EPERM', `refusing the metadata table ${file}: ${what}, not this host's; remove it`);
  }
}

function initialize(file: string, size: number): { table: MetaTable; buffer: ArrayBuffer } {
  let buffer: ArrayBuffer;
  try {
    buffer = map(file, { size, create: true });
  } catch (e) {
    throw new PrismError('EIO', `cannot map ${file}: ${(e as Error).message}`);
  }
  try {
    return { table: MetaTable.create(buffer), buffer };
  } catch (e) {
    unmap(buffer);
    throw new PrismError('EINVAL', `${file}: ${(e as Error).message}`);
  }
}

/** Leave an old table odd (readers miss) so a guest still mapping it asks the host instead. */
function retire(file: string): void {
  let buffer: ArrayBuffer | undefined;
  try {
    buffer = map(file, {});
    try {
      MetaTable.attach(buffer).reset(true);
    } catch (e) {
      if (!(e instanceof MetaTableError)) throw e;
      MetaTable.retire(buffer); // another version's (or a broken) table: at least its readers miss
    }
  } catch (e) {
    throw new PrismError('EIO', `cannot retire ${file}: ${(e as Error).message}`);
  } finally {
    if (buffer) unmap(buffer);
  }
}

/** Map a table read-only (guest side). */
export function attachMetaTable(file: string): { table: MetaTable; buffer: ArrayBuffer; close(): void } {
  let buffer: ArrayBuffer;
  try {
    buffer = map(file, { readonly: true });
  } catch (e) {
    throw new PrismError('ENOENT', `cannot map the metadata table ${file}: ${(e as Error).message}`);
  }
  try {
    return { table: MetaTable.attach(buffer), buffer, close: () => unmap(buffer) };
  } catch (e) {
    unmap(buffer);
    throw new PrismError('EINVAL', `${file}: ${(e as Error).message}`);
  }
}
