import test, { type ExecutionContext } from 'ava';
import path from 'node:path';
import { Store } from '../../src/store/store.js';
import { BLOCK_SIZE } from '../../src/store/layout.js';
import { isPrismError, type PosixCode } from '../../src/errors.js';
import { tmpDir } from '../helpers/tmp.js';

function open(t: ExecutionContext) {
  const dir = path.join(tmpDir(t), 'store');
  const store = Store.open(dir);
  t.teardown(() => store.abandon());
  return { dir, store };
}

function code(t: ExecutionContext, fn: () => unknown, expected: PosixCode) {
  const e = t.throws(fn);
  t.true(isPrismError(e, expected), `expected ${expected}, got ${String(e)}`);
}

test('files, directories, symlinks, devices and their attributes survive a reopen', (t) => {
  const { dir, store } = open(t);
  const v = store.createVolume('a');
  const d = v.mkdir(v.rootIno, 'etc', 0o750, 10, 20);
  const f = v.create(d.ino, 'hosts', 0o640, 10, 20);
  v.write(f.ino, 0, Buffer.from('127.0.0.1 localhost\n'));
  v.symlink(v.rootIno, 'link', '/etc/hosts', 0, 0);
  v.mknod(v.rootIno, 'fifo', 0o010644, 0, 0, 0);
  v.mknod(v.rootIno, 'null', 0o020666, (1 << 8) | 3, 0, 0);
  v.setattr(f.ino, { mtime: [1234567890, 123456789] });
  v.setxattr(f.ino, 'user.note', Buffer.from('hi'));
  store.close();

  const s2 = Store.open(dir);
  t.teardown(() => s2.abandon());
  const w = s2.volume('a');
  const hosts = w.resolve('/etc/hosts');
  t.is(hosts, f.ino, 'inode numbers are stable across restarts');
  t.is(w.read(hosts, 0, 100).data.toString(), '127.0.0.1 localhost\n');
  const a = w.getattr(hosts);
  t.deepEqual([a.mode & 0o7777, a.uid, a.gid, a.size], [0o640, 10, 20, 20]);
  t.deepEqual(a.mtime, [1234567890, 123456789]);
  t.is(w.getattr(d.ino).nlink, 2);
  t.is(w.getattr(w.rootIno).nlink, 3);
  t.is(w.readlink(w.resolve('/link')).toString(), '/etc/hosts');
  t.is(w.getattr(w.resolve('/null')).rdev, (1 << 8) | 3);
  t.is(w.getxattr(hosts, 'user.note').toString(), 'hi');
  t.deepEqual(w.readdir(w.rootIno).map((e) => e.name.toString()), ['etc', 'fifo', 'link', 'null']);
});

test('errors carry POSIX codes', (t) => {
  const { store } = open(t);
  const v = store.createVolume('a');
  const d = v.mkdir(v.rootIno, 'd', 0o755, 0, 0);
  const f = v.create(d.ino, 'f', 0o644, 0, 0);
  code(t, () => v.lookup(v.rootIno, 'missing'), 'ENOENT');
  code(t, () => v.mkdir(v.rootIno, 'd', 0o755, 0, 0), 'EEXIST');
  code(t, () => v.rmdir(v.rootIno, 'd'), 'ENOTEMPTY');
  code(t, () => v.unlink(v.rootIno, 'd'), 'EISDIR');
  code(t, () => v.lookup(f.ino, 'x'), 'ENOTDIR');
  code(t, () => v.create(v.rootIno, 'x'.repeat(256), 0o644, 0, 0), 'ENAMETOOLONG');
  code(t, () => v.link(d.ino, v.rootIno, 'hard'), 'EPERM');
  code(t, () => v.rename(v.rootIno, 'd', d.ino, 'inside'), 'EINVAL');
  code(t, () => v.getxattr(f.ino, 'user.none'), 'ENODATA');
  code(t, () => v.getattr(999999), 'ESTALE');
  code(t, () => store.createVolume('Bad Name'), 'EINVAL');
  code(t, () => store.createVolume('a'), 'EEXIST');
  code(t, () => store.volume('nope'), 'ENOENT');
});

