// One error type from the store up to FUSE replies and CLI exit codes: a POSIX code plus a message.
import { constants as osConstants } from 'node:os';

/** Every code an error may carry (the wire carries their Linux errno numbers). */
export const POSIX_CODES = [
  'EPERM', 'ENOENT', 'EIO', 'EBADF', 'EACCES', 'EEXIST', 'EXDEV', 'ENOTDIR', 'EISDIR', 'EINVAL', 'EFBIG',
  'ENOSPC', 'EROFS', 'EMLINK', 'ENAMETOOLONG', 'ENOTEMPTY', 'ELOOP', 'ENODATA', 'ERANGE', 'EDQUOT', 'ESTALE',
  'EBUSY', 'ENOTSUP', 'EOVERFLOW', 'E2BIG', 'ENOSYS', 'ENXIO', 'EINTR', 'EAGAIN', 'ETIMEDOUT', 'ENODEV',
] as const;
export type PosixCode = (typeof POSIX_CODES)[number];

const STACKS = process.env.PRISM_ERROR_STACKS === '1';

export class PrismError extends Error {
  readonly code: PosixCode;
  constructor(code: PosixCode, message: string) {
    // These are expected outcomes (ENOENT on a lookup...), thrown by the thousand: no stack trace,
    // which is most of an Error's cost. PRISM_ERROR_STACKS=1 brings them back for debugging.
    const limit = Error.stackTraceLimit;
    if (!STACKS) Error.stackTraceLimit = 0;
    super(`${code}: ${message}`);
    Error.stackTraceLimit = limit;
    this.name = 'PrismError';
    this.code = code;
  }
  /** The positive errno number, for FUSE replies and exit codes. */
  get errno(): number {
    return errnoOf(this.code);
  }
}

export function errnoOf(code: PosixCode): number {
  if (code === 'ENOTSUP') return osConstants.errno.ENOTSUP ?? 95;
  const n = (osConstants.errno as Record<string, number>)[code];
  return n ?? osConstants.errno.EIO;
}

export function isPrismError(e: unknown, code?: PosixCode): e is PrismError {
  return e instanceof PrismError && (code === undefined || e.code === code);
}
