// Snapshots and rollback, imports that are all or nothing, readers beside the store's owner
// (Store.openReadOnly with pins), and gc in steps with the store changing between them.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { isPrismError } from '../../src/errors.js';
import { fsck } from '../../src/store/fsck.js';
import { gc, gcSteps } from '../../src/store/gc.js';
import { importPath } from '../../src/store/import.js';
import { Store } from '../../src/store/store.js';
import type { Volume } from '../../src/store/volume.js';
import { tmpDir } from '../helpers/tmp.js';

function put(v: Volume, name: string, data: Buffer | string): number {
  let ino: number;
  try { ino = v.lookup(v.rootIno, name).ino; } catch { ino = v.create(v.rootIno, name, 0o644, 0, 0).ino; }
  v.setattr(ino, { size: 0 });
  v.write(ino, 0, Buffer.from(data));
  return ino;
}

function get(v: Volume, name: string): string {
  const ino = v.resolve(`/${name}`);
  return v.read(ino, 0, v.getattr(ino).size).data.toString();
}

function names(v: Volume): string[] {
  return v.readdir(v.rootIno).map((e) => e.name.toString()).sort();
}

test('a snapshot is read-only (EROFS for every change), and rollback gives the volume its files back under its own id', (t) => {
  const s = Store.open(path.join(tmpDir(t), 's'));
  const v = s.createVolume('web', { quota: 1 << 20 });
  const ino = put(v, 'index.html', 'v1');
  s.snapshot('web', 'web-v1');
  put(v, 'index.html', 'v2');
  put(v, 'added', 'x');
  const snap = s.volume('web-v1');
  t.is(get(snap, 'index.html'), 'v1');
  for (const change of [
    () => snap.write(ino, 0, Buffer.from('no')),
    () => snap.create(snap.rootIno, 'new', 0o644, 0, 0),
    () => snap.unlink(snap.rootIno, 'index.html'),
    () => snap.setattr(ino, { mode: 0o600 }),
    () => snap.setattr(ino, { size: 0 }),
    () => snap.access(ino, 1000, [], 2),
  ]) t.true(isPrismError(t.throws(change), 'EROFS'));
  snap.access(ino, 0, [], 4); // reading is fine
  const id = v.rec.id;
  s.rollback('web', 'web-v1');
  t.is(get(v, 'index.html'), 'v1', 'the Volume held before the rollback sees the snapshot\'s files');
  t.deepEqual(names(s.volume('web')), ['index.html']);
  t.is(s.volume('web').rec.id, id, 'handles VMs hold still name this volume');
  t.is(s.volume('web').rec.quota, 1 << 20, 'its quota stays');
  put(s.volume('web'), 'index.html', 'v3'); // writable again; the snapshot is not changed
  t.is(get(snap, 'index.html'), 'v1');
  t.is(s.info('web').files, 2);
  s.close();
  const again = Store.open(path.join(s.dir));
  t.true(fsck(again).ok);
  t.true(again.volume('web-v1').rec.readOnly === true, 'read-only survives a reopen');
  again.close();
});

test('an import that fails changes nothing: an existing volume keeps its files, a new one is not made', async (t) => {
  const dir = tmpDir(t);
  const src = path.join(dir, 'src');
  fs.mkdirSync(src);
  for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(src, `f${i}`), crypto.randomBytes(100_000));
  const s = Store.open(path.join(dir, 's'));
  const v = s.createVolume('small', { quota: 1 << 20 });
  put(v, 'keep', 'old content');
  s.commit();
  const err = await t.throwsAsync(importPath(s, 'small', src));
  t.true(isPrismError(err, 'EDQUOT'), String(err));
  t.regex((err as Error).message, /volume small is over its quota/, 'the message names the volume, not its hidden copy');
  t.deepEqual(names(s.volume('small')), ['keep']);
  t.is(get(s.volume('small'), 'keep'), 'old content');
  t.deepEqual(s.allVolumeNames(), ['small'], 'no hidden copy left');
  // a new volume from a source that fails half way (an unreadable file) is not made at all
  fs.writeFileSync(path.join(src, 'zz-unreadable'), 'x');
  fs.chmodSync(path.join(src, 'zz-unreadable'), 0);
  if (process.getuid?.() !== 0) {
    await t.throwsAsync(importPath(s, 'fresh', src));
    t.false(s.has('fresh'));
  }
  fs.rmSync(path.join(src, 'zz-unreadable'));
  const r = await importPath(s, 'fresh', src);
  t.is(r.files, 20);
  t.deepEqual(s.volumeNames(), ['fresh', 'small']);
  s.close();
  t.true(fsck(Store.open(path.join(dir, 's'))).ok);
});

