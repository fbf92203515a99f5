// A guest's sparse file costs the host only its data, also when exported: a tar holds sparse entries
// (PAX 1.0 sparse format, which GNU tar extracts as sparse files) and a directory export leaves holes.
// Exports and extractions go to a small tmpfs mounted for the test (tmpfs holds a 2^50-byte sparse
// file; ext4 stops at 16 TiB), so a regression that writes the holes out fails with ENOSPC instead of
// filling the disk.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { MAX_FILE_SIZE } from '../../src/posix/limits.js';
import { BLOCK_SIZE } from '../../src/store/layout.js';
import { importPath } from '../../src/store/import.js';
import { Store } from '../../src/store/store.js';
import { tmpDir } from '../helpers/tmp.js';

const PRISM = path.resolve('bin/prism.js');
const hasTar = spawnSync('tar', ['--version']).status === 0;

/** Whether this process can mount a tmpfs (root, and mount(8) present): probed once. */
const canMount = ((): boolean => {
  if (process.getuid?.() !== 0) return false;
  const d = fs.mkdtempSync('/tmp/prism-probe-');
  try {
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', d]).status !== 0) return false;
    spawnSync('umount', [d]);
    return true;
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
})();
const needsTmpfs = canMount ? test : test.skip;
const needsTmpfsAndTar = canMount && hasTar ? test : test.skip;
const needsTar = hasTar ? test : test.skip;
const WHY_TMPFS = canMount ? '' : ' [skipped: needs root to mount a small tmpfs]';
const WHY_TAR = hasTar ? '' : ' [skipped: needs GNU tar]';

/** A tmpfs of `mib` MiB, unmounted when the test ends: room for sparse files, not for their holes. */
function smallTmpfs(t: import('ava').ExecutionContext, mib: number): string {
  const d = fs.mkdtempSync('/tmp/prism-tmpfs-');
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${mib}m`, 'tmpfs', d], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mount tmpfs: ${r.stderr}`);
  t.teardown(() => { spawnSync('umount', ['-l', d]); fs.rmSync(d, { recursive: true, force: true }); });
  return d;
}

interface Spec { name: string; size: number; writes: Array<[number, Buffer]> }

/** Files with holes in all the places a sparse map has edges. */
function specs(): Spec[] {
  const r = (n: number) => crypto.randomBytes(n);
  return [
    { name: 'huge', size: MAX_FILE_SIZE, writes: [[2 ** 40, r(BLOCK_SIZE)], [MAX_FILE_SIZE - BLOCK_SIZE, r(BLOCK_SIZE)]] },
    { name: 'mid', size: 1_000_000, writes: [[100, r(5000)], [400_000, r(100)], [3 * BLOCK_SIZE, r(2 * BLOCK_SIZE)]] },
    { name: 'ends-in-data', size: 5 * BLOCK_SIZE + 77, writes: [[5 * BLOCK_SIZE, r(77)]] },
    { name: 'dense', size: 3 * BLOCK_SIZE + 10, writes: [[0, r(3 * BLOCK_SIZE + 10)]] },
    { name: 'empty-sparse', size: 10 * BLOCK_SIZE, writes: [] },
  ];
}

/** Makes the store; returns the bytes its blocks hold (what a sparse export may write, at most). */
function makeStore(dir: string, files: Spec[]): number {
  const store = Store.open(dir);
  const v = store.createVolume('v');
  const d = v.mkdir(v.rootIno, 'd', 0o755, 0, 0);
  for (const f of files) {
    const ino = v.create(d.ino, f.name, 0o640, 0, 0).ino;
    v.setattr(ino, { size: f.size });
    for (const [at, data] of f.writes) v.write(ino, at, data);
  }
  let stored = 0;
  for (const f of files) {
    const ino = v.resolve(`/d/${f.name}`);
    for (const [idx, h] of v.blockList(ino)) stored += Math.min(store.blocks.length(h), f.size - idx * BLOCK_SIZE);
  }
  store.close();
  return stored;
}

/** Bytes of a file at the offsets the spec wrote (and zeros around them, sampled). */
function checkFile(t: import('ava').ExecutionContext, file: string, f: Spec): void {
  const st = fs.statSync(file);
  t.is(st.size, f.size, `${f.name}: size`);
  const fd = fs.openSync(file, 'r');
  try {
    for (const [at, data] of f.writes) {
      const got = Buffer.alloc(data.length);
      fs.readSync(fd, got, 0, data.length, at);
      t.true(got.equals(data), `${f.name}: data at ${at}`);
    }
    if (f.size < 4 * 1024 * 1024) {
      // Small enough to compare whole: build the expected content.
      const want = Buffer.alloc(f.size);
      for (const [at, data] of f.writes) data.copy(want, at);
      t.true(fs.readFileSync(file).equals(want), `${f.name}: whole content`);
    }
  } finally {
    fs.closeSync(fd);
  }
  t.true(st.blocks * 512 <= f.writes.reduce((n, [, d]) => n + d.length, 0) + 4 * BLOCK_SIZE + 64 * 1024, `${f.name}: ${st.blocks * 512} bytes allocated`);
}

