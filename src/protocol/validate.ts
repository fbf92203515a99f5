// The trust boundary: every request argument is checked for type, range and length before the host
// acts on it. Arguments the store receives are then well-formed; the store checks semantics. Which
// arguments a procedure takes comes from its definition (procs.ts); each kind's limits are here.
import { PrismError } from '../errors.js';
import { MAX_NAME, MAX_SYMLINK, MAX_XATTR_VALUE, MAX_FILE_SIZE } from '../posix/limits.js';
import { S_IFMT, isNodeType } from '../posix/mode.js';
import { MAX_HANDLE, MAX_IO, PROCS, PROC_NUMBERS, type ArgKind } from './procs.js';

/** The kinds of each procedure's arguments, by procedure number (made once from PROCS). */
const KINDS: Array<readonly ArgKind[] | undefined> = [];
for (const p of PROC_NUMBERS) KINDS[p] = PROCS[p].args.map(([, kind]) => kind);

const isBytes = (x: unknown): x is Uint8Array => x instanceof Uint8Array;
const isU = (x: unknown, max: number): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= max;

function bad(i: number, what: string): never {
  throw new PrismError('EINVAL', `argument ${i}: ${what}`);
}

function checkTime(t: unknown): boolean {
  return t === null || t === true || (Array.isArray(t) && t.length === 2 && Number.isSafeInteger(t[0]) && isU(t[1], 999_999_999));
}

function check(f: ArgKind, x: unknown, i: number): void {
  switch (f) {
    case 'fh': if (!isBytes(x) || x.length === 0 || x.length > MAX_HANDLE) bad(i, 'handle must be 1-64 bytes'); return;
    case 'name':
    case 'lookupName':
      if (!isBytes(x) || x.length === 0) bad(i, 'name must be bytes');
      if (x.length > MAX_NAME) throw new PrismError('ENAMETOOLONG', `argument ${i}: name longer than ${MAX_NAME} bytes`);
      if (x.includes(0) || x.includes(0x2f)) bad(i, 'name contains / or NUL');
      if (f === 'name' && x[0] === 0x2e && (x.length === 1 || (x.length === 2 && x[1] === 0x2e))) bad(i, '"." and ".." cannot be made or removed');
      return;
    case 'xname': if (!isBytes(x) || x.length === 0 || x.length > 255 || x.includes(0)) bad(i, 'attribute name must be 1-255 bytes'); return;
    case 'xvalue': if (!isBytes(x)) bad(i, 'attribute value must be bytes'); if (x.length > MAX_XATTR_VALUE) throw new PrismError('E2BIG', 'attribute value too large'); return;
    case 'target': if (!isBytes(x) || x.length === 0 || x.length > MAX_SYMLINK || x.includes(0)) bad(i, 'symlink target must be 1-4095 bytes'); return;
    case 'data': if (!isBytes(x) || x.length > MAX_IO) bad(i, `data must be at most ${MAX_IO} bytes`); return;
    case 'cookie': if (!isBytes(x) || x.length > MAX_NAME) bad(i, 'cookie must be at most 255 bytes'); return;
    case 'volume': if (typeof x !== 'string' || x.length === 0 || x.length > 64) bad(i, 'volume name must be a string'); return;
    case 'u32': if (!isU(x, 0xffffffff)) bad(i, 'must be a 32-bit unsigned integer'); return;
    case 'u53': if (!isU(x, Number.MAX_SAFE_INTEGER)) bad(i, 'must be a non-negative integer'); return;
    case 'small': if (!isU(x, 255)) bad(i, 'must be a small flag value'); return;
    case 'perm': if (!isU(x, 0o7777)) bad(i, 'mode must be permission bits (0-0o7777)'); return;
    case 'nodeMode': if (!isU(x, 0o177777) || !isNodeType(x & S_IFMT)) bad(i, 'mknod makes regular files, devices, fifos and sockets only'); return;
    case 'offset': if (!isU(x, MAX_FILE_SIZE)) bad(i, 'offset out of range'); return;
    case 'count': if (!isU(x, MAX_IO)) bad(i, `count must be at most ${MAX_IO}`); return;
    case 'bool': if (typeof x !== 'boolean') bad(i, 'must be a boolean'); return;
    case 'gids': if (!Array.isArray(x) || x.length > 64 || !x.every((g) => isU(g, 0xffffffff))) bad(i, 'gids must be up to 64 ids'); return;
    case 'time': if (!Array.isArray(x) || x.length !== 2 || !Number.isSafeInteger(x[0]) || !isU(x[1], 999_999_999)) bad(i, 'time must be [seconds, nanoseconds]'); return;
    case 'setattr': {
      if (!Array.isArray(x) || x.length !== 6) bad(i, 'setattr must be a 6-element array');
      const [mode, uid, gid, size, at, mt] = x as unknown[];
      if ((mode !== null && !isU(mode, 0o7777)) || (uid !== null && !isU(uid, 0xffffffff)) || (gid !== null && !isU(gid, 0xffffffff))
        || (size !== null && !isU(size, MAX_FILE_SIZE)) || !checkTime(at) || !checkTime(mt)) bad(i, 'setattr field out of range');
      return;
    }
  }
}

/** Check a request's arguments; returns them, now known to have the procedure's shape. */
export function validateArgs(proc: number, args: unknown[]): unknown[] {
  const kinds = KINDS[proc];
  if (!kinds) throw new PrismError('ENOSYS', `procedure ${proc} is not supported`);
  if (args.length !== kinds.length) throw new PrismError('EINVAL', `procedure ${proc} takes ${kinds.length} arguments, got ${args.length}`);
  for (let i = 0; i < kinds.length; i++) check(kinds[i]!, args[i], i);
  return args;
}

/** The kinds of a procedure's arguments, in order (for fuzzers and docs); undefined for unknown procedures. */
export function argFields(proc: number): readonly ArgKind[] | undefined {
  return KINDS[proc];
}