test('rename: over files, over empty directories, NOREPLACE and EXCHANGE, link counts', (t) => {
  const { store } = open(t);
  const v = store.createVolume('a');
  const r = v.rootIno;
  const a = v.mkdir(r, 'a', 0o755, 0, 0);
  const b = v.mkdir(r, 'b', 0o755, 0, 0);
  const f = v.create(a.ino, 'f', 0o644, 0, 0);
  const g = v.create(b.ino, 'g', 0o644, 0, 0);
  v.write(g.ino, 0, Buffer.from('g'));
  v.rename(a.ino, 'f', b.ino, 'g');
  t.is(v.lookup(b.ino, 'g').ino, f.ino);
  code(t, () => v.getattr(g.ino), 'ESTALE');
  v.mkdir(a.ino, 'sub', 0o755, 0, 0);
  t.is(v.getattr(a.ino).nlink, 3);
  v.rename(a.ino, 'sub', b.ino, 'sub');
  t.is(v.getattr(a.ino).nlink, 2);
  t.is(v.getattr(b.ino).nlink, 3);
  t.is(v.lookup(v.lookup(b.ino, 'sub').ino, '..').ino, b.ino);
  code(t, () => v.rename(b.ino, 'g', b.ino, 'sub'), 'EISDIR');
  code(t, () => v.rename(b.ino, 'sub', v.rootIno, 'a', { noreplace: true }), 'EEXIST');
  const sub = v.lookup(b.ino, 'sub').ino;
  v.rename(b.ino, 'sub', v.rootIno, 'a', { exchange: true });
  t.is(v.lookup(r, 'a').ino, sub);
  t.is(v.lookup(b.ino, 'sub').ino, a.ino);
  t.is(v.lookup(a.ino, '..').ino, b.ino, 'exchanged directories get their new parents');
  // Hard links
  const h = v.link(f.ino, r, 'hard');
  t.is(h.nlink, 2);
  v.unlink(b.ino, 'g');
  t.is(v.getattr(f.ino).nlink, 1);
  v.rename(r, 'hard', r, 'hard2');
  t.is(v.lookup(r, 'hard2').ino, f.ino);
});

test('sparse files, truncate, partial blocks and open-unlinked files', (t) => {
  const { store } = open(t);
  const v = store.createVolume('a');
  const f = v.create(v.rootIno, 'sparse', 0o644, 0, 0);
  const far = 5 * 2 ** 30 + 123; // beyond 4 GiB
  v.write(f.ino, far, Buffer.from('end'));
  t.is(v.getattr(f.ino).size, far + 3);
  t.deepEqual(v.read(f.ino, far - 2, 10).data, Buffer.from([0, 0, 101, 110, 100]));
  t.true(v.getattr(f.ino).blocks * 512 <= BLOCK_SIZE, 'a sparse file only holds the blocks written');
  v.write(f.ino, 10, Buffer.from('abcdef'));
  v.setattr(f.ino, { size: 13 });
  v.setattr(f.ino, { size: 100 });
  const back = v.read(f.ino, 0, 100).data;
  t.is(back.subarray(10, 13).toString(), 'abc');
  t.true(back.subarray(13).every((x) => x === 0), 'truncated bytes read back as zeros after regrowth');
  // open-unlinked
  v.open(f.ino);
  v.unlink(v.rootIno, 'sparse');
  t.is(v.read(f.ino, 10, 3).data.toString(), 'abc');
  t.deepEqual(v.rec.orphans, [f.ino]);
  v.close(f.ino);
  code(t, () => v.getattr(f.ino), 'ESTALE');
  t.deepEqual(v.rec.orphans, []);
});

