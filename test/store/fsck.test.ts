import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import zlib from 'node:zlib';
import { PrismError } from '../../src/errors.js';
import { fsck } from '../../src/store/fsck.js';
import { S_IFIFO } from '../../src/posix/mode.js';
import { direntKey, inodeKey, layerOf, localOf, type InodeRec } from '../../src/store/layout.js';
import { HEADER_SIZE } from '../../src/store/segments.js';
import { Store } from '../../src/store/store.js';
import type { Volume } from '../../src/store/volume.js';
import { tmpDir } from '../helpers/tmp.js';

function writeFile(v: Volume, dir: number, name: string, data: Buffer): number {
  const a = v.create(dir, name, 0o644, 0, 0);
  v.write(a.ino, 0, data);
  return a.ino;
}

function readPath(v: Volume, p: string): Buffer {
  const ino = v.resolve(p);
  return v.read(ino, 0, v.getattr(ino).size).data;
}

/** Put an inode record straight into its layer tree, bypassing the volume's bookkeeping. */
function putInodeRaw(store: Store, v: Volume, ino: number, rec: InodeRec): void {
  const l = v.rec.layers[layerOf(ino)];
  l.root = store.tree.put(l.root, inodeKey(localOf(ino)), rec);
  store.changed(v);
}

/** A store with plain volumes, clones, composes, hard links, symlinks, devices and enough files for inner nodes. */
function populate(store: Store): { big: Buffer } {
  const a = store.createVolume('a');
  const root = a.rootIno;
  const dir = a.mkdir(root, 'dir', 0o755, 0, 0).ino;
  const sub = a.mkdir(dir, 'sub', 0o755, 0, 0).ino;
  a.mkdir(sub, 'deeper', 0o755, 0, 0);
  for (let i = 0; i < 150; i++) writeFile(a, dir, `f${i}`, Buffer.from(`file ${i} `.repeat(i + 1)));
  const big = crypto.randomBytes(300_000);
  const bigIno = writeFile(a, root, 'big', big);
  writeFile(a, root, 'dup', big); // same content: deduplicated
  a.link(bigIno, sub, 'big-link');
  a.symlink(root, 'ln', '/dir/f1', 0, 0);
  a.mknod(root, 'fifo', S_IFIFO | 0o644, 0, 0, 0);
  a.setxattr(bigIno, 'user.note', Buffer.from('hello'));
  store.commit();

  store.clone('a', 'b');
  const b = store.volume('b');
  b.write(b.resolve('/big'), 10, Buffer.from('changed in b'));
  b.unlink(b.resolve('/dir'), 'f3');
  b.mkdir(b.rootIno, 'newdir', 0o755, 0, 0);
  b.rename(b.resolve('/dir'), 'f4', b.resolve('/newdir'), 'f4');
  // sub holds a hard link whose other link (/big) is outside the selection: nlink 2, one visible link.
  store.compose('c', [{ volume: 'a', path: '/dir/sub', dest: '/x/sub' }, { volume: 'b', path: '/dir/f5' }]);
  store.compose('r', [{ volume: 'a', path: '/dir', dest: '/' }]);
  store.clone('c', 'c2');
  const c2 = store.volume('c2');
  writeFile(c2, c2.rootIno, 'new-in-c2', Buffer.from('c2 data'));
  store.info('c'); // materializes the usage of a composed volume
  store.commit();
  return { big };
}

test('fsck finds nothing wrong in a healthy store with clones, composes and hard links', (t) => {
  const dir = tmpDir(t);
  const store = Store.open(dir);
  populate(store);
  const phases = new Set<string>();
  const r = fsck(store, { onProgress: (_d, _t, phase) => { phases.add(phase); } });
  t.deepEqual(r.problems, []);
  t.true(r.ok);
  t.is(r.checked.volumes, 5);
  t.is(r.checked.blocks, store.blocksDb.getCount());
  t.true(r.checked.nodes > 5, `${r.checked.nodes} nodes`);
  t.true(r.checked.inodes > 300, `${r.checked.inodes} inodes`);
  t.deepEqual([...phases].sort(), ['blocks', 'data', 'namespace', 'nodes', 'segments']);
  // The hard link crossing the compose selection is visible once but counts two links.
  const c = store.volume('c');
  t.is(c.getattr(c.resolve('/x/sub/big-link')).nlink, 2);
  store.close();

  const again = Store.open(dir);
  t.teardown(() => again.close());
  const r2 = fsck(again, { repair: true });
  t.deepEqual(r2.problems, []);
  t.true(r2.ok);
});

