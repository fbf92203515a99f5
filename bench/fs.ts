// The file-system benchmark: one workload, run once on each target in the same run, so the numbers
// compare as ratios. Targets: Prism over shared memory and over TCP (host and agent as separate
// processes), bindfs over ext4 (a FUSE peer), ext4 on a loop-mounted image (the virtual-disk analog)
// and tmpfs. Needs root (mounts); a target that cannot be set up is reported with the reason.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { table } from '../src/cli/format.js';
import { isMounted } from '../src/native/mount.js';

const prismBin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/prism.js');
const DIRS = 200;
const FILES_PER_DIR = 100;
const SEQ_BYTES = 256 << 20;
const RANDOM_WRITES = 4096;

interface Target { name: string; mountpoint: string; teardown(): Promise<void> }
type Phases = Record<string, number>;

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.error?.message || '').trim()}`);
}

async function waitFor(what: string, ok: () => boolean, child?: ChildProcess): Promise<void> {
  const until = Date.now() + 20_000;
  while (!ok()) {
    if (child && child.exitCode !== null) throw new Error(`${what}: process exited with ${child.exitCode}`);
    if (Date.now() > until) throw new Error(`${what}: timed out`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function progress(msg: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${msg}`);
}

// ---- targets -------------------------------------------------------------------------------------