test('clone is a point-in-time copy; a 1-byte write into a shared file costs one block', (t) => {
  const { store } = open(t);
  const v = store.createVolume('a');
  const f = v.create(v.rootIno, 'big', 0o644, 0, 0);
  const data = Buffer.alloc(64 * BLOCK_SIZE);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
  v.write(f.ino, 0, data);
  store.commit();
  const phys0 = store.stats().physicalBytes;
  const c = store.clone('a', 'b');
  t.is(store.stats().physicalBytes, phys0, 'clone adds no data');
  c.write(f.ino, 1000, Buffer.from([0xff]));
  store.commit();
  const grown = store.stats().physicalBytes - phys0;
  t.is(grown, BLOCK_SIZE, 'exactly one block');
  t.is(v.read(f.ino, 1000, 1).data[0], data[1000], 'source unchanged');
  t.is(c.read(f.ino, 1000, 1).data[0], 0xff);
  // Writes to the source after the clone are not seen by the clone.
  v.write(f.ino, 0, Buffer.from('zz'));
  t.is(c.read(f.ino, 0, 2).data.readUInt16LE(0), data.readUInt16LE(0));
  t.is(store.info('b').uniqueBytes, BLOCK_SIZE);
});

test('compose grafts subtrees of several volumes; changes stay private', (t) => {
  const { store } = open(t);
  const a = store.createVolume('a');
  const usr = a.mkdir(a.rootIno, 'usr', 0o755, 0, 0);
  const bin = a.mkdir(usr.ino, 'bin', 0o755, 0, 0);
  const sh = a.create(bin.ino, 'sh', 0o755, 0, 0);
  a.write(sh.ino, 0, Buffer.from('#!shell'));
  const b = store.createVolume('b');
  const home = b.mkdir(b.rootIno, 'home', 0o755, 0, 0);
  const me = b.create(home.ino, 'me', 0o600, 1000, 1000);
  b.write(me.ino, 0, Buffer.from('mine'));
  const c = store.compose('c', [{ volume: 'a', path: '/usr' }, { volume: 'b', path: '/home', dest: '/users/home' }]);
  t.is(c.read(c.resolve('/usr/bin/sh'), 0, 10).data.toString(), '#!shell');
  t.is(c.read(c.resolve('/users/home/me'), 0, 10).data.toString(), 'mine');
  t.is(c.lookup(c.resolve('/usr'), '..').ino, c.rootIno);
  t.is(c.getattr(c.rootIno).nlink, 4);
  c.write(c.resolve('/usr/bin/sh'), 0, Buffer.from('#!SHELL'));
  c.unlink(c.resolve('/users/home'), 'me');
  t.is(a.read(sh.ino, 0, 10).data.toString(), '#!shell');
  t.is(b.read(me.ino, 0, 10).data.toString(), 'mine');
  t.is(store.info("c").files, 6);
  code(t, () => store.compose('d', [{ volume: 'a', path: '/nope' }]), 'ENOENT');
  t.false(store.has('d'), 'a failed compose leaves nothing behind');
});

test('quota: writes beyond it fail with EDQUOT and store nothing', (t) => {
  const { store } = open(t);
  const v = store.createVolume('q', { quota: 3 * BLOCK_SIZE });
  const f = v.create(v.rootIno, 'f', 0o644, 0, 0);
  v.write(f.ino, 0, Buffer.alloc(2 * BLOCK_SIZE, 1));
  code(t, () => v.write(f.ino, 2 * BLOCK_SIZE, Buffer.alloc(2 * BLOCK_SIZE, 2)), 'EDQUOT');
  t.is(v.getattr(f.ino).size, 2 * BLOCK_SIZE);
  v.write(f.ino, 0, Buffer.alloc(BLOCK_SIZE, 3)); // overwriting allocated space is fine
  t.is(v.read(f.ino, 0, 1).data[0], 3);
  const sf = store.statfs('q');
  t.is(sf.blocks, 3, 'statfs reports the quota as the size');
  t.is(sf.bfree, 0, 'the name "f" is charged too: less than a whole block is left');
  t.is(sf.namemax, 255);
});

test('removing a volume frees exactly the blocks no other volume uses', (t) => {
  const { store } = open(t);
  const a = store.createVolume('a');
  const f = a.create(a.rootIno, 'shared', 0o644, 0, 0);
  a.write(f.ino, 0, Buffer.alloc(4 * BLOCK_SIZE, 7));
  const g = a.create(a.rootIno, 'own', 0o644, 0, 0);
  const own = Buffer.alloc(BLOCK_SIZE); own.fill(9); own[0] = 1;
  a.write(g.ino, 0, own);
  const b = store.clone('a', 'b');
  b.unlink(b.rootIno, 'own');
  store.commit();
  const before = store.stats();
  store.removeVolume('b');
  store.commit();
  t.is(store.stats().physicalBytes, before.physicalBytes, 'nothing of b was unique');
  store.removeVolume('a');
  store.commit();
  t.is(store.stats().physicalBytes, 0);
  t.is(store.stats().blocks, 0);
});

