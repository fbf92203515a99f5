// Making the store's own files durable, and what their failures are called: shared by the segment
// files and the intent log.
import fs from 'node:fs';
import { PrismError } from '../errors.js';

/**
 * The store's own files failing. Narrower than fromNodeError on purpose: the host running out of space
 * (or its user's disk quota, not a volume's EDQUOT) is ENOSPC to the guest; anything else is EIO,
 * since a code like EACCES would blame the guest for the host's files.
 */
export function ioError(e: unknown, what: string): PrismError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new PrismError('ENOSPC', `${what}: no space left on device`);
  return new PrismError('EIO', `${what}: ${(e as Error).message}`);
}

/**
 * fdatasync (`dataOnly`) or fsync a file or directory by path, on libuv's thread pool: opened anew,
 * so a descriptor closed and reused meanwhile can never be the one synced.
 */
export async function syncPath(p: string, dataOnly: boolean): Promise<void> {
  const h = await fs.promises.open(p, 'r');
  try {
    await (dataOnly ? h.datasync() : h.sync());
  } finally {
    await h.close();
  }
}

/** fsync a file or directory by path, blocking. */
export function syncPathNow(p: string): void {
  const fd = fs.openSync(p, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
