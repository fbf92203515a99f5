// What a VM has asked of the host: calls by procedure, errors by code, bytes of data each way, and
// calls per second over the last second (`prism host status`).
import { isPrismError } from '../errors.js';
import { PROC_NAMES, PROCS } from '../protocol/procs.js';
import type { CallObserver } from './metrics.js';

export interface VmCountersView {
  calls: number;
  callsPerSecond: number;
  errors: number;
  /** Bytes of data arguments (WRITE's) and of data results (READ's, READDIR's...). */
  bytesIn: number;
  bytesOut: number;
  byProcedure: Record<string, number>;
  errorsByCode: Record<string, number>;
  /** Questions its agent answered from its metadata table without an RPC, and those it could not (as the guest reports them). */
  metaHits: number;
  metaMisses: number;
}

export class VmCounters {
  /** Told of every call when the host exports metrics (src/host/metrics.ts). */
  observer: CallObserver | undefined;
  private calls = 0;
  private errors = 0;
  private bytesIn = 0;
  private bytesOut = 0;
  private readonly byProc = new Map<number, number>();
  private readonly byCode = new Map<string, number>();
  private lastCalls = 0;
  private lastTick = Date.now();
  private rate = 0;
  private meta = { hits: 0, misses: 0 };
  private metaSeen: { hits: number; misses: number } | undefined;

  constructor(readonly vm: string) {}

  /** A call arrives; returns its start time for done(). */
  started(proc: number): number {
    this.calls++;
    this.byProc.set(proc, (this.byProc.get(proc) ?? 0) + 1);
    return this.observer ? performance.now() : 0;
  }

  /** Its reply goes out (result), or it failed (error). */
  done(proc: number, args: unknown[], start: number, result: unknown[] | undefined, error?: unknown): void {
    const def = PROCS[proc as keyof typeof PROCS] as { args: Fields; result: Fields } | undefined;
    const bytesIn = dataBytes(def?.args, args), bytesOut = result ? dataBytes(def?.result, result) : 0;
    this.bytesIn += bytesIn;
    this.bytesOut += bytesOut;
    let code: string | undefined;
    if (!result) {
      this.errors++;
      code = isPrismError(error) ? error.code : 'EIO';
      this.byCode.set(code, (this.byCode.get(code) ?? 0) + 1);
    }
    this.observer?.call(this.vm, proc, (performance.now() - start) / 1000, code, bytesIn, bytesOut);
  }

  /**
   * The guest's free-running u32 counts of its metadata table's answers (a word of its region): added
   * up as deltas, so they wrap and survive new agents. A count that goes back (a new region, a lying
   * guest) starts over from there; a guest can only make its own figures wrong.
   */
  metaAnswers(now: { hits: number; misses: number }): void {
    const seen = this.metaSeen ?? now;
    const delta = (a: number, b: number) => { const d = (a - b) >>> 0; return d < 2 ** 31 ? d : 0; };
    this.meta.hits += delta(now.hits, seen.hits);
    this.meta.misses += delta(now.misses, seen.misses);
    this.metaSeen = now;
  }

  /** Once a second or so: the rate over the time since the last tick. */
  tick(now = Date.now()): void {
    const dt = (now - this.lastTick) / 1000;
    if (dt <= 0) return;
    this.rate = (this.calls - this.lastCalls) / dt;
    this.lastCalls = this.calls;
    this.lastTick = now;
  }

  view(): VmCountersView {
    return {
      calls: this.calls, callsPerSecond: Math.round(this.rate * 10) / 10, errors: this.errors, bytesIn: this.bytesIn, bytesOut: this.bytesOut,
      byProcedure: Object.fromEntries([...this.byProc].map(([p, n]) => [PROC_NAMES[p] ?? String(p), n])),
      errorsByCode: Object.fromEntries(this.byCode), metaHits: this.meta.hits, metaMisses: this.meta.misses,
    };
  }
}

type Fields = readonly (readonly [string, string])[];

/** The bytes of a procedure's `data` fields (WRITE's argument, READ's result). */
function dataBytes(fields: Fields | undefined, values: unknown[]): number {
  let n = 0;
  fields?.forEach(([, kind], i) => { const v = values[i]; if (kind === 'data' && v instanceof Uint8Array) n += v.byteLength; });
  return n;
}