test('copyRange shares aligned whole blocks (no new blocks stored) and copies unaligned edges', (t) => {
  const { store } = open(t);
  const v = store.createVolume('a');
  const src = v.create(v.rootIno, 'src', 0o644, 0, 0);
  const data = Buffer.alloc(4 * BLOCK_SIZE + 1000);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i * 2654435761 >>> 0, i);
  v.write(src.ino, 0, data);
  store.commit();
  const before = store.stats().blocks;
  const dst = v.create(v.rootIno, 'dst', 0o644, 0, 0);
  const r = v.copyRange(src.ino, BLOCK_SIZE, dst.ino, 0, 2 * BLOCK_SIZE);
  t.is(r.copied, 2 * BLOCK_SIZE);
  store.commit();
  t.is(store.stats().blocks, before, 'aligned blocks are shared, not stored again');
  t.deepEqual(v.read(dst.ino, 0, 2 * BLOCK_SIZE).data, data.subarray(BLOCK_SIZE, 3 * BLOCK_SIZE));
  // Unaligned, and past the source's end: a short count, bytes copied.
  const odd = v.create(v.rootIno, 'odd', 0o644, 0, 0);
  const n = v.copyRange(src.ino, 100, odd.ino, 7, data.length).copied;
  t.is(n, data.length - 100);
  t.deepEqual(v.read(odd.ino, 7, n).data, data.subarray(100));
  t.deepEqual(v.read(odd.ino, 0, 7).data, Buffer.alloc(7));
  code(t, () => v.copyRange(src.ino, 0, src.ino, 10, 100), 'EINVAL');
});

test('seek finds data and holes at block granularity; fallocate extends, punches and zeroes', (t) => {
  const { store } = open(t);
  const v = store.createVolume('a');
  const f = v.create(v.rootIno, 'sparse', 0o644, 0, 0);
  v.write(f.ino, 10, Buffer.from('head'));
  v.write(f.ino, 5 * BLOCK_SIZE + 3, Buffer.from('tail'));
  t.is(v.seek(f.ino, 0, 'data'), 0);
  t.is(v.seek(f.ino, 0, 'hole'), BLOCK_SIZE);
  t.is(v.seek(f.ino, BLOCK_SIZE + 5, 'data'), 5 * BLOCK_SIZE);
  t.is(v.seek(f.ino, 5 * BLOCK_SIZE, 'hole'), 5 * BLOCK_SIZE + 7);
  code(t, () => v.seek(f.ino, 5 * BLOCK_SIZE + 7, 'data'), 'ENXIO');
  store.commit(); // the same answers from stored blocks as from buffered ones
  t.is(v.seek(f.ino, 1, 'hole'), BLOCK_SIZE);
  t.is(v.seek(f.ino, BLOCK_SIZE, 'data'), 5 * BLOCK_SIZE);

  const g = v.create(v.rootIno, 'g', 0o644, 0, 0);
  v.write(g.ino, 0, Buffer.alloc(3 * BLOCK_SIZE, 9));
  t.is(v.fallocate(g.ino, 0, 10 * BLOCK_SIZE, { keepSize: false, punchHole: false, zeroRange: false }).size, 10 * BLOCK_SIZE);
  t.is(v.fallocate(g.ino, 0, 20 * BLOCK_SIZE, { keepSize: true, punchHole: false, zeroRange: false }).size, 10 * BLOCK_SIZE);
  v.fallocate(g.ino, 100, 2 * BLOCK_SIZE, { keepSize: true, punchHole: true, zeroRange: false });
  const back = v.read(g.ino, 0, 3 * BLOCK_SIZE).data;
  t.true(back.subarray(0, 100).every((b) => b === 9));
  t.true(back.subarray(100, 100 + 2 * BLOCK_SIZE).every((b) => b === 0));
  t.true(back.subarray(100 + 2 * BLOCK_SIZE).every((b) => b === 9));
  t.is(v.seek(g.ino, 0, 'hole'), BLOCK_SIZE, 'the wholly punched block is a hole');
  code(t, () => v.fallocate(g.ino, 0, 10, { keepSize: false, punchHole: true, zeroRange: false }), 'ENOTSUP');
});

