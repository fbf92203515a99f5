import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { fsck } from '../../src/store/fsck.js';
import { gc } from '../../src/store/gc.js';
import { Store } from '../../src/store/store.js';
import type { Volume } from '../../src/store/volume.js';
import { tmpDir } from '../helpers/tmp.js';

function writeFile(v: Volume, name: string, data: Buffer): void {
  const a = v.create(v.rootIno, name, 0o644, 0, 0);
  v.write(a.ino, 0, data);
}

function readPath(v: Volume, p: string): Buffer {
  const ino = v.resolve(p);
  return v.read(ino, 0, v.getattr(ino).size).data;
}

function segmentBytes(store: Store): number {
  return store.segments.list().reduce((n, s) => n + store.segments.size(s), 0);
}

type Files = Record<string, Record<string, Buffer>>;

/**
 * Segment 1: volume a (4 MiB) and volume b (1 MiB, one file shared with a). Then a roll, so segment 1
 * is no longer the active segment, and volume c (256 KiB) in segment 2.
 */
function setup(store: Store): Files {
  const shared = crypto.randomBytes(200_000);
  const files: Files = {
    a: { a0: crypto.randomBytes(1 << 20), a1: crypto.randomBytes(1 << 20), a2: crypto.randomBytes(1 << 20), a3: crypto.randomBytes(1 << 20), s: shared },
    b: { b0: crypto.randomBytes(800_000), s: shared },
  };
  for (const [name, content] of Object.entries(files)) {
    const v = store.createVolume(name);
    for (const [f, data] of Object.entries(content)) writeFile(v, f, data);
  }
  store.commit();
  store.segments.rollNow();
  files.c = { c0: crypto.randomBytes(256 << 10) };
  const c = store.createVolume('c');
  writeFile(c, 'c0', files.c.c0);
  store.commit();
  return files;
}

function checkFiles(t: import('ava').ExecutionContext, store: Store, files: Files, names: string[]): void {
  for (const name of names) {
    const v = store.volume(name);
    for (const [f, data] of Object.entries(files[name])) t.true(readPath(v, '/' + f).equals(data), `${name}:/${f}`);
  }
}

test('gc reclaims the space of a removed volume; the others read back identically', (t) => {
  const dir = tmpDir(t);
  let store = Store.open(dir);
  const files = setup(store);
  t.deepEqual(store.segments.list(), [1, 2]);
  store.removeVolume('a');
  store.commit();
  const before = segmentBytes(store);
  const progress: Array<[number, number]> = [];

  const r = gc(store, { onProgress: (d, n) => progress.push([d, n]) });
  const after = segmentBytes(store);
  t.true(before - after > 4_000_000, `${before} -> ${after}`);
  t.is(r.bytesReclaimed, before - after);
  t.is(r.segmentsBefore, 2);
  t.is(r.segmentsAfter, 2);
  t.is(r.segmentsCompacted, 1);
  t.is(r.blocksUnreadable, 0);
  // b's blocks (including the one shared with the removed a) moved; c's were in the active segment.
  t.is(r.blocksMoved, Math.ceil(800_000 / 65536) + Math.ceil(200_000 / 65536));
  t.is(store.blocks.count, r.blocksMoved + (256 << 10) / 65536);
  t.false(fs.existsSync(store.segments.file(1)));
  t.deepEqual(progress[progress.length - 1], [1, 1]);
  checkFiles(t, store, files, ['b', 'c']);
  t.deepEqual(fsck(store).problems, []);
  store.close();

  store = Store.open(dir);
  t.teardown(() => store.close());
  checkFiles(t, store, files, ['b', 'c']);
  t.deepEqual(fsck(store).problems, []);
  // New writes after gc land and read back.
  const d = store.createVolume('d');
  const fresh = crypto.randomBytes(150_000);
  writeFile(d, 'x', fresh);
  store.commit();
  t.true(readPath(d, '/x').equals(fresh));
  t.deepEqual(fsck(store).problems, []);
});

test('gc deletes an old segment only after a commit points every block away from it', (t) => {
  const dir = tmpDir(t);
  const store = Store.open(dir);
  t.teardown(() => store.close());
  const files = setup(store);
  store.removeVolume('a');
  store.commit();
  const removed: number[] = [];
  const remove = store.segments.remove.bind(store.segments);
  store.segments.remove = (seg: number) => {
    // What a crash right now would leave: the committed index, and the segment files as they are.
    for (const { value } of store.blocksDb.getRange()) {
      t.not(value.s, seg, `a committed block still lives in segment ${seg}`);
      t.true(store.segments.size(value.s) >= value.o + value.n, 'committed copies are on disk');
    }
    removed.push(seg);
    remove(seg);
  };
  const r = gc(store);
  t.deepEqual(removed, [1]);
  t.is(r.segmentsCompacted, 1);
  checkFiles(t, store, files, ['b', 'c']);
});

test('gc leaves segments above the threshold, and deletes segments with no live block without copying', (t) => {
  const dir = tmpDir(t);
  const store = Store.open(dir);
  t.teardown(() => store.close());
  const files = setup(store);
  const before = segmentBytes(store);
  const r = gc(store);
  t.deepEqual(r, { segmentsBefore: 2, segmentsAfter: 2, segmentsCompacted: 0, blocksMoved: 0, bytesReclaimed: 0, blocksUnreadable: 0 });
  t.is(segmentBytes(store), before);

  // A clone keeps a's data alive: removing a frees nothing.
  store.clone('a', 'a2');
  store.removeVolume('a');
  t.is(gc(store).segmentsCompacted, 0);
  checkFiles(t, store, { a2: files.a }, ['a2']);

  // With a2 and b gone nothing in segment 1 is live: it is deleted, nothing is moved.
  store.removeVolume('a2');
  store.removeVolume('b');
  const r2 = gc(store);
  t.is(r2.segmentsCompacted, 1);
  t.is(r2.blocksMoved, 0);
  t.deepEqual(store.segments.list(), [2]);
  checkFiles(t, store, files, ['c']);
  t.deepEqual(fsck(store).problems, []);
});

test('gc keeps a segment holding a block it cannot read', (t) => {
  const dir = tmpDir(t);
  let store = Store.open(dir);
  const files = setup(store);
  const v = store.volume('b');
  const hash = v.blockList(v.resolve('/b0'))[0][1];
  const rec = store.blocks.get(hash)!;
  store.removeVolume('a');
  store.close();
  const fd = fs.openSync(store.segments.file(rec.s), 'r+');
  const b = Buffer.alloc(2);
  fs.readSync(fd, b, 0, 2, rec.o + 100);
  b[0] ^= 0xff; b[1] ^= 0x0f;
  fs.writeSync(fd, b, 0, 2, rec.o + 100);
  fs.closeSync(fd);

  store = Store.open(dir);
  t.teardown(() => store.close());
  const r = gc(store);
  t.is(r.blocksUnreadable, 1);
  t.is(r.segmentsCompacted, 0);
  t.true(fs.existsSync(store.segments.file(1)), 'the segment with the unreadable block stays');
  t.true(r.blocksMoved > 0);
  // Everything else moved and reads back; the damaged block is still reported by fsck, not lost.
  t.true(readPath(store.volume('b'), '/s').equals(files.b.s));
  checkFiles(t, store, files, ['c']);
  t.deepEqual(fsck(store).problems.map((p) => p.kind), ['block-corrupt']);
});
