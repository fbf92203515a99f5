// The intent log: a COMMIT of overwrites of stored bytes appends their pages to the log instead of
// storing their blocks; a later checkpoint stores them. After a crash (abandon: nothing more written,
// as a kill -9 leaves it) the store comes back with every logged page, and never lays a logged page
// over anything a commit stored after it.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import { open as openLmdb } from 'lmdb';
import path from 'node:path';
import zlib from 'node:zlib';
import { fsck } from '../../src/store/fsck.js';
import { LOG_MAGIC, decodeBatch, encodeBatch, isPage } from '../../src/store/intent-log.js';
import { Store, type StoreOptions } from '../../src/store/store.js';
import type { Volume } from '../../src/store/volume.js';
import { tmpDir } from '../helpers/tmp.js';

const BLOCK = 65536;

// Every COMMIT with a block to log logs (by default it takes 16 never logged: see the last test).
const OPTS = { logMinBlocks: 1 };

function reopen(dir: string, s: Store): Store {
  s.abandon();
  return Store.open(dir, OPTS);
}

/** A store whose volume `v` holds /f: 16 blocks of 1s, committed. */
function storedFile(t: ExecutionContext, opts: StoreOptions = OPTS): { dir: string; s: Store; v: Volume; f: number } {
  const dir = path.join(tmpDir(t), 's');
  const s = Store.open(dir, opts);
  const v = s.createVolume('v');
  const f = v.create(v.rootIno, 'f', 0o644, 0, 0).ino;
  v.write(f, 0, Buffer.alloc(16 * BLOCK, 1));
  s.commit();
  return { dir, s, v, f };
}

const byteAt = (s: Store, p: string, at: number) => {
  const v = s.volume('v');
  return v.read(v.resolve(p), at, 1).data[0];
};

const logFiles = (dir: string) => {
  try { return fs.readdirSync(path.join(dir, 'log')); } catch { return []; }
};

/** Runs fn with performance.now moved `ms` ahead (what the timed commit reads). */
async function later<T>(ms: number, fn: () => Promise<T>): Promise<T> {
  const realNow = performance.now.bind(performance);
  Object.defineProperty(performance, 'now', { value: () => realNow() + ms, configurable: true });
  try {
    return await fn();
  } finally {
    Object.defineProperty(performance, 'now', { value: realNow, configurable: true });
  }
}

