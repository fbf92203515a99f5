// The VRPC procedures: every NFSv3 procedure (same numbers as RFC 1813) plus what a POSIX mount
// needs beyond it. Each is defined once, in PROCS: its name, its arguments and its results, each a
// (name, kind) pair in wire order (arguments and results are positional CBOR arrays, docs/protocol.md).
// The rest derives from it: the checks at the trust boundary (validate.ts: a kind carries its
// limits), the types of the host's handlers (host/dispatch.ts) and the agent's stubs (stubs.ts).
// Adding a procedure is one entry here, a handler in the dispatcher and the store method behind it.
import type { WireAttr, WireDirent, WireDirentPlus, WireSetAttr } from './wire.js';

export const PROTOCOL_VERSION = 2;

export const enum Proc {
  NULL = 0,
  GETATTR = 1,
  SETATTR = 2,
  LOOKUP = 3,
  ACCESS = 4,
  READLINK = 5,
  READ = 6,
  WRITE = 7,
  CREATE = 8,
  MKDIR = 9,
  SYMLINK = 10,
  MKNOD = 11,
  REMOVE = 12,
  RMDIR = 13,
  RENAME = 14,
  LINK = 15,
  READDIR = 16,
  READDIRPLUS = 17,
  FSSTAT = 18,
  FSINFO = 19,
  PATHCONF = 20,
  COMMIT = 21,
  // Beyond NFSv3
  ATTACH = 64, // volume name -> root handle (the MOUNT protocol's job in NFS)
  GETXATTR = 65,
  SETXATTR = 66,
  LISTXATTR = 67,
  REMOVEXATTR = 68,
  OPEN = 69, // pins an inode so an unlinked open file lives until CLOSE
  CLOSE = 70,
  FALLOCATE = 71,
  SEEK = 72, // SEEK_DATA / SEEK_HOLE
  COPY_RANGE = 73, // served by sharing blocks, no data copied
  RESERVE = 74, // inode numbers (with their handles) the agent may make files under: posted creates
  CREATE_AT = 75, // CREATE of a reserved inode at a time the agent chose (posted: the agent answered already)
  MKDIR_AT = 76,
  SETATTR_AT = 77, // SETATTR at a time the agent chose, as the change's ctime and any "now" (posted: the agent answered already)
  REMOVE_AT = 78, // REMOVE at a time the agent chose, for the directory's mtime and ctime and the file's ctime (posted)
  RENAME_AT = 79, // RENAME likewise (posted)
}

/**
 * WRITE's `stable` holds the stable level (0 unstable, 1 data sync, 2 file sync) in its low two bits;
 * this bit asks the host to leave the file's mtime and ctime as they are: the client's kernel stamps
 * them itself and sends them with a SETATTR (FUSE's writeback cache).
 */
export const WRITE_KEEP_TIMES = 4;
export const WRITE_STABLE_MASK = 3;

/**
 * Most bytes of written data an agent holds: sent and not answered yet, or answered but not yet
 * covered by a COMMIT (kept to be sent again if the host restarts). Past half of it, it sends a
 * COMMIT. The host counts on it when it tells agents they need not wait at close (docs/agent.md).
 */
export const WRITE_BEHIND_BYTES = 64 << 20;

/** Largest READ/WRITE payload a peer may ask for. */
export const MAX_IO = 1 << 20;
/** Largest encoded message either side accepts. */
export const MAX_MESSAGE = MAX_IO + 64 * 1024;
export const MAX_HANDLE = 64;

/**
 * The kinds of arguments and the type each has on the wire. The limits of each kind are checked in
 * validate.ts (a handle is 1-64 bytes, a `name` is a file name that may be made, a `count` at most
 * MAX_IO, ...).
 */
