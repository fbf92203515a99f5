// The agent's side of each procedure, derived from PROCS: one typed function per procedure
// (`rpc.lookup(dir, name)` resolves to [fh, attr]) whose results are decoded by kind (wire.ts) and
// copied out of the channel in the call's own `take`, while views of shared memory are still valid.
import type { Attr, DirEntry } from '../posix/types.js';
import { PROCS, PROC_NUMBERS, methodName, type ArgsOf, type MethodOf, type Proc, type ProcDef, type ResultKind, type ResultKinds } from './procs.js';
import { attrFromWire, direntFromWire, direntPlusFromWire, verifierFromWire, type DirEntryPlus } from './wire.js';

/** What the agent gets for each kind of result. */
export interface DecodedKinds {
  fh: Buffer; fhs: Buffer[]; bytes: Buffer; data: Buffer; verifier: Buffer; attr: Attr; uint: number; bool: boolean;
  names: Buffer[]; dirents: DirEntry[]; direntsPlus: DirEntryPlus[];
}

type Decoded<F> = { -readonly [I in keyof F]: F[I] extends readonly [string, infer K extends ResultKind] ? DecodedKinds[K] : never };
/** A procedure's results as the agent gets them. */
export type ReplyOf<P extends Proc> = Decoded<(typeof PROCS)[P]['result']>;

/** One function per procedure, named after it (`copyRange` for COPY_RANGE). */
export type Stubs = { readonly [P in Proc as MethodOf<P>]: (...args: ArgsOf<P>) => Promise<ReplyOf<P>> };

/** How the stubs reach the host: a link's call, `take` run on the results while they are valid. */
export type Caller = <T>(proc: Proc, args: unknown[], take: (r: unknown[]) => T) => Promise<T>;

const copy = (x: Uint8Array): Buffer => Buffer.from(x);
const same = <T>(x: T): T => x;

const DECODE: { [K in ResultKind]: (x: ResultKinds[K]) => DecodedKinds[K] } = {
  fh: copy, fhs: (x) => x.map(copy), bytes: copy, data: copy, verifier: verifierFromWire, attr: attrFromWire, uint: same, bool: same,
  names: (x) => x.map(copy), dirents: (x) => x.map(direntFromWire), direntsPlus: (x) => x.map(direntPlusFromWire),
};

const NONE: unknown[] = [];

function decoder(def: ProcDef): (r: unknown[]) => unknown[] {
  const fns = def.result.map(([, kind]) => DECODE[kind] as (x: unknown) => unknown);
  const n = fns.length;
  if (n === 0) return () => NONE;
  return (r) => {
    const out = new Array<unknown>(n);
    for (let i = 0; i < n; i++) out[i] = fns[i]!(r[i]);
    return out;
  };
}

/** Decoders by procedure number, made once. */
const DECODERS: Array<(r: unknown[]) => unknown[]> = [];
for (const p of PROC_NUMBERS) DECODERS[p] = decoder(PROCS[p]);

/** Decode results that came another way (a posted call's, already copied out of the channel). */
export function decodeReply<P extends Proc>(proc: P, r: unknown[]): ReplyOf<P> {
  return DECODERS[proc]!(r) as ReplyOf<P>;
}

export function makeStubs(call: Caller): Stubs {
  const stubs: Record<string, (...args: unknown[]) => Promise<unknown[]>> = {};
  for (const proc of PROC_NUMBERS) {
    const take = DECODERS[proc]!;
    stubs[methodName(PROCS[proc].name)] = (...args) => call(proc, args, take);
  }
  // Built by name from the same table the type is mapped from.
  return stubs as unknown as Stubs;
}
