// Store.commitDurable: a group commit whose fsyncs run off the event loop while the store keeps
// changing. What it makes durable is exactly the state at its cut; changes made meanwhile wait for
// the next commit; a blocking commit() meanwhile takes the cut over; waiting callers share commits.
import test, { type ExecutionContext } from 'ava';
import path from 'node:path';
import { sha256 } from '../../src/store/blocks.js';
import { fsck } from '../../src/store/fsck.js';
import { Store, type StoreOptions } from '../../src/store/store.js';
import type { Volume } from '../../src/store/volume.js';
import { tmpDir } from '../helpers/tmp.js';

function reopen(dir: string, s: Store): Store {
  s.abandon(); // as a kill -9 would leave it: nothing more is written
  return Store.open(dir);
}

/** A store whose volume `v` holds the file /f of `size` bytes of 1s, committed. */
function storedFile(t: ExecutionContext, size: number, opts: StoreOptions = {}): { dir: string; s: Store; v: Volume; f: number } {
  const dir = path.join(tmpDir(t), 's');
  const s = Store.open(dir, opts);
  const v = s.createVolume('v');
  const f = v.create(v.rootIno, 'f', 0o644, 0, 0).ino;
  v.write(f, 0, Buffer.alloc(size, 1));
  s.commit();
  return { dir, s, v, f };
}

const read = (s: Store, p: string) => {
  const v = s.volume('v');
  return v.read(v.resolve(p), 0, 1 << 20).data.toString();
};

