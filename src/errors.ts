// The one error table, and the one error type from the store up to FUSE replies and CLI exit codes:
// a POSIX code plus a detail. See docs/protocol.md (Errors) for how each channel carries it.

/**
 * Every code an error may carry, with its Linux errno number. Literal numbers, not os.constants:
 * VRPC replies, FUSE replies and exit codes carry Linux numbers whatever OS the host runs on.
 * A code's wire value in VRPC replies is this number; the handshake, the admin socket and the
 * agent's notify pipe carry the code's name instead (control messages, read by people too).
 */
const LINUX_ERRNO = {
  EPERM: 1, ENOENT: 2, EINTR: 4, EIO: 5, ENXIO: 6, E2BIG: 7, EBADF: 9, EAGAIN: 11, EACCES: 13, EBUSY: 16,
  EEXIST: 17, EXDEV: 18, ENODEV: 19, ENOTDIR: 20, EISDIR: 21, EINVAL: 22, EFBIG: 27, ENOSPC: 28, EROFS: 30,
  EMLINK: 31, ERANGE: 34, ENAMETOOLONG: 36, ENOSYS: 38, ENOTEMPTY: 39, ELOOP: 40, ENODATA: 61, EOVERFLOW: 75,
  ENOTSUP: 95, ETIMEDOUT: 110, ESTALE: 116, EDQUOT: 122,
} as const;

export type PosixCode = keyof typeof LINUX_ERRNO;
export const POSIX_CODES = Object.freeze(Object.keys(LINUX_ERRNO) as PosixCode[]);

const BY_NAME: ReadonlyMap<string, PosixCode> = new Map([
  ...POSIX_CODES.map((c) => [c, c] as const),
  // Other names Node (libuv) or a peer may use for the same Linux numbers.
  ['EOPNOTSUPP', 'ENOTSUP'], ['EWOULDBLOCK', 'EAGAIN'],
]);
const BY_ERRNO: ReadonlyMap<number, PosixCode> = new Map(POSIX_CODES.map((c) => [LINUX_ERRNO[c], c]));

const STACKS = process.env.PRISM_ERROR_STACKS === '1';

export class PrismError extends Error {
  readonly code: PosixCode;
  /** What went wrong, without the code (`message` is `CODE: detail`, for logs). */
  readonly detail: string;
  constructor(code: PosixCode, detail: string) {
    // These are expected outcomes (ENOENT on a lookup...), thrown by the thousand: no stack trace,
    // which is most of an Error's cost. PRISM_ERROR_STACKS=1 brings them back for debugging.
    const limit = Error.stackTraceLimit;
    if (!STACKS) Error.stackTraceLimit = 0;
    super(`${code}: ${detail}`);
    Error.stackTraceLimit = limit;
    this.name = 'PrismError';
    this.code = code;
    this.detail = detail;
  }
  /** The positive Linux errno number: FUSE replies, VRPC replies and exit codes. */
  get errno(): number {
    return LINUX_ERRNO[this.code];
  }
}

/** A code's Linux errno number (its wire value in VRPC replies). */
export function errnoOf(code: PosixCode): number {
  return LINUX_ERRNO[code];
}

/** The code a name stands for ('EOPNOTSUPP' is ENOTSUP), or undefined for a name not in the table. */
export function codeOfName(name: string): PosixCode | undefined {
  return BY_NAME.get(name);
}

/** The code of a Linux errno number, or undefined for a number not in the table. */
export function codeOfErrno(errno: number): PosixCode | undefined {
  return BY_ERRNO.get(errno);
}

export function isPrismError(e: unknown, code?: PosixCode): e is PrismError {
  return e instanceof PrismError && (code === undefined || e.code === code);
}

/**
 * The error a failed VRPC reply stands for: its Linux errno number and its message (`CODE: detail`
 * as PrismError.message writes it; a bare detail is taken as it is). A number not in the table is EIO
 * and keeps the number in the detail, so nothing a peer sends is lost or trusted as a code.
 */
export function fromWire(errno: number, message: string): PrismError {
  const code = BY_ERRNO.get(errno);
  if (code === undefined) return new PrismError('EIO', `error number ${errno} from the peer: ${message}`);
  const prefixed = message.startsWith(code) && message.startsWith(': ', code.length);
  return new PrismError(code, prefixed ? message.slice(code.length + 2) : message);
}

/**
 * The error a control message names (handshake, admin socket, the agent's notify pipe). A name not
 * in the table is EIO and keeps the name in the detail.
 */
export function fromName(name: unknown, detail: string): PrismError {
  const code = typeof name === 'string' ? BY_NAME.get(name) : undefined;
  return code ? new PrismError(code, detail) : new PrismError('EIO', `${String(name)}: ${detail}`);
}

/**
 * Any thrown value as a PrismError: a PrismError as it is; a Node system error (or an addon's) by
 * its `code` name, else its positive `errno` (addons report Linux numbers; Node's own negative,
 * OS-specific errno is never read), with `context: message` as the detail; anything else, EIO.
 */
export function fromNodeError(e: unknown, context?: string): PrismError {
  if (e instanceof PrismError) return e;
  const x = (typeof e === 'object' && e !== null ? e : {}) as { code?: unknown; errno?: unknown; message?: unknown };
  const code = (typeof x.code === 'string' ? BY_NAME.get(x.code) : undefined)
    ?? (typeof x.errno === 'number' && x.errno > 0 ? BY_ERRNO.get(x.errno) : undefined)
    ?? 'EIO';
  // Node's messages start with the code ("ENOENT: no such file..."): said once, by the PrismError
  const why = typeof x.message === 'string' ? x.message.replace(/^E[A-Z0-9]+: /, '') : String(e);
  return new PrismError(code, context ? `${context}: ${why}` : why);
}
