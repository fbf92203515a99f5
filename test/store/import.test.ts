import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { isPrismError } from '../../src/errors.js';
import { exportPath } from '../../src/store/export.js';
import { hashPool, importPath } from '../../src/store/import.js';
import type { ImportProgress } from '../../src/store/import-pipeline.js';
import { BLOCK_SIZE } from '../../src/store/layout.js';
import { Store } from '../../src/store/store.js';
import { tmpDir } from '../helpers/tmp.js';

const asRoot = process.getuid?.() === 0;
const NS_FILE = '@1600000000.123456789';
const NS_DIR = '@1500000000.987654321';

function openStore(t: ExecutionContext): Store {
  const store = Store.open(path.join(tmpDir(t), 'store'));
  t.teardown(() => store.abandon());
  return store;
}

function touch(p: string, when: string): void {
  execFileSync('touch', ['-h', '-d', when, p]);
}

/**
 * A tree with nested directories, an empty file, a sparse 200 KiB file, a file of several import
 * tasks, a symlink, a hard link pair, a fifo, modes 0600/0755/0750 and times with nanoseconds.
 */
function makeTree(root: string, opts: { oddName?: boolean } = {}): void {
  fs.mkdirSync(path.join(root, 'a/b/c'), { recursive: true });
  fs.writeFileSync(path.join(root, 'a/b/c/file.txt'), 'hello, prism\n');
  fs.writeFileSync(path.join(root, 'a/empty'), '');
  // 200 KiB: a block of data, a hole of one block, then data to the end.
  const fd = fs.openSync(path.join(root, 'a/sparse.bin'), 'w');
  fs.writeSync(fd, crypto.randomBytes(BLOCK_SIZE), 0, BLOCK_SIZE, 0);
  fs.writeSync(fd, crypto.randomBytes(200 * 1024 - 2 * BLOCK_SIZE), 0, 200 * 1024 - 2 * BLOCK_SIZE, 2 * BLOCK_SIZE);
  fs.closeSync(fd);
  fs.writeFileSync(path.join(root, 'big.bin'), crypto.randomBytes(5 * 1024 * 1024 + 123));
  fs.writeFileSync(path.join(root, 'secret'), 'private\n', { mode: 0o600 });
  fs.chmodSync(path.join(root, 'secret'), 0o600);
  fs.writeFileSync(path.join(root, 'run.sh'), '#!/bin/sh\necho hi\n');
  fs.chmodSync(path.join(root, 'run.sh'), 0o755);
  fs.symlinkSync('a/b/c/file.txt', path.join(root, 'link'));
  fs.symlinkSync('/nowhere/at/all', path.join(root, 'a/dangling'));
  fs.writeFileSync(path.join(root, 'hard1'), 'two names, one file\n');
  fs.linkSync(path.join(root, 'hard1'), path.join(root, 'a/hard2'));
  execFileSync('mkfifo', [path.join(root, 'a/fifo')]);
  for (let i = 0; i < 30; i++) fs.writeFileSync(path.join(root, 'a/b', `small${i}`), `small file ${i}\n`.repeat(i));
  if (opts.oddName) fs.writeFileSync(Buffer.concat([Buffer.from(root + '/odd-'), Buffer.from([0xff, 0xfe]), Buffer.from('.txt')]), 'not UTF-8\n');
  if (asRoot) fs.lchownSync(path.join(root, 'secret'), 1234, 5678);
  touch(path.join(root, 'a/b/c/file.txt'), NS_FILE);
  touch(path.join(root, 'link'), NS_FILE);
  touch(path.join(root, 'big.bin'), '@1234567890.000000001');
  fs.chmodSync(path.join(root, 'a/b'), 0o750);
  touch(path.join(root, 'a/b'), NS_DIR);
}

interface Node { type: string; mode: number; uid: number; gid: number; size: number; nlink: number; mtimeNs: bigint; target?: string; sha?: string; ino: bigint; blocks: number }

/** Every entry below root by relative path (names as latin1, so any bytes survive). */
function scan(root: string): Map<string, Node> {
  const out = new Map<string, Node>();
  const visit = (dir: Buffer, rel: string) => {
    for (const name of fs.readdirSync(dir, { encoding: 'buffer' })) {
      const p = Buffer.concat([dir, Buffer.from('/'), name]);
      const r = rel ? `${rel}/${name.toString('latin1')}` : name.toString('latin1');
      const st = fs.lstatSync(p, { bigint: true });
      const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : 'other';
      const n: Node = {
        type, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), size: Number(st.size),
        nlink: Number(st.nlink), mtimeNs: st.mtimeNs, ino: st.ino, blocks: Number(st.blocks),
      };
      if (type === 'symlink') n.target = fs.readlinkSync(p, 'utf8');
      if (type === 'file') n.sha = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
      out.set(r, n);
      if (type === 'dir') visit(p, r);
    }
  };
  visit(Buffer.from(root), '');
  return out;
}