async function tmpfs(work: string): Promise<Target> {
  const mp = path.join(work, 'tmpfs');
  fs.mkdirSync(mp);
  sh('mount', ['-t', 'tmpfs', '-o', 'size=2G', 'tmpfs', mp]);
  return { name: 'tmpfs', mountpoint: mp, teardown: async () => sh('umount', [mp]) };
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
  const agent = spawn(process.execPath, [prismBin, 'agent', 'mount', '--foreground', '--volume', 'bench', ...how, mp], { stdio: 'inherit' });
  await waitFor('agent mount', () => isMounted(mp), agent);
  return {
    name: `Prism over ${transport === 'shm' ? 'shared memory' : 'TCP'}`, mountpoint: mp,
    teardown: async () => {
      const gone = new Promise((r) => agent.once('exit', r));
      sh(process.execPath, [prismBin, 'agent', 'umount', mp]);
      await gone;
      const stopped = new Promise((r) => host.once('exit', r));
      host.kill('SIGTERM');
      await stopped;
      for (const f of [`/dev/shm/prism-${vm}`, `/dev/shm/prism-${vm}-meta`]) fs.rmSync(f, { force: true });
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
}

// ---- the workload --------------------------------------------------------------------------------

function dropCaches(): void {
  try { fs.writeFileSync('/proc/sys/vm/drop_caches', '3'); } catch { /* not root: reads may be cached */ }
}

/** Deterministic file sizes (512 B - 8 KiB) and distinct contents, the same for every target. */
function fileSet(): { sizes: number[]; pool: Buffer } {
  let x = 12345;
  const sizes: number[] = [];
  for (let i = 0; i < DIRS * FILES_PER_DIR; i++) {
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

function workload(root: string, files: { sizes: number[]; pool: Buffer }, label: string): Phases {
  const phases: Phases = {};
  const dir = path.join(root, 'bench');
  fs.mkdirSync(dir);
  const paths: string[] = [];
  for (let d = 0; d < DIRS; d++) for (let f = 0; f < FILES_PER_DIR; f++) paths.push(path.join(dir, `d${d}`, `f${f}.dat`));
  progress(`${label}: create`);
  timed(phases, 'create 20k files', () => {
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
  progress(`${label}: stat`);
  timed(phases, 'stat all (1st)', () => { for (const p of paths) fs.lstatSync(p); });
  timed(phases, 'stat all (2nd)', () => { for (const p of paths) fs.lstatSync(p); });
  progress(`${label}: read`);
  timed(phases, 'read all', () => { for (const p of paths) fs.readFileSync(p); });

  const big = path.join(dir, 'big');
  const chunk = crypto.randomBytes(1 << 20);
  progress(`${label}: sequential write`);
  timed(phases, 'write 256 MiB', () => {
    const fd = fs.openSync(big, 'w');
    for (let off = 0; off < SEQ_BYTES; off += chunk.length) { chunk.writeUInt32LE(off, 0); fs.writeSync(fd, chunk, 0, chunk.length, off); }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  });
  dropCaches();
  progress(`${label}: sequential read`);
  timed(phases, 'read 256 MiB', () => {
    const fd = fs.openSync(big, 'r');
    const buf = Buffer.allocUnsafe(1 << 20);
    for (let off = 0; off < SEQ_BYTES; off += buf.length) fs.readSync(fd, buf, 0, buf.length, off);
    fs.closeSync(fd);
  });
  progress(`${label}: random writes`);
  timed(phases, '4 KiB random writes', () => {
    const fd = fs.openSync(big, 'r+');
    const page = crypto.randomBytes(4096);
    let x = 777;
    for (let i = 0; i < RANDOM_WRITES; i++) {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      fs.writeSync(fd, page, 0, 4096, (x % (SEQ_BYTES / 4096)) * 4096);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  });
  progress(`${label}: remove`);
  timed(phases, 'remove the tree', () => fs.rmSync(dir, { recursive: true }));
  progress('');
  return phases;
}

// ---- the run -------------------------------------------------------------------------------------

export async function run() {
  if (process.getuid?.() !== 0) throw new Error('the fs benchmark mounts file systems: run it as root');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-bench-fs-'));
  const files = fileSet();
  const makers: Array<[string, () => Promise<Target>]> = [
    ['Prism over shared memory', () => prism(work, 'shm')],
    ['Prism over TCP', () => prism(work, 'tcp')],
    ['bindfs over ext4', () => bindfs(work)],
    ['ext4 (loop image)', () => ext4Loop(work)],
    ['tmpfs', () => tmpfs(work)],
  ];
  const results: Record<string, Phases | { skipped: string }> = {};
  for (const [name, make] of makers) {
    let target: Target;
    try {
      target = await make();
    } catch (e) {
      results[name] = { skipped: (e as Error).message };
      continue;
    }
    try {
      results[name] = workload(target.mountpoint, files, name);
    } finally {
      await target.teardown();
    }
  }
  fs.rmSync(work, { recursive: true, force: true });
  return { results, table: render(results) };
}

const RATE: Record<string, number> = { 'write 256 MiB': SEQ_BYTES / 1e6, 'read 256 MiB': SEQ_BYTES / 1e6 };

function render(results: Record<string, Phases | { skipped: string }>): string {
  const names = Object.keys(results);
  const ran = names.filter((n) => !('skipped' in results[n]!));
  const phases = Object.keys(results[ran[0] ?? ''] ?? {});
  const cell = (n: string, p: string) => {
    const r = results[n] as Phases;
    const s = r[p]!;
    return RATE[p] ? `${(RATE[p]! / s).toFixed(0)} MB/s` : p.startsWith('4 KiB') ? `${(RANDOM_WRITES / s).toFixed(0)} IOPS` : `${s.toFixed(2)} s`;
  };
  const shm = results['Prism over shared memory'] as Phases | undefined;
  const ratio = (base: string, p: string) => {
    const b = results[base] as Phases | undefined;
    if (!shm || !b || 'skipped' in b) return '-';
    return `${(shm[p]! / b[p]!).toFixed(2)}x`;
  };
  const rows = phases.map((p) => [p, ...ran.map((n) => cell(n, p)), ratio('bindfs over ext4', p), ratio('ext4 (loop image)', p)]);
  const out = [table([['phase', ...ran, 'shm time / bindfs', 'shm time / ext4'], ...rows])];
  for (const n of names.filter((x) => 'skipped' in results[x]!)) out.push(`${n}: skipped (${(results[n] as { skipped: string }).skipped})`);
  return out.join('\n');
}