test('fsck reports a corrupted segment byte, and reads of that block fail with EIO', (t) => {
  const dir = tmpDir(t);
  let store = Store.open(dir);
  const v = store.createVolume('v');
  const victim = crypto.randomBytes(100_000);
  const safe = crypto.randomBytes(70_000);
  const ino = writeFile(v, v.rootIno, 'victim', victim);
  writeFile(v, v.rootIno, 'safe', safe);
  store.commit();
  const hash = v.blockList(ino)[0][1];
  const rec = store.blocks.get(hash)!;
  const file = store.segments.file(rec.s);
  store.close();

  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, rec.o + 1234);
  b[0] ^= 0x40;
  fs.writeSync(fd, b, 0, 1, rec.o + 1234);
  fs.closeSync(fd);

  store = Store.open(dir);
  t.teardown(() => store.close());
  const r = fsck(store);
  t.false(r.ok);
  t.is(r.problems.length, 1);
  t.is(r.problems[0].kind, 'block-corrupt');
  t.false(r.problems[0].repaired);
  t.true(r.problems[0].detail.includes(hash.toString('hex').slice(0, 16)), r.problems[0].detail);
  // Repair cannot fix content.
  t.false(fsck(store, { repair: true }).ok);
  // Without reading data, the corruption is not seen.
  t.true(fsck(store, { verifyData: false }).ok);

  const v2 = store.volume('v');
  const err = t.throws(() => readPath(v2, '/victim'), { instanceOf: PrismError });
  t.is((err as PrismError).code, 'EIO');
  t.true(readPath(v2, '/safe').equals(safe));
});

test('fsck recomputes SHA-256: content changed with a matching crc is still reported', (t) => {
  const dir = tmpDir(t);
  let store = Store.open(dir);
  const v = store.createVolume('v');
  const ino = writeFile(v, v.rootIno, 'f', crypto.randomBytes(65_536));
  store.commit();
  const hash = v.blockList(ino)[0][1];
  const rec = store.blocks.get(hash)!;
  const file = store.segments.file(rec.s);
  store.close();

  const data = fs.readFileSync(file);
  const at = rec.o;
  data[at + 7] ^= 0xff;
  data.writeUInt32LE(zlib.crc32(data.subarray(at, at + rec.n)), at - HEADER_SIZE + 8);
  fs.writeFileSync(file, data);

  store = Store.open(dir);
  t.teardown(() => store.close());
  const r = fsck(store);
  t.false(r.ok);
  t.deepEqual(r.problems.map((p) => p.kind), ['block-corrupt']);
  t.regex(r.problems[0].detail, /does not match its hash/);
});

test('fsck detects and repairs wrong block and node reference counts and a leaked block', (t) => {
  const dir = tmpDir(t);
  let store = Store.open(dir);
  const v = store.createVolume('v');
  const data = crypto.randomBytes(65_536);
  const i1 = writeFile(v, v.rootIno, 'one', data);
  writeFile(v, v.rootIno, 'two', data); // the same block in two leaf entries: count 2
  writeFile(v, v.rootIno, 'three', crypto.randomBytes(65_536));
  store.clone('v', 'w'); // the layer root is shared: node count 2
  store.commit();

  const shared = v.blockList(i1)[0][1];
  t.is(store.blocks.get(shared)!.r, 2);
  const other = v.blockList(v.resolve('/three'))[0][1];
  const root = v.rec.layers[0].root;
  t.is(store.nodeStore.refs(root), 2);
  const leaked = store.blocks.put(crypto.randomBytes(1000));

  store.blocks.set(shared, { ...store.blocks.get(shared)!, r: 1 });
  store.blocks.set(other, { ...store.blocks.get(other)!, r: 5 });
  store.blocks.set(leaked, { ...store.blocks.get(leaked)!, r: 1 });
  store.nodeStore.setRefs(root, 7);
  store.commit();

  const r = fsck(store);
  t.false(r.ok);
  t.deepEqual(r.problems.map((p) => p.kind).sort(), ['block-leaked', 'block-refs', 'block-refs', 'node-refs']);
  t.true(r.problems.every((p) => !p.repaired));
  t.is(store.blocks.get(other)!.r, 5, 'without repair nothing changes');

  const fixed = fsck(store, { repair: true });
  t.true(fixed.ok);
  t.is(fixed.problems.length, 4);
  t.true(fixed.problems.every((p) => p.repaired));
  store.close();

  store = Store.open(dir);
  t.teardown(() => store.close());
  t.is(store.blocks.get(shared)!.r, 2);
  t.is(store.blocks.get(other)!.r, 1);
  t.is(store.blocks.get(leaked), undefined, 'the leaked block left the index');
  t.is(store.nodeStore.refs(root), 2);
  t.deepEqual(fsck(store).problems, []);
  // Both volumes still read and diverge correctly after the repair.
  const w = store.volume('w');
  w.write(w.resolve('/one'), 0, Buffer.from('w only'));
  store.commit();
  t.true(readPath(store.volume('v'), '/one').equals(data));
  t.deepEqual(fsck(store).problems, []);
});

