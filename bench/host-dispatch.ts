// The host's CPU per request, in-process: Dispatcher.call of the hot procedures straight into a
// store, no IPC, no codec. Three setups: no metadata publisher; the publisher with this VM's real
// table; and the same plus a second VM attaching the volume (its table is updated and the change
// log appended for it; its agent does not listen, so no request waits). CPU µs per call: mean of N, least of ROUNDS runs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { table } from '../src/cli/format.js';
import { Dispatcher } from '../src/host/dispatch.js';
import { openMetaTable, type OpenTable } from '../src/metadata-share/file.js';
import { MetaPublisher } from '../src/metadata-share/publisher.js';
import { Proc } from '../src/protocol/procs.js';
import { Store } from '../src/store/store.js';

const N = Number(process.env.PRISM_BENCH_HOST_N ?? 5000);
/** Each setup is run this many times afresh and the least per op kept: the machine is shared. */
const ROUNDS = Number(process.env.PRISM_BENCH_HOST_ROUNDS ?? 3);
const TABLE_SIZE = 64 << 20;
const SECRET = Buffer.alloc(32, 1);

type Setup = 'none' | 'meta' | 'meta2';
const SETUPS: Setup[] = ['none', 'meta', 'meta2'];
const OPS = ['create', 'lookup', 'lookup-miss', 'getattr', 'setattr', 'write4k', 'read4k', 'rename', 'mkdir', 'remove'] as const;
type Op = (typeof OPS)[number];

/** Calls here never wait (no listening agent): a promise would mean the bench measures something else. */
function sync(r: unknown[] | Promise<unknown[]>): unknown[] {
  if (r instanceof Promise) throw new Error('a request waited for an agent');
  return r;
}

function ok(d: Dispatcher, proc: Proc, args: unknown[]): unknown[] {
  return sync(d.call(proc, args));
}

/**
 * CPU µs per call of f(i) for i in [0, N): this process's CPU time (user + system, GC included), not
 * the wall clock, so that other work on a shared machine does not count.
 */
function time(f: (i: number) => void): number {
  const t0 = process.cpuUsage();
  for (let i = 0; i < N; i++) f(i);
  const t = process.cpuUsage(t0);
  return (t.user + t.system) / N;
}

function runSetup(setup: Setup, work: string): Record<Op, number> {
  const dir = path.join(work, setup);
  const store = Store.open(path.join(dir, 'store'));
  store.createVolume('v');
  store.commit();
  const tables: OpenTable[] = [];
  const pub = new MetaPublisher();
  const meta = setup !== 'none';
  const d = new Dispatcher(store, { name: 'vm', volumes: ['v'] }, SECRET, {
    commit: async () => store.commitDurable(), verifier: Buffer.alloc(8), meta: meta ? pub.sink('vm') : undefined,
  });
  const vms = setup === 'meta2' ? ['vm', 'peer'] : meta ? ['vm'] : [];
  for (const name of vms) {
    const t = openMetaTable(path.join('/dev/shm', `prism-bench-host-${process.pid}-${setup}-${name}`), TABLE_SIZE);
    tables.push(t);
    // Touch every page first: a fresh table's page faults are paid once per page, not per request,
    // and left in they made the first procedure timed (CREATE) depend on the machine's memory pressure.
    const pages = new Uint8Array(t.buffer);
    for (let i = 0; i < pages.length; i += 4096) pages[i] = pages[i]!;
    const key = name === 'vm' ? d.key : new Dispatcher(store, { name, volumes: ['v'] }, SECRET, { commit: async () => {}, verifier: Buffer.alloc(8) }).key;
    // Not listening (lease 0): changes are logged for it, never waited for.
    pub.add({ name, volumes: ['v'], key, table: t.table, listener: { read: () => ({ applied: 0, leaseMs: 0, fenceAck: 0, polls: false }) }, wake: () => {} });
  }
  const [root] = ok(d, Proc.ATTACH, ['v']);
  const [dfh] = ok(d, Proc.MKDIR, [root, Buffer.from('d'), 0o755, 0, 0]);
  const names = Array.from({ length: N }, (_, i) => Buffer.from(`f${i}`));
  const renamed = Array.from({ length: N }, (_, i) => Buffer.from(`g${i}`));
  const missing = Array.from({ length: N }, (_, i) => Buffer.from(`x${i}`));
  const dirs = Array.from({ length: N }, (_, i) => Buffer.from(`d${i}`));
  const page = Buffer.alloc(4096, 1);
  const fhs: unknown[] = [];
  const r = {} as Record<Op, number>;
  r.create = time((i) => { fhs.push(ok(d, Proc.CREATE, [dfh, names[i], 0o644, 0, 0, true])[0]); });
  r.lookup = time((i) => { ok(d, Proc.LOOKUP, [dfh, names[i]]); });
  r['lookup-miss'] = time((i) => { try { ok(d, Proc.LOOKUP, [dfh, missing[i]]); } catch { /* ENOENT: the point */ } });
  r.getattr = time((i) => { ok(d, Proc.GETATTR, [fhs[i]]); });
  r.setattr = time((i) => { ok(d, Proc.SETATTR, [fhs[i], [0o600, null, null, null, null, null]]); });
  r.write4k = time((i) => { ok(d, Proc.WRITE, [fhs[i], 0, page, 0]); });
  r.read4k = time((i) => { ok(d, Proc.READ, [fhs[i], 0, 4096]); });
  r.rename = time((i) => { ok(d, Proc.RENAME, [dfh, names[i], dfh, renamed[i], 0]); });
  r.mkdir = time((i) => { ok(d, Proc.MKDIR, [dfh, dirs[i], 0o755, 0, 0]); });
  r.remove = time((i) => { ok(d, Proc.REMOVE, [dfh, renamed[i]]); });
  store.close();
  for (const t of tables) t.close();
  for (const name of vms) fs.rmSync(path.join('/dev/shm', `prism-bench-host-${process.pid}-${setup}-${name}`), { force: true });
  return r;
}

export async function run() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-bench-host-'));
  const results = {} as Record<Setup, Record<Op, number>>;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const s of SETUPS) {
        const r = runSetup(s, path.join(work, `${round}`));
        const best = results[s];
        results[s] = best ? Object.fromEntries(OPS.map((op) => [op, Math.min(best[op], r[op])])) as Record<Op, number> : r;
      }
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  const rows = OPS.map((op) => [op, ...SETUPS.map((s) => results[s][op].toFixed(1))]);
  return {
    results: { n: N, rounds: ROUNDS, cpuUsPerCall: results },
    table: `host CPU per request, in-process Dispatcher.call, CPU µs (mean of ${N}, least of ${ROUNDS} rounds)\n` +
      table([['op', 'no publisher', 'publisher', 'publisher, 2 VMs'], ...rows]),
  };
}