/** Compare two trees; times to `precisionNs` (an exported directory keeps microseconds). */
function sameTree(t: ExecutionContext, a: Map<string, Node>, b: Map<string, Node>, precisionNs: bigint): void {
  t.deepEqual([...b.keys()].sort(), [...a.keys()].sort(), 'same entries');
  for (const [p, x] of a) {
    const y = b.get(p);
    if (!y) continue;
    t.is(y.type, x.type, `${p}: type`);
    t.is(y.mode.toString(8), x.mode.toString(8), `${p}: mode`);
    if (x.type !== 'dir') t.is(y.size, x.size, `${p}: size`);
    t.is(y.nlink, x.nlink, `${p}: link count`);
    t.is(y.target, x.target, `${p}: symlink target`);
    t.is(y.sha, x.sha, `${p}: content`);
    if (asRoot) t.deepEqual([y.uid, y.gid], [x.uid, x.gid], `${p}: owner`);
    t.is(y.mtimeNs / precisionNs, x.mtimeNs / precisionNs, `${p}: mtime`);
  }
}

test('a directory tree survives import and export: content, holes, modes, owners, links, times', async (t) => {
  const src = path.join(tmpDir(t), 'src');
  makeTree(src, { oddName: true });
  const before = scan(src);
  const store = openStore(t);
  const v = store.createVolume('v');
  const seen: ImportProgress[] = [];
  const r = await importPath(store, 'v', src, { onProgress: (p) => seen.push(p) });

  const fileCount = [...before.values()].filter((n) => n.type !== 'dir').length;
  t.is(r.files, fileCount);
  t.is(r.dirs, [...before.values()].filter((n) => n.type === 'dir').length);
  const last = seen[seen.length - 1];
  t.is(last.files, last.totalFiles, 'progress ends complete');
  t.is(last.totalFiles, fileCount);
  t.is(last.bytes, last.totalBytes);

  // In the volume: exact nanosecond times, the hole, hard links, the fifo.
  t.deepEqual(v.getattr(v.resolve('/a/b/c/file.txt')).mtime, [1600000000, 123456789]);
  t.deepEqual(v.getattr(v.resolve('/a/b')).mtime, [1500000000, 987654321]);
  t.deepEqual(v.getattr(v.resolve('/link')).mtime, [1600000000, 123456789]);
  t.is(v.getattr(v.resolve('/a/b')).mode & 0o7777, 0o750);
  const sparse = v.resolve('/a/sparse.bin');
  t.deepEqual(v.blockList(sparse).map(([i]) => i), [0, 2, 3], 'the hole has no block');
  t.is(v.getattr(sparse).size, 200 * 1024);
  t.is(v.getattr(sparse).blocks, (200 * 1024 - BLOCK_SIZE) / 512, 'allocated bytes leave out the hole');
  t.is(v.resolve('/hard1'), v.resolve('/a/hard2'));
  t.is(v.getattr(v.resolve('/hard1')).nlink, 2);
  t.is(v.getattr(v.resolve('/a/fifo')).mode & 0o170000, 0o010000);
  t.is(v.read(v.resolve('/a/b/c/file.txt'), 0, 100).data.toString(), 'hello, prism\n');
  t.true(v.read(v.resolve('/big.bin'), 0, 6 * 1024 * 1024).data.equals(fs.readFileSync(path.join(src, 'big.bin'))));

  const out = path.join(tmpDir(t), 'out');
  const ex = await exportPath(store, 'v', out);
  t.is(ex.files, fileCount);
  const after = scan(out);
  sameTree(t, before, after, 1000n);
  t.is(after.get('hard1')!.ino, after.get('a/hard2')!.ino, 'hard links share an inode');
  t.true(after.get('a/sparse.bin')!.blocks * 512 <= 200 * 1024 - BLOCK_SIZE, 'the exported file is sparse');
});