export interface ArgKinds {
  fh: Uint8Array;
  /** A name to make or remove: not "." or "..". */
  name: Uint8Array;
  /** A name to look up: "." and ".." allowed. */
  lookupName: Uint8Array;
  xname: Uint8Array;
  xvalue: Uint8Array;
  target: Uint8Array;
  data: Uint8Array;
  cookie: Uint8Array;
  volume: string;
  u32: number;
  u53: number;
  /** A flag or enum value (0-255). */
  small: number;
  /** Permission bits (0-0o7777). */
  perm: number;
  /** A node's type and permission bits, as mknod takes them. */
  nodeMode: number;
  offset: number;
  count: number;
  bool: boolean;
  gids: number[];
  setattr: WireSetAttr;
  /** [seconds, nanoseconds]: a time the agent chose (of a posted create). */
  time: [number, number];
}
export type ArgKind = keyof ArgKinds;

/** The kinds of results and the type each has on the wire (the host sends them; the agent trusts them). */
export interface ResultKinds {
  fh: Uint8Array;
  /** Handles (RESERVE's). */
  fhs: Uint8Array[];
  bytes: Uint8Array;
  /** READ's data: the agent may take it in place (stubs.ts). */
  data: Uint8Array;
  /** The host instance's write verifier (8 bytes). */
  verifier: Uint8Array;
  attr: WireAttr;
  uint: number;
  bool: boolean;
  names: Uint8Array[];
  dirents: WireDirent[];
  direntsPlus: WireDirentPlus[];
}
export type ResultKind = keyof ResultKinds;

type Fields<K> = readonly (readonly [name: string, kind: K])[];
export interface ProcDef { readonly name: string; readonly args: Fields<ArgKind>; readonly result: Fields<ResultKind> }