test('hidden copies left by a crash (a pin, a staged import) are dropped at the next open, and fsck counts them while they live', (t) => {
  const dir = path.join(tmpDir(t), 's');
  const s = Store.open(dir);
  put(s.createVolume('a'), 'f', crypto.randomBytes(200_000));
  const pin = s.pin('a');
  s.stage('a');
  s.commit();
  t.deepEqual(s.volumeNames(), ['a'], 'hidden copies are not listed');
  t.is(s.allVolumeNames().length, 3);
  t.true(fsck(s).ok, 'references from hidden copies count');
  t.is(s.volume(pin).shownName, 'a');
  s.abandon(); // a crash
  const again = Store.open(dir);
  t.deepEqual(again.allVolumeNames(), ['a']);
  t.true(fsck(again).ok);
  again.close();
});

test('a reader beside the owner sees what is committed, through a pin, while the owner changes and frees it', (t) => {
  const dir = path.join(tmpDir(t), 's');
  const owner = Store.open(dir);
  const v = owner.createVolume('a');
  const data = crypto.randomBytes(300_000);
  put(v, 'f', data);
  const pin = owner.pin('a');
  owner.commit();
  const ro = Store.openReadOnly(dir);
  // the owner goes on: the file is rewritten and removed, more data appended, uncommitted and committed
  put(v, 'f', crypto.randomBytes(300_000));
  v.unlink(v.rootIno, 'f');
  put(v, 'g', crypto.randomBytes(500_000));
  owner.commit();
  put(v, 'h', crypto.randomBytes(100_000));
  const p = ro.volume(pin);
  t.true(p.read(p.resolve('/f'), 0, data.length).data.equals(data), 'the pinned file as it was');
  t.deepEqual(ro.volumeNames(), ['a']);
  t.true(isPrismError(t.throws(() => ro.createVolume('b')), 'EROFS'));
  t.true(isPrismError(t.throws(() => put(ro.volume('a'), 'x', 'y')), 'EROFS'), 'no change to any volume');
  t.true(fsck(ro).ok, 'a check of the committed state beside the owner');
  t.true(isPrismError(t.throws(() => fsck(ro, { repair: true })), 'EROFS'));
  ro.close();
  // the reader truncated nothing: the owner's uncommitted appends are still there
  owner.commit();
  t.true(fsck(owner).ok);
  owner.unpin(pin);
  owner.close();
  t.true(fsck(Store.open(dir)).ok);
});

test('gc in steps while blocks are freed and shared between them: nothing freed comes back, nothing live is lost', (t) => {
  const dir = path.join(tmpDir(t), 's');
  const s = Store.open(dir);
  const v = s.createVolume('a');
  const files: Record<string, Buffer> = {};
  // many segments' worth is too slow for a unit test: small segments are not configurable, so roll by hand
  for (let seg = 0; seg < 4; seg++) {
    for (let i = 0; i < 8; i++) { const b = crypto.randomBytes(64 * 1024); files[`s${seg}-${i}`] = b; put(v, `s${seg}-${i}`, b); }
    s.commit();
    s.segments.rollNow();
    s.commit();
  }
  // most of each old segment dead, so all are candidates
  for (const n of Object.keys(files)) if (!n.endsWith('-0')) { v.unlink(v.rootIno, n); delete files[n]; }
  s.commit();
  const steps = gcSteps(s);
  let r = steps.next();
  let k = 0;
  while (!r.done) {
    // between steps: free a live block, share another, write new data
    const live = Object.keys(files);
    if (live.length > 1) { v.unlink(v.rootIno, live[0]!); delete files[live[0]!]; }
    const keep = Object.keys(files)[0]!;
    const copy = `copy${k++}`;
    put(v, copy, files[keep]!);
    files[copy] = files[keep]!;
    r = steps.next();
  }
  t.true(r.value.segmentsCompacted > 0, `compacted ${r.value.segmentsCompacted}`);
  for (const [n, b] of Object.entries(files)) t.true(v.read(v.resolve(`/${n}`), 0, b.length).data.equals(b), n);
  const report = fsck(s);
  t.true(report.ok, JSON.stringify(report.problems));
  s.close();
  const again = Store.open(dir);
  t.true(fsck(again).ok);
  t.is(gc(again).blocksUnreadable, 0);
  again.close();
});
