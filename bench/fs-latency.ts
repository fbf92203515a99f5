// Per-operation latency of the fs benchmark: one synchronous syscall loop of N per operation, one
// thread, timed with hrtime around each call. The file systems under test run in other processes, so
// this loop measures the syscall as an application sees it. Setup and cleanup are not timed.
import fs from 'node:fs';
import path from 'node:path';

/** Microseconds over N calls; for Prism also the RPCs the agent sent per call. */
export interface Latency { n: number; p50: number; p99: number; mean: number; rpcsPerCall?: number }

/** The operations, in the order measured (also the table's rows). */
export const LATENCY_OPS = [
  'negative lookup', 'stat (uncached entry)', 'open+close', 'create', 'unlink', 'mkdir', 'rename',
  'setattr (chmod)', 'setattr (utime)', '4 KiB pwrite', '4 KiB pwrite + fdatasync', '4 KiB pread (uncached)',
] as const;
export type LatencyOp = typeof LATENCY_OPS[number];

export interface LatencyInput {
  /** A fresh directory on the target to work in (removed at the end). */
  dir: string;
  /** An existing file of `bigBytes` bytes, for pwrite and pread. */
  big: string;
  bigBytes: number;
  n: number;
  /** Empties the kernel's caches: '2' dentries and inodes, '3' also the page cache. */
  dropCaches(what: '2' | '3'): void;
  progress(op: string): void;
  /** The agent's RPC count so far (`prism agent stats`), where the target has one. */
  rpcs?(): number | undefined;
}

/** How many synced page writes are timed (at most: one per page the other loops use). */
const SYNCED_WRITES = 500;

function summarize(us: Float64Array): Latency {
  const s = Float64Array.from(us).sort();
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * (s.length - 1)))]!;
  let sum = 0;
  for (const v of s) sum += v;
  return { n: s.length, p50: at(0.5), p99: at(0.99), mean: sum / s.length };
}

/** Calls `fn(i)` for i < n, timing each call alone. */
function timedLoop(n: number, fn: (i: number) => void): Latency {
  const us = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    fn(i);
    us[i] = Number(process.hrtime.bigint() - t) / 1000;
  }
  return summarize(us);
}

/** A fixed shuffle (the same on every target), so page offsets are visited in random order. */
function shuffled(n: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  let x = 4242;
  for (let i = n - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    const j = x % (i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

export function measureLatency(o: LatencyInput): Record<LatencyOp, Latency> {
  const { dir, n } = o;
  // The RPC counter is read outside the timed calls, so asking for it costs no latency.
  const loop = (count: number, fn: (i: number) => void): Latency => {
    const before = o.rpcs?.();
    const l = timedLoop(count, fn);
    const after = o.rpcs?.();
    if (before !== undefined && after !== undefined) l.rpcsPerCall = (after - before) / count;
    return l;
  };
  const out = {} as Record<LatencyOp, Latency>;
  const files = path.join(dir, 's'), created = path.join(dir, 'c'), dirs = path.join(dir, 'm');
  for (const d of [dir, files, created, dirs]) fs.mkdirSync(d);
  const f = (i: number) => path.join(files, `f${i}`);
  for (let i = 0; i < n; i++) fs.writeFileSync(f(i), 'x');

  o.progress('negative lookup');
  // A distinct name each time: a negative entry the kernel cached would not reach the file system.
  out['negative lookup'] = loop(n, (i) => { fs.statSync(path.join(files, `nx${i}`), { throwIfNoEntry: false }); });

  // Dentries and inodes dropped: each stat makes the file system look the name up.
  o.dropCaches('2');
  o.progress('stat');
  out['stat (uncached entry)'] = loop(n, (i) => { fs.lstatSync(f(i)); });
  o.progress('open+close');
  out['open+close'] = loop(n, (i) => { fs.closeSync(fs.openSync(f(i), 'r')); });

  o.progress('create');
  out.create = loop(n, (i) => { fs.closeSync(fs.openSync(path.join(created, `c${i}`), 'wx')); });
  o.progress('unlink');
  out.unlink = loop(n, (i) => { fs.unlinkSync(path.join(created, `c${i}`)); });
  o.progress('mkdir');
  out.mkdir = loop(n, (i) => { fs.mkdirSync(path.join(dirs, `m${i}`)); });
  for (let i = 0; i < n; i++) fs.rmdirSync(path.join(dirs, `m${i}`));
  o.progress('rename');
  out.rename = loop(n, (i) => { fs.renameSync(f(i), path.join(files, `r${i}`)); });
  const r = (i: number) => path.join(files, `r${i}`);
  o.progress('chmod');
  out['setattr (chmod)'] = loop(n, (i) => { fs.chmodSync(r(i), 0o600); });
  o.progress('utime');
  const when = new Date(1_700_000_000_000);
  out['setattr (utime)'] = loop(n, (i) => { fs.utimesSync(r(i), when, when); });

  // Pages spread over the file, at least 64 KiB apart, so one read's readahead never covers another.
  const pages = Math.floor(o.bigBytes / 4096);
  const stride = Math.max(16, Math.floor(pages / n));
  const count = Math.min(n, Math.floor(pages / stride));
  const order = shuffled(count);
  const page = Buffer.alloc(4096, 0x5a);
  o.progress('pwrite');
  let fd = fs.openSync(o.big, 'r+');
  try {
    out['4 KiB pwrite'] = loop(count, (i) => { fs.writeSync(fd, page, 0, 4096, (order[i]! * stride + 1) * 4096); });
    fs.fsyncSync(fd);
    // A database's pattern: one page overwritten, then made durable (fewer: each waits for a disk).
    o.progress('pwrite + fdatasync');
    out['4 KiB pwrite + fdatasync'] = loop(Math.min(count, SYNCED_WRITES), (i) => {
      fs.writeSync(fd, page, 0, 4096, (order[i]! * stride + 2) * 4096);
      fs.fdatasyncSync(fd);
    });
  } finally {
    fs.closeSync(fd);
  }
  o.dropCaches('3');
  o.progress('pread');
  fd = fs.openSync(o.big, 'r');
  try {
    out['4 KiB pread (uncached)'] = loop(count, (i) => { fs.readSync(fd, page, 0, 4096, order[i]! * stride * 4096); });
  } finally {
    fs.closeSync(fd);
  }
  fs.rmSync(dir, { recursive: true });
  return out;
}
