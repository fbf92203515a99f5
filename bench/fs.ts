// The file-system benchmark: one workload, run once on each target in the same run, so the numbers
// compare as ratios. Targets: Prism over shared memory and over TCP (host and agent as separate
// processes), the memfs floor (the agent's in-memory FileSystem behind the same FUSE session, in its
// own process: what the kernel and the agent cost without any RPC), bindfs over ext4 (a FUSE peer),
// ext4 on a loop-mounted image (the virtual-disk analog) and tmpfs. Phases: the 20k-file workload,
// a directory listing (cold and warm), per-operation latency (lib: fs-latency.ts) and a C build
// (c-project.ts); at the end, the resident memory of the processes serving each FUSE target.
// Needs root (mounts); a target or phase that cannot run is reported with the reason.
// PRISM_BENCH_QUICK=1 runs a reduced variant (2k files, 32 MiB, 200 calls per operation);
// PRISM_BENCH_TARGETS=shm,memfs runs only the targets named.
// PRISM_BENCH_AGENT_ARGS="--writeback-cache" adds options to the Prism agents (an A/B of an agent option).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { table } from '../src/cli/format.js';
import type { AgentStats } from '../src/guest-agent/stats.js';
import { isMounted } from '../src/native/mount.js';
import { buildUnavailable, make, writeProject } from './c-project.js';
import { sh, waitFor } from './processes.js';
import { LATENCY_OPS, measureLatency, type Latency, type LatencyOp } from './fs-latency.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const prismBin = path.resolve(here, '../../bin/prism.js');
const QUICK = process.env.PRISM_BENCH_QUICK === '1';
const DIRS = QUICK ? 20 : 200;
const FILES_PER_DIR = 100;
const FILES = DIRS * FILES_PER_DIR;
const SEQ_BYTES = (QUICK ? 32 : 256) << 20;
const RANDOM_WRITES = QUICK ? 512 : 4096;
const LATENCY_N = QUICK ? 200 : 2000;
const BUILD_MODULES = QUICK ? 24 : 120;

const P = {
  create: `create ${FILES / 1000}k files`, stat1: 'stat all (1st)', stat2: 'stat all (2nd)', read: 'read all',
  listCold: 'list tree, cold (find)', listWarm: 'list tree, warm (find)',
  seqWrite: `write ${SEQ_BYTES >> 20} MiB`, seqRead: `read ${SEQ_BYTES >> 20} MiB`, random: '4 KiB random writes',
  remove: 'remove the tree', build: `build (${BUILD_MODULES + 1} C files, make -j2)`, rebuild: 'make clean, make -j2 again',
};

/** Processes whose memory is reported at the end (role -> pid). */
type Pids = Record<string, number>;
interface Target { name: string; mountpoint: string; pids?: Pids; rpcs?(): number | undefined; teardown(): Promise<void> }
/** Seconds per phase. */
type Phases = Record<string, number>;
interface Memory { rssMiB: number; peakMiB: number }
interface TargetResult {
  phases: Phases;
  latency: Partial<Record<LatencyOp, Latency>>;
  /** Resident memory at the end of the run, and its peak, per serving process. */
  memory: Record<string, Memory>;
  /** Phases that did not run, with the reason. */
  notes: string[];
}
type Result = TargetResult | { skipped: string };