test('rename onto a directory above the source is ENOTEMPTY, as Linux checks it before types', (t) => {
  const { store } = open(t);
  const v = store.createVolume('a');
  const b = v.mkdir(v.rootIno, 'b', 0o755, 0, 0);
  v.symlink(b.ino, 'a', 'a', 0, 0);
  const c = v.mkdir(b.ino, 'c', 0o755, 0, 0);
  code(t, () => v.rename(b.ino, 'a', v.rootIno, 'b'), 'ENOTEMPTY'); // a symlink onto its own parent
  code(t, () => v.rename(c.ino, 'x', v.rootIno, 'b'), 'ENOENT');
  code(t, () => v.rename(b.ino, 'c', v.rootIno, 'b'), 'ENOTEMPTY'); // a directory onto its parent
  code(t, () => v.rename(v.rootIno, 'b', c.ino, 'b'), 'EINVAL'); // into itself
  t.is(v.resolve('/b/a'), v.lookup(b.ino, 'a').ino);
});

test('a flush that fails midway (full disk) keeps the blocks it did not store, and no buffer is shared', (t) => {
  const { store } = open(t);
  const v = store.createVolume('a');
  const f = v.create(v.rootIno, 'f', 0o644, 0, 0);
  // Three partly written blocks: each held in a pooled 4 KiB buffer until flushed.
  const parts = [0, 1, 2].map((i) => Buffer.alloc(1000, 0x41 + i));
  parts.forEach((p, i) => v.write(f.ino, i * BLOCK_SIZE, p));
  const put = store.blocks.put.bind(store.blocks);
  let calls = 0;
  store.blocks.put = (data: Buffer) => {
    if (++calls === 2) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
    return put(data);
  };
  t.throws(() => v.flushFile(f.ino), { message: /no space/ });
  store.blocks.put = put;
  // Another file's partial block takes a buffer from the pool: it must not be one the first file holds.
  const g = v.create(v.rootIno, 'g', 0o644, 0, 0);
  v.write(g.ino, 0, Buffer.alloc(1000, 0x7a));
  v.flush();
  parts.forEach((p, i) => t.deepEqual(v.read(f.ino, i * BLOCK_SIZE, p.length).data, p, `block ${i}`));
  t.deepEqual(v.read(g.ino, 0, 1000).data, Buffer.alloc(1000, 0x7a));
});

test('volume info counts data still buffered (a partial block) once, in logical and unique bytes alike', (t) => {
  const { store } = open(t);
  const v = store.createVolume('v');
  const a = v.create(v.rootIno, 'f', 0o644, 0, 0);
  v.write(a.ino, 0, Buffer.alloc(1000, 7)); // less than a block: buffered, not stored yet
  const i = store.info('v');
  t.is(i.logicalBytes, 1000);
  t.is(i.uniqueBytes, 1000);
});

test('a write that keeps times (the client stamps them) changes data and size, not mtime or ctime', (t) => {
  const { store } = open(t);
  const v = store.createVolume('a');
  const f = v.create(v.rootIno, 'f', 0o644, 0, 0);
  const before = v.getattr(f.ino);
  const grown = v.write(f.ino, 0, Buffer.from('hello'), true);
  t.is(grown.size, 5);
  t.deepEqual([grown.mtime, grown.ctime], [before.mtime, before.ctime]);
  const over = v.write(f.ino, 1, Buffer.from('E'), true);
  t.is(over.size, 5, 'an overwrite inside keeps the size');
  t.deepEqual([over.mtime, over.ctime], [before.mtime, before.ctime]);
  t.is(v.read(f.ino, 0, 10).data.toString(), 'hEllo');
  const stamped = v.write(f.ino, 5, Buffer.from('!'));
  t.true(stamped.mtime[0] > before.mtime[0] || (stamped.mtime[0] === before.mtime[0] && stamped.mtime[1] > before.mtime[1]), 'a plain write stamps mtime');
});
