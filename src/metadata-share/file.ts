// The file behind a VM's metadata table: /dev/shm/prism-NAME-meta, mapped read-write by the host and
// read-only by the guest (directly, or in QEMU as a second ivshmem device with a readonly=on backend).
import fs from 'node:fs';
import { PrismError, fromNodeError } from '../errors.js';
import { map, openServedFile, ownFile, unmap, type FileProblem } from '../ring/index.js';
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

export interface OpenTable {
  table: MetaTable;
  buffer: ArrayBuffer;
  close(): void;
  /** What happened to the file since (truncated, replaced, removed), if anything. */
  problem(): FileProblem | undefined;
}

/**
 * Create or take over a VM's table (host side), made and locked like a region (ownFile: O_EXCL,
 * O_NOFOLLOW, 0600, ours, one host). A leftover of another size is never resized under a guest that
 * maps it: it is marked dead and replaced by a new file of the right size. Written out in full:
 * ENOSPC now rather than SIGBUS later, and no page faults under requests (a first write into each
 * page of a sparse table cost ~15 us).
 */
export function openMetaTable(file: string, size: number, opts: { group?: number } = {}): OpenTable {
  checkMetaSize(size);
  let f;
  try {
    f = ownFile(file, { size, group: opts.group, retire });
  } catch (e) {
    if (e instanceof PrismError && e.code === 'ENOSPC') {
      throw new PrismError('ENOSPC', `cannot make the metadata table ${file} (${size >> 20} MiB): no space left; free space there or give a smaller --meta-size`);
    }
    throw e;
  }
  let table: MetaTable;
  try {
    table = MetaTable.create(f.buffer);
  } catch (e) {
    f.close();
    throw new PrismError('EINVAL', `${file}: ${(e as Error).message}`);
  }
  return {
    table, buffer: f.buffer, problem: () => f.problem(),
    close: () => { table.reset(true); f.close(); },
  };
}

/** Leave an old table odd (readers miss) so a guest still mapping it asks the host instead. */
function retire(old: ArrayBuffer): void {
  try {
    MetaTable.attach(old).reset(true);
  } catch (e) {
    if (!(e instanceof MetaTableError)) throw new PrismError('EIO', `cannot retire an old metadata table: ${(e as Error).message}`);
    MetaTable.retire(old); // another version's (or a broken) table: at least its readers miss
  }
}

/** Map a table read-only (guest side). */
export function attachMetaTable(file: string): { table: MetaTable; buffer: ArrayBuffer; close(): void } {
  let buffer: ArrayBuffer;
  const fd = openServedFile(file, false);
  try {
    buffer = map(fd, { readonly: true, guard: true });
  } catch (e) {
    throw fromNodeError(e, `cannot map the metadata table ${file}`);
  } finally {
    fs.closeSync(fd);
  }
  try {
    return { table: MetaTable.attach(buffer), buffer, close: () => unmap(buffer) };
  } catch (e) {
    unmap(buffer);
    throw new PrismError('EINVAL', `${file}: ${(e as Error).message}`);
  }
}