test('import survives a reopen of the store and merges into an existing destination', async (t) => {
  const src = path.join(tmpDir(t), 'src');
  makeTree(src);
  const dir = path.join(tmpDir(t), 'store');
  const store = Store.open(dir);
  store.createVolume('v');
  await importPath(store, 'v', src, { dest: '/x/y' });
  fs.writeFileSync(path.join(src, 'run.sh'), 'changed\n');
  const again = await importPath(store, 'v', src, { dest: '/x/y' }); // same names: replaced, not EEXIST
  t.is(again.newBytes, 'changed\n'.length);
  store.close();
  const s2 = Store.open(dir);
  t.teardown(() => s2.abandon());
  const v = s2.volume('v');
  t.is(v.read(v.resolve('/x/y/run.sh'), 0, 100).data.toString(), 'changed\n');
  t.is(v.getattr(v.resolve('/x/y/hard1')).nlink, 2);
  const out = path.join(tmpDir(t), 'out');
  await exportPath(s2, 'v', out, { src: '/x/y' });
  sameTree(t, scan(src), scan(out), 1000n);
});

test('a tar round trip: system tar -> import -> export to tar -> system tar', async (t) => {
  const work = tmpDir(t);
  const src = path.join(work, 'src');
  makeTree(src);
  const before = scan(src);
  const archive = path.join(work, 'in.tar');
  execFileSync('tar', ['--format=posix', '-C', src, '-cf', archive, '.']);
  const store = openStore(t);
  const v = store.createVolume('v');
  const r = await importPath(store, 'v', archive);
  t.is(r.files, [...before.values()].filter((n) => n.type !== 'dir').length);
  t.deepEqual(v.getattr(v.resolve('/a/b/c/file.txt')).mtime, [1600000000, 123456789], 'pax times keep nanoseconds');
  t.is(v.resolve('/hard1'), v.resolve('/a/hard2'));

  const outTar = path.join(work, 'out.tar');
  await exportPath(store, 'v', outTar);
  const out = path.join(work, 'out');
  fs.mkdirSync(out);
  execFileSync('tar', ['-C', out, '-xpf', outTar]);
  sameTree(t, before, scan(out), 1n);

  // And a gzipped archive, into a second volume: every block is already stored.
  const gz = path.join(work, 'in.tar.gz');
  execFileSync('tar', ['-C', src, '-czf', gz, '.']);
  store.createVolume('w');
  const r2 = await importPath(store, 'w', gz);
  t.is(r2.newBytes, 0);
  t.is(r2.bytes, r.bytes);
  const w = store.volume('w');
  t.true(w.read(w.resolve('/big.bin'), 0, 6 * 1024 * 1024).data.equals(fs.readFileSync(path.join(src, 'big.bin'))));
});

test('ten imports of the same tree take little more space than one', async (t) => {
  const src = path.join(tmpDir(t), 'src');
  makeTree(src);
  const store = openStore(t);
  const pool = hashPool(2);
  t.teardown(() => pool.destroy());
  const p0 = store.stats().physicalBytes;
  store.createVolume('v0');
  const first = await importPath(store, 'v0', src, { pool });
  const p1 = store.stats().physicalBytes;
  t.true(p1 - p0 > 5 * 1024 * 1024, 'the first import stores the content');
  t.is(first.newBytes, p1 - p0);
  for (let i = 1; i < 10; i++) {
    store.createVolume(`v${i}`);
    const r = await importPath(store, `v${i}`, src, { pool });
    t.is(r.newBytes, 0);
  }
  const p10 = store.stats().physicalBytes;
  t.true(p10 - p1 < 0.01 * (p1 - p0), `grew by ${p10 - p1} bytes after the first import of ${p1 - p0}`);
  t.is(store.stats().logicalBytes, 10 * (p1 - p0));
});

test('errors: a missing source, a bad volume name, a non-empty export destination', async (t) => {
  const store = openStore(t);
  store.createVolume('v');
  const missing = path.join(tmpDir(t), 'no-such-dir');
  const e = await t.throwsAsync(importPath(store, 'v', missing));
  t.true(isPrismError(e, 'ENOENT'), String(e));
  t.true(e!.message.includes(missing), 'the message names the path');
  const e2 = await t.throwsAsync(importPath(store, 'No/Such', tmpDir(t)));
  t.true(isPrismError(e2, 'EINVAL'), String(e2));
  t.deepEqual(store.allVolumeNames(), ['v'], 'no volume made, no hidden copy left');
  const notTar = path.join(tmpDir(t), 'notes.txt');
  fs.writeFileSync(notTar, 'just text');
  const e3 = await t.throwsAsync(importPath(store, 'v', notTar));
  t.true(isPrismError(e3, 'EINVAL'), String(e3));
  const full = tmpDir(t);
  fs.writeFileSync(path.join(full, 'x'), 'x');
  const e4 = await t.throwsAsync(exportPath(store, 'v', full));
  t.true(isPrismError(e4, 'EEXIST'), String(e4));
});