test('a commit in flight makes exactly its cut durable; changes made meanwhile are the next commit\'s', async (t) => {
  const dir = path.join(tmpDir(t), 's');
  let s = Store.open(dir);
  const v = s.createVolume('v');
  // Enough files that the tree has inner nodes shared by all of them.
  for (let i = 0; i < 300; i++) v.write(v.create(v.rootIno, `f${i}`, 0o644, 0, 0).ino, 0, Buffer.from(`one ${i}`));
  s.commit();
  for (let i = 0; i < 300; i += 7) v.write(v.resolve(`/f${i}`), 0, Buffer.from(`two ${i}`));
  const p = s.commitDurable();
  // While it is in flight: change the very nodes it is writing, add and remove things.
  for (let i = 0; i < 300; i += 7) v.write(v.resolve(`/f${i}`), 0, Buffer.from(`three ${i}`));
  v.create(v.rootIno, 'late', 0o644, 0, 0);
  s.createVolume('w');
  t.is(read(s, '/f7'), 'three 7', 'readers see the newest state meanwhile');
  await p;
  s = reopen(dir, s);
  t.is(read(s, '/f7'), 'two 7', 'the cut, not what changed after it');
  t.is(read(s, '/f8'), 'one 8');
  t.false(s.volume('v').readdir(s.volume('v').rootIno).some((e) => e.name.toString() === 'late'));
  t.false(s.has('w'));
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

test('changes made during a commit are durable after the next one', async (t) => {
  const dir = path.join(tmpDir(t), 's');
  let s = Store.open(dir);
  const v = s.createVolume('v');
  v.write(v.create(v.rootIno, 'a', 0o644, 0, 0).ino, 0, Buffer.alloc(200_000, 1));
  const p1 = s.commitDurable();
  v.write(v.create(v.rootIno, 'b', 0o644, 0, 0).ino, 0, Buffer.alloc(200_000, 2));
  s.removeVolume('v'); // removed while the first commit is in flight
  t.false(s.has('v'));
  const p2 = s.commitDurable();
  await Promise.all([p1, p2]);
  s = reopen(dir, s);
  t.false(s.has('v'), 'the removal is durable');
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

test('a blocking commit() during a commitDurable writes both, in order', async (t) => {
  const dir = path.join(tmpDir(t), 's');
  let s = Store.open(dir);
  const v = s.createVolume('v');
  const a = v.create(v.rootIno, 'a', 0o644, 0, 0).ino;
  v.write(a, 0, Buffer.from('first'));
  const p = s.commitDurable();
  v.write(a, 0, Buffer.from('second'));
  v.write(v.create(v.rootIno, 'b', 0o644, 0, 0).ino, 0, Buffer.from('b'));
  s.commit();
  await p;
  s = reopen(dir, s);
  t.is(read(s, '/a'), 'second');
  t.is(read(s, '/b'), 'b');
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

test('callers arriving while a commit is in flight share the next one', async (t) => {
  const dir = path.join(tmpDir(t), 's');
  const s = Store.open(dir);
  t.teardown(() => s.close());
  const v = s.createVolume('v');
  const f = v.create(v.rootIno, 'f', 0o644, 0, 0).ino;
  const before = s.commitCounters;
  const waits: Array<Promise<void>> = [];
  for (let i = 0; i < 20; i++) {
    v.write(f, i * 65536, Buffer.alloc(65536, i + 1));
    waits.push(s.commitDurable());
  }
  await Promise.all(waits);
  const after = s.commitCounters;
  t.is(after.requests - before.requests, 20);
  t.true(after.commits - before.commits <= 2, `${after.commits - before.commits} store commits for 20 requests`);
  t.true(after.dataSyncs - before.dataSyncs <= 2);
  t.is(s.pendingChanges, 0);
});

/**
 * Hold the store's next `env.flushed` until release(): a commitDurable's cut is then in LMDB
 * (committed, written = true) but not settled, as while lmdb-js's writer thread fsyncs.
 */
function holdFlush(s: Store): { reached: Promise<void>; release: () => void } {
  const env = (s as unknown as { env: object }).env;
  let reach!: () => void;
  let release!: () => void;
  const reached = new Promise<void>((r) => { reach = r; });
  const gate = new Promise<void>((r) => { release = r; });
  Object.defineProperty(env, 'flushed', {
    configurable: true,
    get() {
      reach();
      return gate.then(() => { delete (env as { flushed?: unknown }).flushed; return (env as { flushed: PromiseLike<unknown> }).flushed; });
    },
  });
  return { reached, release };
}

const names = (s: Store) => { const v = s.volume('v'); return v.readdir(v.rootIno).map((e) => e.name.toString()).sort(); };

test('a blocking commit() after a commitDurable reached LMDB: reads see the newer commit, not the older cut', async (t) => {
  const dir = path.join(tmpDir(t), 's');
  let s = Store.open(dir);
  const v = s.createVolume('v');
  const data = Buffer.alloc(65536, 7);
  s.commit();
  v.create(v.rootIno, 'a', 0o644, 0, 0);
  v.write(v.create(v.rootIno, 'f', 0o644, 0, 0).ino, 0, data); // a new block, r = 1 in cut A
  const hold = holdFlush(s);
  const p = s.commitDurable(); // cut A
  await hold.reached; // A is in LMDB, waiting for its flush
  v.create(v.rootIno, 'b', 0o644, 0, 0); // the directory's nodes, copied from A's
  v.write(v.create(v.rootIno, 'g', 0o644, 0, 0).ino, 0, data); // the same block: r = 2
  s.commit(); // cut c, written after A and settled before it
  t.deepEqual(names(s), ['a', 'b', 'f', 'g'], 'the directory as c left it');
  t.is(s.blocks.get(sha256(data))?.r, 2, 'the block record as c left it');
  // What the next commit is made of: edits of what reads return.
  v.create(v.rootIno, 'c', 0o644, 0, 0);
  v.unlink(v.rootIno, Buffer.from('g'));
  s.commit();
  hold.release();
  await p;
  t.deepEqual(names(s), ['a', 'b', 'c', 'f']);
  s = reopen(dir, s);
  t.deepEqual(names(s), ['a', 'b', 'c', 'f']);
  t.is(s.blocks.get(sha256(data))?.r, 1);
  t.is(read(s, '/f'), data.toString());
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

test('an older cut dropped when a newer one settles leaves no stale reference count behind', async (t) => {
  // The count of v's root was read (and cached) before the clone; the clone's new count is only in
  // cut A. Once a newer commit has settled, reads must still see 2, or v's next write would change
  // the shared root in place, under the clone.
  const dir = path.join(tmpDir(t), 's');
  let s = Store.open(dir);
  const v = s.createVolume('v');
  const a = v.create(v.rootIno, 'a', 0o644, 0, 0).ino;
  v.write(a, 0, Buffer.from('one'));
  s.commit();
  s.clone('v', 'w');
  const hold = holdFlush(s);
  const p = s.commitDurable(); // cut A: the clone
  await hold.reached;
  s.createVolume('x'); // cut c touches nothing of v's
  s.commit();
  v.write(a, 0, Buffer.from('two'));
  const w = s.volume('w');
  t.is(w.read(w.resolve('/a'), 0, 10).data.toString(), 'one', 'the clone is unchanged');
  s.commit();
  hold.release();
  await p;
  s = reopen(dir, s);
  t.is(read(s, '/a'), 'two');
  const w2 = s.volume('w');
  t.is(w2.read(w2.resolve('/a'), 0, 10).data.toString(), 'one');
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

/** Make the next put to the store's volume records throw, inside a commit's LMDB transaction. */
function failNextVolumePut(s: Store): void {
  const db = (s as unknown as { volumesDb: { put: unknown } }).volumesDb;
  db.put = () => {
    delete (db as { put?: unknown }).put;
    throw new Error('injected failure');
  };
}

test('a commit whose LMDB transaction aborts leaves the block totals as they were', (t) => {
  const dir = path.join(tmpDir(t), 's');
  let s = Store.open(dir);
  const v = s.createVolume('v');
  s.commit();
  const before = { physical: s.blocks.physical, count: s.blocks.count };
  v.write(v.create(v.rootIno, 'f', 0o644, 0, 0).ino, 0, Buffer.alloc(65536, 3));
  failNextVolumePut(s);
  t.throws(() => s.commit(), { message: /injected failure/ });
  t.deepEqual({ physical: s.blocks.physical, count: s.blocks.count }, before, 'nothing was committed');
  s.commit(); // the same changes, pending again
  t.deepEqual({ physical: s.blocks.physical, count: s.blocks.count }, { physical: before.physical + 65536, count: before.count + 1 });
  s = reopen(dir, s);
  t.deepEqual({ physical: s.blocks.physical, count: s.blocks.count }, { physical: before.physical + 65536, count: before.count + 1 });
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

test('a blocking commit() that took over a commitDurable and aborted leaves it to be taken over again', async (t) => {
  const dir = path.join(tmpDir(t), 's');
  let s = Store.open(dir);
  const v = s.createVolume('v');
  const a = v.create(v.rootIno, 'a', 0o644, 0, 0).ino;
  v.write(a, 0, Buffer.from('one'));
  s.commit();
  v.write(a, 0, Buffer.from('two'));
  const p = s.commitDurable(); // cut A, syncing its segments: not in LMDB yet
  failNextVolumePut(s);
  t.throws(() => s.commit(), { message: /injected failure/ }); // took A over, aborted
  v.write(a, 0, Buffer.from('three'));
  s.commit(); // must take A over again (A is still not in LMDB), or A would be written after it
  await p;
  t.is(read(s, '/a'), 'three');
  s = reopen(dir, s);
  t.is(read(s, '/a'), 'three');
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

test('a timed commit leaves young overwrites of stored bytes buffered; a COMMIT, new blocks and growth do not wait', async (t) => {
  const dir = path.join(tmpDir(t), 's');
  let s = Store.open(dir);
  const v = s.createVolume('v');
  const over = v.create(v.rootIno, 'over', 0o644, 0, 0).ino;
  const grow = v.create(v.rootIno, 'grow', 0o644, 0, 0).ino;
  v.write(over, 0, Buffer.alloc(100_000, 1));
  v.write(grow, 0, Buffer.alloc(1000, 1));
  s.commit();
  v.write(over, 70_000, Buffer.alloc(10, 2)); // an overwrite inside the file: may wait
  v.write(grow, 900, Buffer.alloc(200, 2)); // over a stored block, but the file grows: must not
  const fresh = v.create(v.rootIno, 'fresh', 0o644, 0, 0).ino;
  v.write(fresh, 0, Buffer.from('new')); // no stored block under it: must not
  await s.flushInSlices({ before: 'timed' }); // as the host's timer does first
  t.true(v.hasDirtyData, 'the young overwrite is still buffered');
  await s.commitDurable({ timed: true });
  s = reopen(dir, s);
  let w = s.volume('v');
  t.is(w.read(w.resolve('/over'), 70_000, 10).data[0], 1, 'the young overwrite was left for later (the older content is intact)');
  t.is(w.getattr(w.resolve('/over')).size, 100_000);
  t.true(w.read(w.resolve('/grow'), 0, 2000).data.equals(Buffer.concat([Buffer.alloc(900, 1), Buffer.alloc(200, 2)])), 'a write that grew the file is in');
  t.is(w.read(w.resolve('/fresh'), 0, 10).data.toString(), 'new');
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);

  // The same overwrite, then a commit that is not timed: in.
  w.write(w.resolve('/over'), 70_000, Buffer.alloc(10, 3));
  const timed = s.commitDurable({ timed: true });
  const whole = s.commitDurable(); // the next commit, after the timed one: every overwrite
  await Promise.all([timed, whole]);
  s = reopen(dir, s);
  w = s.volume('v');
  t.is(w.read(w.resolve('/over'), 70_000, 10).data[0], 3);
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

// Serial: it moves performance.now, which the other tests of this file read (ava runs serial tests first, alone).
test.serial('a timed commit stores an overwrite that waited longer than its delay', async (t) => {
  const { dir, v, f, s: opened } = storedFile(t, 100_000);
  let s = opened;
  const realNow = performance.now.bind(performance);
  v.write(f, 5, Buffer.alloc(10, 2));
  // Six seconds later (the delay is five):
  const shifted = () => realNow() + 6000;
  Object.defineProperty(performance, 'now', { value: shifted, configurable: true });
  try {
    await s.commitDurable({ timed: true });
  } finally {
    Object.defineProperty(performance, 'now', { value: realNow, configurable: true });
  }
  s = reopen(dir, s);
  const w = s.volume('v');
  t.is(w.read(w.resolve('/f'), 5, 1).data[0], 2);
  s.close();
});

test('flushInSlices stores buffered blocks a slice at a time, the event loop turning between slices', async (t) => {
  const { dir, v, f, s: opened } = storedFile(t, 200 * 65536);
  let s = opened;
  for (let i = 0; i < 200; i++) v.write(f, i * 65536 + 100, Buffer.from([2])); // 200 blocks buffered
  let turns = 0;
  let done = false;
  const turn = (): void => { if (!done) { turns++; setImmediate(turn); } };
  setImmediate(turn);
  await s.flushInSlices({}, 32);
  done = true;
  t.false(v.hasDirtyData, 'everything buffered when it started is stored');
  t.true(turns >= 6, `the event loop turned ${turns} times during 7 slices`);
  await s.commitDurable();
  s = reopen(dir, s);
  const w = s.volume('v');
  const back = w.read(w.resolve('/f'), 0, 200 * 65536).data;
  t.true([...Array(200).keys()].every((i) => back[i * 65536 + 100] === 2 && back[i * 65536 + 99] === 1));
  t.deepEqual(fsck(s, { verifyData: true }).problems, []);
  s.close();
});

test('buffered blocks past the limit are flushed in the background, with no commit asked', async (t) => {
  // A block over a stored one counts the 4 KiB pages it holds against the limit.
  const { s, v, f } = storedFile(t, 100 * 65536, { dirtyDataLimit: 8 * 4096 });
  t.teardown(() => s.abandon());
  // 100 small overwrites: 100 pages held, twelve times the limit, and no one commits.
  for (let i = 0; i < 100; i++) v.write(f, i * 65536 + 7, Buffer.from([2]));
  for (let i = 0; i < 200 && v.hasDirtyData; i++) await new Promise((r) => setTimeout(r, 5));
  t.false(v.hasDirtyData, 'every block was hashed and stored');
  const back = v.read(f, 0, 100 * 65536).data;
  t.true([...Array(100).keys()].every((i) => back[i * 65536 + 7] === 2 && back[i * 65536 + 6] === 1));
});
