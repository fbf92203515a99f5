// What an agent counts, in shared memory so every thread of the agent can add to it and
// `prism agent stats` can be answered without stopping the I/O thread.
import { PROC_NAMES } from '../protocol/procs.js';

export const COUNTER_NAMES = [
  'lookupsLocal', 'lookupMisses', 'getattrsLocal', 'getattrMisses', 'xattrsLocal', 'rpcs', 'invalidations', 'logRecordsLost', 'replays',
  // Fences of the metadata table recovered from (the host stopped waiting for us), and whole kernel caches dropped.
  'fencesRecovered', 'cacheDrops',
  // Nodes the kernel was asked to prune (--writeback-cache: another VM changed them; cache-notifier.ts).
  'prunes',
  // Metadata changes answered by the agent and sent behind (REMOVE; SETATTR of mode, owner, times): docs/agent.md.
  'postedMeta',
  // FLUSH requests (closes the kernel tells the agent of; none once they are turned off: docs/agent.md).
  'flushes',
  // Times the agent waited for the replies of its posted calls (a close, an fsync, a table answer they change).
  'settles',
  // The ivshmem doorbell (docs/doorbell.md): rings sent to the host, and waits for a reply ended by the host's interrupt.
  'doorbellRings',
  'doorbellInterrupts',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];

const PROCS = 128;

/** Counters that are an answer of the metadata table (true) or a miss of it (false). */
const META_ANSWER: Partial<Record<CounterName, boolean>> = { lookupsLocal: true, getattrsLocal: true, xattrsLocal: true, lookupMisses: false, getattrMisses: false };

export interface CounterSnapshot extends Record<CounterName, number> {
  /** RPCs sent, by procedure name. */
  rpcsByProc: Record<string, number>;
}

export class AgentCounters {
  private readonly f: Float64Array;

  /** Counters over `buffer` (shared between threads), or fresh ones. */
  constructor(readonly buffer: SharedArrayBuffer = new SharedArrayBuffer((COUNTER_NAMES.length + PROCS) * 8)) {
    this.f = new Float64Array(buffer);
  }

  /** Told of each answer of the metadata table and each miss (the host counts them: docs/shm-layout.md). */
  onMeta: ((hit: boolean) => void) | undefined;

  add(name: CounterName, n = 1): void {
    this.f[COUNTER_NAMES.indexOf(name)]! += n;
    const hit = META_ANSWER[name];
    if (hit !== undefined) this.onMeta?.(hit);
  }

  rpc(proc: number): void {
    this.f[COUNTER_NAMES.indexOf('rpcs')]! += 1;
    if (proc >= 0 && proc < PROCS) this.f[COUNTER_NAMES.length + proc]! += 1;
  }

  get(name: CounterName): number {
    return this.f[COUNTER_NAMES.indexOf(name)]!;
  }

  snapshot(): CounterSnapshot {
    const s = Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, this.f[i]!])) as Record<CounterName, number>;
    const rpcsByProc: Record<string, number> = {};
    for (let p = 0; p < PROCS; p++) {
      const n = this.f[COUNTER_NAMES.length + p]!;
      if (n > 0) rpcsByProc[PROC_NAMES[p] ?? String(p)] = n;
    }
    return { ...s, rpcsByProc };
  }
}