test('fsck detects and repairs wrong link counts', (t) => {
  const dir = tmpDir(t);
  let store = Store.open(dir);
  const v = store.createVolume('v');
  const d = v.mkdir(v.rootIno, 'd', 0o755, 0, 0).ino;
  v.mkdir(d, 'e', 0o755, 0, 0);
  const f = writeFile(v, d, 'f', Buffer.from('linked'));
  v.link(f, v.rootIno, 'f2');
  store.commit();
  t.is(v.inode(f).nlink, 2);
  t.is(v.inode(d).nlink, 3);
  const usage = { ...v.rec.usage! };

  putInodeRaw(store, v, f, { ...v.inode(f), nlink: 5 });
  putInodeRaw(store, v, d, { ...v.inode(d), nlink: 9 });
  store.commit();

  const r = fsck(store);
  t.false(r.ok);
  t.deepEqual(r.problems.map((p) => p.kind), ['nlink', 'nlink']);
  t.is(v.inode(f).nlink, 5);

  const fixed = fsck(store, { repair: true });
  t.true(fixed.ok);
  t.true(fixed.problems.every((p) => p.kind === 'nlink' && p.repaired));
  store.close();

  store = Store.open(dir);
  t.teardown(() => store.close());
  const v2 = store.volume('v');
  t.is(v2.inode(f).nlink, 2);
  t.is(v2.inode(d).nlink, 3);
  t.deepEqual(v2.rec.usage, usage);
  t.deepEqual(fsck(store).problems, []);
  // The file behaves: two unlinks free it.
  v2.unlink(v2.rootIno, 'f2');
  v2.unlink(d, 'f');
  t.throws(() => v2.inode(f), { instanceOf: PrismError });
  store.commit();
  t.deepEqual(fsck(store).problems, []);
});

test('fsck frees a leaked inode, fixes usage and segment statistics', (t) => {
  const dir = tmpDir(t);
  const store = Store.open(dir);
  t.teardown(() => store.close());
  const v = store.createVolume('v');
  const keep = crypto.randomBytes(80_000);
  writeFile(v, v.rootIno, 'keep', keep);
  const lost = writeFile(v, v.rootIno, 'lost', crypto.randomBytes(130_000));
  const lostHash = v.blockList(lost)[0][1];
  store.commit();
  const blocksBefore = store.blocksDb.getCount();
  // Drop the entry but not the inode: nothing reaches it any more.
  const l = v.rec.layers[0];
  l.root = store.tree.del(l.root, direntKey(localOf(v.rootIno), Buffer.from('lost')));
  store.changed(v);
  store.commit();
  const seg = store.blocks.get(lostHash)!.s;
  store.segStatsDb.putSync(seg, { live: 1, blocks: 1 });

  const r = fsck(store);
  t.false(r.ok);
  t.deepEqual(r.problems.map((p) => p.kind).sort(), ['inode-leaked', 'segment-stats', 'usage']);

  const fixed = fsck(store, { repair: true });
  t.true(fixed.ok, JSON.stringify(fixed.problems));
  t.throws(() => v.inode(lost), { instanceOf: PrismError });
  t.is(store.blocks.get(lostHash), undefined, 'its blocks were released');
  t.is(store.blocksDb.getCount(), blocksBefore - 2); // 130,000 bytes: two blocks
  t.deepEqual(v.rec.usage, { bytes: keep.length, inodes: 2, meta: 'keep'.length });
  t.true(readPath(v, '/keep').equals(keep));
  t.deepEqual(fsck(store).problems, []);
});