let where = '';
function progress(msg: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${msg && `${where} ${msg}`}`);
}

/** Waits for a child we started to exit; kills it (by its pid) if it has not within 10 s. */
async function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await gone;
  clearTimeout(timer);
}

// ---- targets -------------------------------------------------------------------------------------

async function tmpfs(work: string): Promise<Target> {
  const mp = path.join(work, 'tmpfs');
  fs.mkdirSync(mp);
  sh('mount', ['-t', 'tmpfs', '-o', 'size=2G', 'tmpfs', mp]);
  return { name: 'tmpfs', mountpoint: mp, teardown: async () => { sh('umount', [mp]); } };
}

async function ext4Loop(work: string): Promise<Target> {
  const img = path.join(work, 'ext4.img');
  const mp = path.join(work, 'ext4');
  fs.mkdirSync(mp);
  sh('truncate', ['-s', '2G', img]);
  sh('mkfs.ext4', ['-q', '-F', img]);
  sh('mount', ['-o', 'loop', img, mp]);
  return { name: 'ext4 (loop image)', mountpoint: mp, teardown: async () => { sh('umount', [mp]); fs.rmSync(img); } };
}

async function bindfs(work: string): Promise<Target> {
  const src = path.join(work, 'bindfs-src');
  const mp = path.join(work, 'bindfs');
  fs.mkdirSync(src);
  fs.mkdirSync(mp);
  sh('bindfs', [src, mp]);
  return { name: 'bindfs over ext4', mountpoint: mp, teardown: async () => { sh('umount', [mp]); fs.rmSync(src, { recursive: true, force: true }); } };
}

async function memfs(work: string): Promise<Target> {
  const mp = path.join(work, 'memfs');
  fs.mkdirSync(mp);
  const server = spawn(process.execPath, [path.join(here, 'memfs-serve.js'), mp], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  server.stdout!.on('data', (d) => { out += d; });
  try {
    await waitFor('memfs start', () => /^ready$/m.test(out) && isMounted(mp), server);
  } catch (e) {
    server.kill('SIGKILL');
    throw e;
  }
  return {
    name: 'memfs floor', mountpoint: mp, pids: { agent: server.pid! },
    teardown: async () => {
      // The server exits when its mount goes away.
      sh('umount', [mp]);
      await exited(server);
    },
  };
}

async function prism(work: string, transport: 'shm' | 'tcp'): Promise<Target> {
  const base = path.join(work, `prism-${transport}`);
  const store = path.join(base, 'store');
  const mp = path.join(base, 'mnt');
  fs.mkdirSync(mp, { recursive: true });
  sh(process.execPath, [prismBin, '--store', store, 'volume', 'create', 'bench']);
  const vm = `bench${process.pid}${transport}`;
  const host = spawn(process.execPath, [prismBin, '--store', store, 'host', 'serve', '--vm', `${vm}=bench`, '--tcp', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  host.stdout!.on('data', (d) => { out += d; });
  await waitFor('host start', () => /^ready$/m.test(out), host);
  const port = /listening on [^:]+:(\d+)/.exec(out)![1]!;
  const how = transport === 'shm' ? ['--shm', `/dev/shm/prism-${vm}`] : ['--tcp', `127.0.0.1:${port}`, '--token-file', path.join(store, 'vms', `${vm}.token`)];
  const extra = (process.env.PRISM_BENCH_AGENT_ARGS ?? '').split(/\s+/).filter((a) => a !== '');
  const agent = spawn(process.execPath, [prismBin, 'agent', 'mount', '--foreground', '--volume', 'bench', ...how, ...extra, mp], { stdio: 'inherit' });
  await waitFor('agent mount', () => isMounted(mp), agent);
  return {
    name: `Prism over ${transport === 'shm' ? 'shared memory' : 'TCP'}`, mountpoint: mp,
    pids: { agent: agent.pid!, host: host.pid! },
    rpcs: () => {
      const r = spawnSync(process.execPath, [prismBin, 'agent', 'stats', mp, '--json'], { encoding: 'utf8' });
      if (r.status !== 0) return undefined;
      return (JSON.parse(r.stdout) as AgentStats).counters.rpcs;
    },
    teardown: async () => {
      sh(process.execPath, [prismBin, 'agent', 'umount', mp]);
      await exited(agent);
      host.kill('SIGTERM');
      await exited(host);
      for (const f of [`/dev/shm/prism-${vm}`, `/dev/shm/prism-${vm}-meta`]) fs.rmSync(f, { force: true });
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
}

// ---- the workload --------------------------------------------------------------------------------

function dropCaches(what: '2' | '3' = '3'): void {
  try { fs.writeFileSync('/proc/sys/vm/drop_caches', what); } catch { /* not root: reads may be cached */ }
}

/** VmRSS and VmHWM of a process, in MiB. */
function memoryOf(pid: number): Memory | undefined {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
    return { rssMiB: kib('VmRSS') / 1024, peakMiB: kib('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

/** Deterministic file sizes (512 B - 8 KiB) and distinct contents, the same for every target. */
function fileSet(): { sizes: number[]; pool: Buffer } {
  let x = 12345;
  const sizes: number[] = [];
  for (let i = 0; i < FILES; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    sizes.push(512 + (x % 7681));
  }
  return { sizes, pool: crypto.randomBytes(16 << 20) };
}

function timed(phases: Phases, name: string, fn: () => void): void {
  const t = performance.now();
  fn();
  phases[name] = (performance.now() - t) / 1000;
}

/** Runs a group of phases that may fail on a target without spoiling the rest of its run. */
function optional(r: TargetResult, what: string, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    r.notes.push(`${what} failed: ${(e as Error).message}`);
  }
}

function workload(root: string, files: { sizes: number[]; pool: Buffer }, r: TargetResult, target: Target): void {
  const phases = r.phases;
  const dir = path.join(root, 'bench');
  fs.mkdirSync(dir);
  const paths: string[] = [];
  for (let d = 0; d < DIRS; d++) for (let f = 0; f < FILES_PER_DIR; f++) paths.push(path.join(dir, `d${d}`, `f${f}.dat`));
  progress('create');
  timed(phases, P.create, () => {
    for (let d = 0; d < DIRS; d++) fs.mkdirSync(path.join(dir, `d${d}`));
    let at = 0;
    paths.forEach((p, i) => {
      const n = files.sizes[i]!;
      if (at + n > files.pool.length) at = 0;
      const data = files.pool.subarray(at, at + n);
      data.writeUInt32LE(i, 0); // distinct files (no dedup between them)
      fs.writeFileSync(p, data);
      at += n;
    });
  });
  progress('stat');
  timed(phases, P.stat1, () => { for (const p of paths) fs.lstatSync(p); });
  timed(phases, P.stat2, () => { for (const p of paths) fs.lstatSync(p); });
  progress('read');
  timed(phases, P.read, () => { for (const p of paths) fs.readFileSync(p); });

  // Listing: find reads every directory (and needs no stat of the files: d_type says they are files).
  optional(r, 'listing', () => {
    const find = () => {
      const x = spawnSync('find', [dir], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
      if (x.status !== 0) throw new Error(`find: ${(x.stderr || x.error?.message || '').trim()}`);
    };
    dropCaches();
    progress('list (cold)');
    timed(phases, P.listCold, find);
    progress('list (warm)');
    timed(phases, P.listWarm, find);
  });

  const big = path.join(dir, 'big');
  const chunk = crypto.randomBytes(1 << 20);
  progress('sequential write');
  timed(phases, P.seqWrite, () => {
    const fd = fs.openSync(big, 'w');
    for (let off = 0; off < SEQ_BYTES; off += chunk.length) { chunk.writeUInt32LE(off, 0); fs.writeSync(fd, chunk, 0, chunk.length, off); }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  });
  dropCaches();
  progress('sequential read');
  timed(phases, P.seqRead, () => {
    const fd = fs.openSync(big, 'r');
    const buf = Buffer.allocUnsafe(1 << 20);
    for (let off = 0; off < SEQ_BYTES; off += buf.length) fs.readSync(fd, buf, 0, buf.length, off);
    fs.closeSync(fd);
  });
  progress('random writes');
  timed(phases, P.random, () => {
    const fd = fs.openSync(big, 'r+');
    const page = crypto.randomBytes(4096);
    // An LCG in 32-bit integer arithmetic (a float product loses the low bits: the sequence this
    // replaced hit 829 distinct pages of 4,096 writes), its high bits as the page.
    let x = 777;
    for (let i = 0; i < RANDOM_WRITES; i++) {
      x = (Math.imul(x, 1103515245) + 12345) & 0x7fffffff;
      fs.writeSync(fd, page, 0, 4096, ((x >>> 8) % (SEQ_BYTES / 4096)) * 4096);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  });

  // Per-operation latency, with the 20k files still there (a volume in use, not an empty one).
  optional(r, 'latency', () => {
    r.latency = measureLatency({
      dir: path.join(root, 'lat'), big, bigBytes: SEQ_BYTES, n: LATENCY_N, dropCaches,
      progress: (op) => progress(`latency: ${op}`), rpcs: target.rpcs,
    });
  });

  progress('remove');
  timed(phases, P.remove, () => fs.rmSync(dir, { recursive: true }));

  const why = buildUnavailable();
  if (why) r.notes.push(`build skipped: ${why}`);
  else {
    optional(r, 'build', () => {
      const proj = path.join(root, 'c-project');
      writeProject(proj, BUILD_MODULES);
      progress('build');
      timed(phases, P.build, () => make(proj, ['-j2']));
      progress('rebuild');
      timed(phases, P.rebuild, () => { make(proj, ['clean']); make(proj, ['-j2']); });
      const out = spawnSync(path.join(proj, 'app'), { encoding: 'utf8' });
      if (out.status !== 0) throw new Error(`the built program failed: ${out.stderr}`);
      fs.rmSync(proj, { recursive: true });
    });
  }
  progress('');
}

// ---- the run -------------------------------------------------------------------------------------

/**
 * PRISM_BENCH_TARGETS: a comma-separated subset (shm, tcp, memfs, bindfs, ext4, tmpfs) for a quick A/B;
 * ratios against a target left out show as missing.
 */
function chosen(name: string): boolean {
  const only = process.env.PRISM_BENCH_TARGETS;
  if (!only) return true;
  const key: Record<string, string> = { [SHM]: 'shm', [TCP]: 'tcp', [MEMFS]: 'memfs', [BINDFS]: 'bindfs', [EXT4]: 'ext4', tmpfs: 'tmpfs' };
  return only.split(',').map((s) => s.trim()).includes(key[name]);
}

const SHM = 'Prism over shared memory', TCP = 'Prism over TCP', MEMFS = 'memfs floor', BINDFS = 'bindfs over ext4', EXT4 = 'ext4 (loop image)';

export async function run() {
  if (process.getuid?.() !== 0) throw new Error('the fs benchmark mounts file systems: run it as root');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-bench-fs-'));
  const files = fileSet();
  const all: Array<[string, () => Promise<Target>]> = [
    [SHM, () => prism(work, 'shm')],
    [TCP, () => prism(work, 'tcp')],
    [MEMFS, () => memfs(work)],
    [BINDFS, () => bindfs(work)],
    [EXT4, () => ext4Loop(work)],
    ['tmpfs', () => tmpfs(work)],
  ];
  const makers = all.filter(([name]) => chosen(name));
  const results: Record<string, Result> = {};
  for (const [i, [name, setup]] of makers.entries()) {
    where = `[${i + 1}/${makers.length}] ${name}:`;
    progress('setting up');
    let target: Target;
    try {
      target = await setup();
    } catch (e) {
      results[name] = { skipped: (e as Error).message };
      continue;
    }
    const r: TargetResult = { phases: {}, latency: {}, memory: {}, notes: [] };
    results[name] = r;
    try {
      workload(target.mountpoint, files, r, target);
      for (const [role, pid] of Object.entries(target.pids ?? {})) {
        const m = memoryOf(pid);
        if (m) r.memory[role] = m;
      }
    } finally {
      progress('tearing down');
      await target.teardown();
      progress('');
    }
  }
  fs.rmSync(work, { recursive: true, force: true });
  const config = { files: FILES, seqBytes: SEQ_BYTES, randomWrites: RANDOM_WRITES, latencyN: LATENCY_N, buildModules: BUILD_MODULES, quick: QUICK };
  return { results: { config, targets: results }, table: render(results) };
}

// ---- the table -----------------------------------------------------------------------------------

const RATE: Record<string, number> = { [P.seqWrite]: SEQ_BYTES / 1e6, [P.seqRead]: SEQ_BYTES / 1e6 };
const TOTAL = 'total (all timed phases)';

function ran(results: Record<string, Result>, name: string): TargetResult | undefined {
  const r = results[name];
  return r && !('skipped' in r) ? r : undefined;
}

function render(results: Record<string, Result>): string {
  const names = Object.keys(results).filter((n) => ran(results, n));
  const phaseNames = [...new Set(names.flatMap((n) => Object.keys(ran(results, n)!.phases)))];
  const seconds = (n: string, p: string): number | undefined =>
    p === TOTAL ? Object.values(ran(results, n)?.phases ?? {}).reduce((a, b) => a + b, 0) || undefined : ran(results, n)?.phases[p];
  const cell = (n: string, p: string) => {
    const s = seconds(n, p);
    if (s === undefined) return '-';
    return RATE[p] ? `${(RATE[p]! / s).toFixed(0)} MB/s` : p === P.random ? `${(RANDOM_WRITES / s).toFixed(0)} IOPS` : `${s.toFixed(2)} s`;
  };
  const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || b === 0 ? '-' : `${(a / b).toFixed(2)}x`);
  const head = ['', ...names, 'shm / bindfs', 'shm / ext4', 'shm / memfs', 'TCP / shm'];
  const phaseRows = [...phaseNames, TOTAL].map((p) => [p, ...names.map((n) => cell(n, p)),
    ratio(seconds(SHM, p), seconds(BINDFS, p)), ratio(seconds(SHM, p), seconds(EXT4, p)),
    ratio(seconds(SHM, p), seconds(MEMFS, p)), ratio(seconds(TCP, p), seconds(SHM, p))]);

  const lat = (n: string, op: LatencyOp) => ran(results, n)?.latency[op];
  const latRows = LATENCY_OPS.filter((op) => names.some((n) => lat(n, op))).map((op) => {
    const p50 = (n: string) => lat(n, op)?.p50;
    const floor = p50(MEMFS), shm = p50(SHM);
    const vsFloor = floor !== undefined && shm !== undefined ? `${ratio(shm, floor)} (${shm >= floor ? '+' : ''}${(shm - floor).toFixed(0)} µs)` : '-';
    return [`${op}, p50 / p99`, ...names.map((n) => { const l = lat(n, op); return l ? `${us(l.p50)} / ${us(l.p99)} µs${l.rpcsPerCall === undefined ? '' : `, ${l.rpcsPerCall.toFixed(1)} RPC`}` : '-'; }),
      ratio(shm, p50(BINDFS)), ratio(shm, p50(EXT4)), vsFloor, ratio(p50(TCP), shm)];
  });

  const roles = [...new Set(names.flatMap((n) => Object.keys(ran(results, n)!.memory)))];
  const memRows = roles.map((role) => [`${role} RSS at end (peak)`, ...names.map((n) => {
    const m = ran(results, n)!.memory[role];
    return m ? `${m.rssMiB.toFixed(0)} MiB (${m.peakMiB.toFixed(0)})` : '-';
  }), '', '', '', '']);

  const out = [table([head, ...phaseRows, ['per-operation latency'], ...latRows, ['memory'], ...memRows])];
  out.push(`ratios: time or p50 latency of the first over the second (below 1: the first is faster); shm / memfs also gives the difference of p50s; RPC: the agent's RPCs per call (prism agent stats).${QUICK ? ' Quick variant (PRISM_BENCH_QUICK=1).' : ''}`);
  for (const n of Object.keys(results)) {
    const r = results[n]!;
    if ('skipped' in r) out.push(`${n}: skipped (${r.skipped})`);
    else for (const note of r.notes) out.push(`${n}: ${note}`);
  }
  return out.join('\n');
}

function us(v: number): string {
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}