/** `prism volume export` in a child process (a regression must not take this process's memory). */
function exportVolume(store: string, dest: string): { status: number | null; signal: string | null; stderr: string } {
  const r = spawnSync('node', [PRISM, 'volume', 'export', 'v', dest, '--store', store], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, signal: r.signal, stderr: r.stderr };
}

needsTmpfsAndTar(`a tar export of sparse files (one of 2^50 bytes) holds only their data and GNU tar extracts them sparse${WHY_TMPFS}${WHY_TAR}`, (t) => {
  const dir = tmpDir(t);
  const files = specs();
  const stored = makeStore(path.join(dir, 'store'), files);
  const x = smallTmpfs(t, 32);
  const out = path.join(x, 'out.tar');
  const r = exportVolume(path.join(dir, 'store'), out);
  t.is(r.status, 0, `export failed: signal ${r.signal}, ${r.stderr}`);
  if (r.status !== 0) return;
  t.true(fs.statSync(out).size < stored + 64 * 1024, `the tar is ${fs.statSync(out).size} bytes for ${stored} bytes stored`);
  const u = spawnSync('tar', ['-xf', out, '-C', x], { encoding: 'utf8' });
  t.is(u.status, 0, u.stderr);
  t.deepEqual(fs.readdirSync(path.join(x, 'd')).sort(), files.map((f) => f.name).sort(), 'names are the real names');
  for (const f of files) checkFile(t, path.join(x, 'd', f.name), f);
  t.is(fs.statSync(path.join(x, 'd', 'mid')).mode & 0o7777, 0o640);
});

needsTmpfs(`a sparse tar made by export imports back to the same blocks and sizes${WHY_TMPFS}`, async (t) => {
  const dir = tmpDir(t);
  const files = specs();
  makeStore(path.join(dir, 'store'), files);
  const out = path.join(smallTmpfs(t, 32), 'out.tar');
  const r = exportVolume(path.join(dir, 'store'), out);
  t.is(r.status, 0, `export failed: signal ${r.signal}, ${r.stderr}`);
  if (r.status !== 0) return;
  const store = Store.open(path.join(dir, 'store'));
  t.teardown(() => store.abandon());
  store.createVolume('back');
  await importPath(store, 'back', out);
  const a = store.volume('v'), b = store.volume('back');
  for (const f of files) {
    const ia = a.resolve(`/d/${f.name}`), ib = b.resolve(`/d/${f.name}`);
    t.is(b.getattr(ib).size, f.size, `${f.name}: size`);
    t.is(b.getattr(ib).mode & 0o7777, 0o640);
    const la = a.blockList(ia), lb = b.blockList(ib);
    t.deepEqual(lb.map(([i, h]) => [i, h.toString('hex')]), la.map(([i, h]) => [i, h.toString('hex')]), `${f.name}: the same blocks`);
  }
});

needsTar(`GNU tar's own sparse archives import with their holes${WHY_TAR}`, async (t) => {
  const dir = tmpDir(t);
  const src = path.join(dir, 'src');
  fs.mkdirSync(src);
  const f = path.join(src, 'holes.bin');
  const fd = fs.openSync(f, 'w');
  const a = crypto.randomBytes(10_000), b = crypto.randomBytes(8192);
  fs.writeSync(fd, a, 0, a.length, 4096);
  fs.writeSync(fd, b, 0, b.length, 5 * 1024 * 1024);
  fs.ftruncateSync(fd, 64 * 1024 * 1024);
  fs.closeSync(fd);
  const out = path.join(dir, 'gnu.tar');
  const c = spawnSync('tar', ['--sparse', '--format=posix', '--sparse-version=1.0', '-cf', out, '-C', src, '.'], { encoding: 'utf8' });
  t.is(c.status, 0, c.stderr);
  const store = Store.open(path.join(dir, 'store'));
  t.teardown(() => store.abandon());
  store.createVolume('v');
  await importPath(store, 'v', out);
  const v = store.volume('v');
  const ino = v.resolve('/holes.bin');
  t.is(v.getattr(ino).size, 64 * 1024 * 1024);
  t.true(v.read(ino, 4096, a.length).data.equals(a));
  t.true(v.read(ino, 5 * 1024 * 1024, b.length).data.equals(b));
  t.true(v.read(ino, 20 * 1024 * 1024, 100).data.equals(Buffer.alloc(100)));
  t.true(v.blockList(ino).length <= 3, `${v.blockList(ino).length} blocks stored for 2 runs of data`);
});

needsTmpfs(`a directory export of a 2^50-byte sparse file leaves its holes unwritten${WHY_TMPFS}`, (t) => {
  const dir = tmpDir(t);
  const files = specs();
  makeStore(path.join(dir, 'store'), files);
  const x = smallTmpfs(t, 32);
  const r = exportVolume(path.join(dir, 'store'), path.join(x, 'out'));
  t.is(r.status, 0, r.stderr);
  for (const f of files) checkFile(t, path.join(x, 'out', 'd', f.name), f);
});