// `dir` is a directory's handle; handles of files are `fh`.
export const PROCS = {
  [Proc.NULL]: { name: 'NULL', args: [], result: [] },
  [Proc.GETATTR]: { name: 'GETATTR', args: [['fh', 'fh']], result: [['attr', 'attr']] },
  [Proc.SETATTR]: { name: 'SETATTR', args: [['fh', 'fh'], ['set', 'setattr']], result: [['attr', 'attr']] },
  [Proc.LOOKUP]: { name: 'LOOKUP', args: [['dir', 'fh'], ['name', 'lookupName']], result: [['fh', 'fh'], ['attr', 'attr']] },
  [Proc.ACCESS]: { name: 'ACCESS', args: [['fh', 'fh'], ['mask', 'small'], ['uid', 'u32'], ['gids', 'gids']], result: [] },
  [Proc.READLINK]: { name: 'READLINK', args: [['fh', 'fh']], result: [['target', 'bytes']] },
  [Proc.READ]: { name: 'READ', args: [['fh', 'fh'], ['offset', 'offset'], ['count', 'count']], result: [['data', 'data'], ['eof', 'bool']] },
  [Proc.WRITE]: {
    name: 'WRITE', args: [['fh', 'fh'], ['offset', 'offset'], ['data', 'data'], ['stable', 'small']],
    result: [['attr', 'attr'], ['count', 'uint'], ['verifier', 'verifier']],
  },
  [Proc.CREATE]: {
    name: 'CREATE', args: [['dir', 'fh'], ['name', 'name'], ['mode', 'perm'], ['uid', 'u32'], ['gid', 'u32'], ['exclusive', 'bool']],
    result: [['fh', 'fh'], ['attr', 'attr']],
  },
  [Proc.MKDIR]: {
    name: 'MKDIR', args: [['dir', 'fh'], ['name', 'name'], ['mode', 'perm'], ['uid', 'u32'], ['gid', 'u32']],
    result: [['fh', 'fh'], ['attr', 'attr']],
  },
  [Proc.SYMLINK]: {
    name: 'SYMLINK', args: [['dir', 'fh'], ['name', 'name'], ['target', 'target'], ['uid', 'u32'], ['gid', 'u32']],
    result: [['fh', 'fh'], ['attr', 'attr']],
  },
  [Proc.MKNOD]: {
    name: 'MKNOD', args: [['dir', 'fh'], ['name', 'name'], ['mode', 'nodeMode'], ['rdev', 'u32'], ['uid', 'u32'], ['gid', 'u32']],
    result: [['fh', 'fh'], ['attr', 'attr']],
  },
  [Proc.REMOVE]: { name: 'REMOVE', args: [['dir', 'fh'], ['name', 'name']], result: [] },
  [Proc.RMDIR]: { name: 'RMDIR', args: [['dir', 'fh'], ['name', 'name']], result: [] },
  [Proc.RENAME]: {
    name: 'RENAME', args: [['fromDir', 'fh'], ['fromName', 'name'], ['toDir', 'fh'], ['toName', 'name'], ['flags', 'small']], result: [],
  },
  [Proc.LINK]: { name: 'LINK', args: [['fh', 'fh'], ['dir', 'fh'], ['name', 'name']], result: [['attr', 'attr']] },
  [Proc.READDIR]: {
    name: 'READDIR', args: [['dir', 'fh'], ['cookie', 'cookie'], ['count', 'count']], result: [['entries', 'dirents'], ['eof', 'bool']],
  },
  [Proc.READDIRPLUS]: {
    name: 'READDIRPLUS', args: [['dir', 'fh'], ['cookie', 'cookie'], ['count', 'count']], result: [['entries', 'direntsPlus'], ['eof', 'bool']],
  },
  [Proc.FSSTAT]: {
    name: 'FSSTAT', args: [['fh', 'fh']],
    result: [['bsize', 'uint'], ['blocks', 'uint'], ['bfree', 'uint'], ['bavail', 'uint'], ['files', 'uint'], ['ffree', 'uint'], ['namemax', 'uint']],
  },
  [Proc.FSINFO]: {
    name: 'FSINFO', args: [['fh', 'fh']], result: [['maxRead', 'uint'], ['maxWrite', 'uint'], ['maxFileSize', 'uint'], ['blockSize', 'uint']],
  },
  [Proc.PATHCONF]: { name: 'PATHCONF', args: [['fh', 'fh']], result: [['linkMax', 'uint'], ['nameMax', 'uint']] },
  [Proc.COMMIT]: { name: 'COMMIT', args: [['fh', 'fh']], result: [['verifier', 'verifier']] },
  [Proc.ATTACH]: { name: 'ATTACH', args: [['volume', 'volume']], result: [['fh', 'fh'], ['attr', 'attr']] },
  [Proc.GETXATTR]: { name: 'GETXATTR', args: [['fh', 'fh'], ['name', 'xname']], result: [['value', 'bytes']] },
  [Proc.SETXATTR]: { name: 'SETXATTR', args: [['fh', 'fh'], ['name', 'xname'], ['value', 'xvalue'], ['how', 'small']], result: [] },
  [Proc.LISTXATTR]: { name: 'LISTXATTR', args: [['fh', 'fh']], result: [['names', 'names']] },
  [Proc.REMOVEXATTR]: { name: 'REMOVEXATTR', args: [['fh', 'fh'], ['name', 'xname']], result: [] },
  [Proc.OPEN]: { name: 'OPEN', args: [['fh', 'fh']], result: [] },
  [Proc.CLOSE]: { name: 'CLOSE', args: [['fh', 'fh']], result: [] },
  [Proc.FALLOCATE]: {
    name: 'FALLOCATE', args: [['fh', 'fh'], ['offset', 'offset'], ['length', 'offset'], ['mode', 'small']], result: [['attr', 'attr']],
  },
  [Proc.SEEK]: { name: 'SEEK', args: [['fh', 'fh'], ['offset', 'offset'], ['whence', 'small']], result: [['offset', 'uint']] },
  [Proc.COPY_RANGE]: {
    name: 'COPY_RANGE', args: [['src', 'fh'], ['srcOffset', 'offset'], ['dst', 'fh'], ['dstOffset', 'offset'], ['length', 'offset']],
    result: [['copied', 'uint'], ['attr', 'attr']],
  },
  // `fh` names the volume; `count` numbers at most (the host may give fewer), each with its handle: first, first + 1, ...
  [Proc.RESERVE]: { name: 'RESERVE', args: [['fh', 'fh'], ['count', 'small']], result: [['first', 'uint'], ['handles', 'fhs']] },
  // `fh`: a handle RESERVE gave this VM, unused; `time`: the new inode's times and the directory's mtime and ctime.
  [Proc.CREATE_AT]: {
    name: 'CREATE_AT', args: [['dir', 'fh'], ['name', 'name'], ['mode', 'perm'], ['uid', 'u32'], ['gid', 'u32'], ['fh', 'fh'], ['time', 'time']],
    result: [['attr', 'attr']],
  },
  [Proc.MKDIR_AT]: {
    name: 'MKDIR_AT', args: [['dir', 'fh'], ['name', 'name'], ['mode', 'perm'], ['uid', 'u32'], ['gid', 'u32'], ['fh', 'fh'], ['time', 'time']],
    result: [['attr', 'attr']],
  },
  [Proc.SETATTR_AT]: { name: 'SETATTR_AT', args: [['fh', 'fh'], ['set', 'setattr'], ['time', 'time']], result: [['attr', 'attr']] },
  [Proc.REMOVE_AT]: { name: 'REMOVE_AT', args: [['dir', 'fh'], ['name', 'name'], ['time', 'time']], result: [] },
  [Proc.RENAME_AT]: {
    name: 'RENAME_AT', args: [['fromDir', 'fh'], ['fromName', 'name'], ['toDir', 'fh'], ['toName', 'name'], ['flags', 'small'], ['time', 'time']], result: [],
  },
} as const satisfies { readonly [P in Proc]: ProcDef };