test('a COMMIT of overwrites logs their pages, stores no block, and a crash after it loses nothing', async (t) => {
  const { dir, s: opened, v, f } = storedFile(t);
  let s = opened;
  const before = s.commitCounters;
  v.write(f, 10, Buffer.alloc(5, 2)); // block 0, page 0
  v.write(f, 3 * BLOCK + 5000, Buffer.alloc(5000, 3)); // block 3, pages 1 and 2
  v.write(f, 16 * BLOCK - 3, Buffer.alloc(3, 4)); // the last page of the file
  await s.commitDurable();
  const after = s.commitCounters;
  t.is(after.logged - before.logged, 4, 'four pages logged');
  t.is(after.dataSyncs, before.dataSyncs, 'no segment was written or synced');
  t.true(v.hasDirtyData, 'the blocks stay buffered until a checkpoint');
  t.is(logFiles(dir).length, 1);

  s = reopen(dir, s);
  t.is(byteAt(s, '/f', 10), 2);
  t.is(byteAt(s, '/f', 9), 1, 'the page around the write is the stored block\'s');
  t.is(byteAt(s, '/f', 3 * BLOCK + 9999), 3);
  t.is(byteAt(s, '/f', 3 * BLOCK + 10_000), 1);
  t.is(byteAt(s, '/f', 16 * BLOCK - 1), 4);
  t.is(s.volume('v').getattr(s.volume('v').resolve('/f')).size, 16 * BLOCK, 'replay does not grow the file');
  t.false(s.volume('v').hasDirtyData, 'replay ends with a checkpoint');
  t.deepEqual(logFiles(dir), [], 'and the log files it replayed are deleted');
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

test('pages written again after a COMMIT are logged again by the next; a checkpoint spends the log', async (t) => {
  const { dir, s: opened, v, f } = storedFile(t);
  let s = opened;
  v.write(f, 100, Buffer.from('one'));
  await s.commitDurable();
  v.write(f, 100, Buffer.from('two'));
  await s.commitDurable();
  t.is(s.commitCounters.logged, 2);
  s = reopen(dir, s);
  const w = s.volume('v');
  t.is(w.read(w.resolve('/f'), 100, 3).data.toString(), 'two', 'batches replay in order');

  // A blocking commit stores every logged block and deletes the files it made spent.
  w.write(w.resolve('/f'), 100, Buffer.from('six'));
  await s.commitDurable();
  t.is(logFiles(dir).length, 1);
  s.commit();
  t.false(w.hasDirtyData);
  t.deepEqual(logFiles(dir), []);
  s = reopen(dir, s);
  t.is(s.volume('v').read(s.volume('v').resolve('/f'), 100, 3).data.toString(), 'six');
  s.close();
});

// Serial: they move performance.now, which the other tests of this file read (ava runs serial tests first, alone).
test.serial('a logged block stored later is never laid over by the older logged page', async (t) => {
  const { dir, s: opened, v, f } = storedFile(t);
  let s = opened;
  v.write(f, 100, Buffer.from('old'));
  await s.commitDurable(); // logged
  v.write(f, 100, Buffer.from('new')); // not logged: no COMMIT after it
  // Six seconds later the host's timed commit stores the block (older than the delay): a checkpoint.
  await later(6000, () => s.commitDurable({ timed: true }));
  t.false(v.hasDirtyData);
  s = reopen(dir, s);
  t.is(s.volume('v').read(s.volume('v').resolve('/f'), 100, 3).data.toString(), 'new');
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

test.serial('a young logged block stays buffered through timed commits, and its pages replay', async (t) => {
  const { dir, s: opened, v, f } = storedFile(t);
  let s = opened;
  v.write(f, 100, Buffer.from('log'));
  await s.commitDurable();
  const g = v.create(v.rootIno, 'g', 0o644, 0, 0).ino; // other changes the timed commit stores
  v.write(g, 0, Buffer.from('other'));
  await s.commitDurable({ timed: true });
  t.true(v.hasDirtyData, 'the logged block is younger than the delay');
  s = reopen(dir, s);
  const w = s.volume('v');
  t.is(w.read(w.resolve('/f'), 100, 3).data.toString(), 'log');
  t.is(w.read(w.resolve('/g'), 0, 5).data.toString(), 'other');
  s.close();
});

test.serial('once a logged block is due, the slices before the timed commit store every logged one, not the cut', async (t) => {
  const dir = path.join(tmpDir(t), 's');
  const s = Store.open(dir, OPTS);
  t.teardown(() => s.abandon());
  const v = s.createVolume('v');
  const f = v.create(v.rootIno, 'f', 0o644, 0, 0).ino;
  v.write(f, 0, Buffer.alloc(40 * BLOCK, 1));
  s.commit();
  for (let b = 0; b < 20; b++) v.write(f, b * BLOCK, Buffer.from('old'));
  await later(6000, async () => {
    for (let b = 20; b < 40; b++) v.write(f, b * BLOCK, Buffer.from('young'));
    await s.commitDurable(); // logs all 40
  });
  t.is(s.commitCounters.logged, 40);
  await later(6000, () => s.flushInSlices({ before: 'timed' }, 8));
  t.is(v.dirtyBlockCount, 0, 'the young logged blocks were stored in the slices too');
});

test('a file removed after its pages were logged stays removed; so does a rolled-back volume\'s content', async (t) => {
  const { dir, s: opened, v, f } = storedFile(t);
  let s = opened;
  const g = v.create(v.rootIno, 'g', 0o644, 0, 0).ino;
  v.write(g, 0, Buffer.alloc(2 * BLOCK, 5));
  s.snapshot('v', 'snap');
  s.commit();
  v.write(g, 7, Buffer.from('x'));
  v.write(f, 7, Buffer.from('y'));
  await s.commitDurable(); // both logged
  v.unlink(v.rootIno, 'g');
  await s.commitDurable({ timed: true }); // commits the unlink: must spend the log with it
  s = reopen(dir, s);
  let w = s.volume('v');
  t.throws(() => w.resolve('/g'), { code: 'ENOENT' });
  t.is(byteAt(s, '/f', 7), 'y'.charCodeAt(0));
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);

  w.write(w.resolve('/f'), 7, Buffer.from('z'));
  await s.commitDurable(); // logged
  s.rollback('v', 'snap');
  await s.commitDurable({ timed: true });
  s = reopen(dir, s);
  w = s.volume('v');
  t.is(byteAt(s, '/f', 7), 1, 'the snapshot\'s content, not the logged page');
  t.is(w.read(w.resolve('/g'), 7, 1).data[0], 5);
  s.close();
});

test('a removed volume\'s buffered blocks are let go, and the logged ones spend the log with the removal', async (t) => {
  const { dir, s, v, f } = storedFile(t);
  t.teardown(() => s.abandon());
  const w = s.createVolume('w');
  const g = w.create(w.rootIno, 'g', 0o644, 0, 0).ino;
  w.write(g, 0, Buffer.alloc(4 * BLOCK, 1));
  s.commit();
  w.write(g, 7, Buffer.from('x'));
  v.write(f, 7, Buffer.from('y'));
  await s.commitDurable(); // both logged
  t.is(logFiles(dir).length, 1);
  s.removeVolume('w');
  t.false(w.hasDirtyData);
  await s.commitDurable({ timed: true });
  t.deepEqual(logFiles(dir), [], 'the removal was a checkpoint: v\'s logged block is stored too');
  t.false(v.hasDirtyData);
});

test('a torn batch at the end of the log is not replayed; the batches before it are', async (t) => {
  const { dir, s: opened, v, f } = storedFile(t);
  let s = opened;
  v.write(f, 100, Buffer.from('AAA'));
  await s.commitDurable();
  v.write(f, 5 * BLOCK, Buffer.from('BBB'));
  await s.commitDurable();
  s.abandon();
  const [file] = logFiles(dir);
  const p = path.join(dir, 'log', file!);
  fs.truncateSync(p, fs.statSync(p).size - 10); // the second batch cut short, as by a crash
  s = Store.open(dir, OPTS);
  t.is(byteAt(s, '/f', 100), 'A'.charCodeAt(0));
  t.is(byteAt(s, '/f', 5 * BLOCK), 1, 'the torn batch is not applied');
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

test('a COMMIT with few blocks to log and other changes for LMDB stores them, unless they were logged before', async (t) => {
  const { dir, s: opened, v, f } = storedFile(t, { logMinBlocks: 4 });
  let s = opened;
  for (let b = 0; b < 3; b++) v.write(f, b * BLOCK, Buffer.from('x'));
  v.mkdir(v.rootIno, 'd', 0o755, 0, 0); // LMDB commits anyway
  await s.commitDurable();
  t.is(s.commitCounters.logged, 0, 'three blocks: stored as before');
  t.false(v.hasDirtyData);
  for (let b = 0; b < 4; b++) v.write(f, b * BLOCK, Buffer.from('y'));
  await s.commitDurable();
  t.is(s.commitCounters.logged, 4, 'four: logged');
  v.write(f, 0, Buffer.from('z'));
  await s.commitDurable();
  t.is(s.commitCounters.logged, 5, 'a block logged before is logged again (storing it would be a checkpoint)');
  t.true(v.hasDirtyData);
  s.abandon();
  s = Store.open(dir);
  t.is(byteAt(s, '/f', 0), 'z'.charCodeAt(0));
  t.is(byteAt(s, '/f', 3 * BLOCK), 'y'.charCodeAt(0));
  s.close();
});

test.serial('a full disk while appending to the log fails the COMMIT with ENOSPC; the next COMMIT logs the pages in a new file', async (t) => {
  const { dir, s: opened, v, f } = storedFile(t);
  let s = opened;
  for (let b = 0; b < 4; b++) v.write(f, b * BLOCK + 10, Buffer.from('kept'));
  const write = fs.writeSync;
  // The log's batch is half written, then the disk is full.
  (fs as { writeSync: unknown }).writeSync = (fd: number, buf: Buffer, off = 0, len = buf.length - off, ...rest: unknown[]) => {
    if (Buffer.isBuffer(buf) && buf.readUInt32LE(0) === LOG_MAGIC) {
      write(fd, buf, 0, buf.length >> 1);
      throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
    }
    return (write as (...a: unknown[]) => number)(fd, buf, off, len, ...rest);
  };
  try {
    await t.throwsAsync(s.commitDurable(), { code: 'ENOSPC' });
  } finally {
    (fs as { writeSync: unknown }).writeSync = write;
  }
  t.is(s.commitCounters.logged, 0);
  await s.commitDurable(); // logs them in a new file: replay skips the rest of one after a torn batch
  t.is(s.commitCounters.logged, 4);
  s = reopen(dir, s);
  for (let b = 0; b < 4; b++) t.is(s.volume('v').read(f, b * BLOCK + 10, 4).data.toString(), 'kept');
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

test('a batch decodes to what was encoded; a flipped byte or a short buffer is no batch', (t) => {
  const records = [
    { volume: 3, ino: 2 ** 40 + 7, offset: 2 ** 35 + 4096, data: Buffer.alloc(4096, 9) },
    { volume: 1, ino: 2, offset: 0, data: Buffer.from('tail') },
    { volume: 2, ino: 5, atime: [-5, 1] as [number, number], mtime: [2 ** 40, 999_999_999] as [number, number], ctime: [0, 0] as [number, number] },
  ];
  const buf = encodeBatch(records);
  const back = decodeBatch(buf, 0);
  t.is(back?.end, buf.length);
  t.deepEqual(back?.records.map((r) => (isPage(r) ? { ...r, data: Buffer.from(r.data) } : r)), records);
  const flipped = Buffer.from(buf);
  flipped[buf.length - 1] ^= 1;
  t.is(decodeBatch(flipped, 0), undefined);
  t.is(decodeBatch(buf.subarray(0, buf.length - 1), 0), undefined);
  const future = Buffer.from(buf);
  future[4] = 99;
  t.throws(() => decodeBatch(future, 0), { code: 'EINVAL' });
});

test('a batch of version 1 (pages alone, as stores of format 2 wrote them) still replays', (t) => {
  const data = Buffer.from('old page');
  const payload = Buffer.alloc(24 + data.length);
  payload.writeUInt32LE(7, 0);
  payload.writeBigUInt64LE(9n, 4);
  payload.writeBigUInt64LE(8192n, 12);
  payload.writeUInt32LE(data.length, 20);
  data.copy(payload, 24);
  const head = Buffer.alloc(20);
  head.writeUInt32LE(LOG_MAGIC, 0);
  head.writeUInt8(1, 4);
  head.writeUInt32LE(1, 8);
  head.writeUInt32LE(payload.length, 12);
  head.writeUInt32LE(zlib.crc32(payload), 16);
  const back = decodeBatch(Buffer.concat([head, payload]), 0);
  t.deepEqual(back?.records.map((r) => (isPage(r) ? { ...r, data: r.data.toString() } : r)), [{ volume: 7, ino: 9, offset: 8192, data: 'old page' }]);
});

test('a store of format 1 (no log) opens, and is marked format 3 before any log file can exist', (t) => {
  const dir = path.join(tmpDir(t), 's');
  let s = Store.open(dir);
  s.createVolume('v');
  s.close();
  const formatIs = (f?: number): number | undefined => {
    const env = openLmdb({ path: path.join(dir, 'meta.mdb'), maxDbs: 8, compression: false, pageSize: 4096 });
    const meta = env.openDB<number, string>('meta', {});
    if (f !== undefined) meta.putSync('format', f);
    const now = meta.get('format');
    env.close();
    return now;
  };
  t.is(formatIs(), 3);
  formatIs(1);
  s = Store.open(dir);
  t.true(s.has('v'));
  s.close();
  t.is(formatIs(), 3);
  formatIs(4);
  t.throws(() => Store.open(dir), { code: 'EINVAL', message: /store format 4 is not supported/ });
});

test('a COMMIT of overwrites and times alone is made durable by the log, without LMDB; a crash after it keeps both', async (t) => {
  const { dir, s: opened, v, f } = storedFile(t);
  let s = opened;
  const before = s.commitCounters;
  v.write(f, 100, Buffer.from('db')); // stamps mtime and ctime: a change of times alone
  v.setattr(f, { atime: [1000, 5] });
  const times = v.getattr(f);
  await s.commitDurable();
  const after = s.commitCounters;
  t.is(after.logOnly - before.logOnly, 1, 'made durable by the log alone');
  t.is(after.commits, before.commits, 'no LMDB commit');
  t.is(after.dataSyncs, before.dataSyncs, 'no segment synced');
  t.is(after.logged - before.logged, 1, 'one page');

  s = reopen(dir, s);
  const w = s.volume('v');
  t.is(w.read(f, 100, 2).data.toString(), 'db');
  const back = w.getattr(f);
  t.deepEqual([back.atime, back.mtime, back.ctime], [times.atime, times.mtime, times.ctime], 'the logged times are back');
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

test('a COMMIT with any change beyond times and overwrites (a name, a new file\'s data, a mode) commits LMDB', async (t) => {
  const { s, v, f } = storedFile(t);
  const changes: Array<[string, () => void]> = [
    ['a name', () => v.create(v.rootIno, 'g', 0o644, 0, 0)],
    ['a new file\'s data', () => v.write(v.resolve('/g'), 0, Buffer.from('new'))],
    ['a write that grows a file', () => v.write(f, 16 * BLOCK, Buffer.from('more'))],
    ['a mode', () => v.setattr(f, { mode: 0o600 })],
  ];
  for (const [what, change] of changes) {
    v.write(f, 100, Buffer.from('db'));
    change();
    const before = s.commitCounters;
    await s.commitDurable();
    t.is(s.commitCounters.commits - before.commits, 1, what);
    t.is(s.commitCounters.logOnly, before.logOnly, what);
  }
  s.close();
});

test('logged times never replace newer ones that a commit since holds', async (t) => {
  const { dir, s: opened, v, f } = storedFile(t);
  let s = opened;
  v.setattr(f, { mtime: [1000, 0] });
  v.write(f, 100, Buffer.from('db'), true);
  await s.commitDurable(); // logs the page and mtime 1000
  t.is(s.commitCounters.logOnly, 1);
  v.setattr(f, { mtime: [2000, 0], mode: 0o600 }); // a change beyond times: committed to LMDB
  await s.commitDurable();
  t.is(s.commitCounters.logOnly, 1);
  s = reopen(dir, s);
  const back = s.volume('v').getattr(f);
  t.deepEqual(back.mtime, [2000, 0], 'the older logged mtime is not replayed over the commit\'s');
  t.is(back.mode & 0o777, 0o600);
  t.is(s.volume('v').read(f, 100, 2).data.toString(), 'db', 'the logged page is');
  s.close();
});