type Defs = typeof PROCS;
type WireOf<F, M> = { -readonly [I in keyof F]: F[I] extends readonly [string, infer K extends keyof M] ? M[K] : never };

/** A procedure's arguments as they are on the wire (and as the host's handler takes them). */
export type ArgsOf<P extends Proc> = WireOf<Defs[P]['args'], ArgKinds>;
/** A procedure's results as they are on the wire (what the host's handler returns). */
export type ResultOf<P extends Proc> = WireOf<Defs[P]['result'], ResultKinds>;

/** "COPY_RANGE" -> "copyRange": the name of a procedure's handler and stub. */
export type MethodName<S extends string> = S extends `${infer A}_${infer B}` ? `${Lowercase<A>}${Capitalize<MethodName<B>>}` : Lowercase<S>;
export type MethodOf<P extends Proc> = MethodName<Defs[P]['name']>;

export function methodName(name: string): string {
  return name.toLowerCase().replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** The definition of a procedure number, or undefined (an unknown procedure). */
export function procDef(proc: number): ProcDef | undefined {
  return (PROCS as Partial<Record<number, ProcDef>>)[proc];
}

/** Every defined procedure number, ascending. */
export const PROC_NUMBERS: readonly Proc[] = Object.keys(PROCS).map(Number);

export const PROC_NAMES: Readonly<Record<number, string>> = Object.fromEntries(PROC_NUMBERS.map((p) => [p, PROCS[p].name]));

/** What serves the procedures: one function per procedure, named as its stub, taking its arguments in order. */
export type ProcHandlers = { readonly [P in Proc as MethodOf<P>]: (...args: ArgsOf<P>) => ResultOf<P> };
type AnyHandler = (...args: unknown[]) => unknown[];

/** Handlers by procedure number (made once: a request finds its handler by index). */
export function handlersByProc(h: ProcHandlers): Array<AnyHandler | undefined> {
  const byName = h as unknown as Record<string, AnyHandler>;
  const out: Array<AnyHandler | undefined> = [];
  for (const p of PROC_NUMBERS) out[p] = byName[methodName(PROCS[p].name)];
  return out;
}
