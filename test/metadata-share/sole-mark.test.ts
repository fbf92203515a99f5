// The sole-writer mark and its "unbounded" flag (docs/metadata-share.md): an agent leaves the errors
// of its posted changes to fsync only while the host says nothing can refuse them (no quota, room
// on its disk). Table and publisher, no processes.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Dispatcher } from '../../src/host/dispatch.js';
import { MetaPublisher } from '../../src/metadata-share/publisher.js';
import { MetaTable, SLOT_SIZE } from '../../src/metadata-share/table.js';
import { Store } from '../../src/store/store.js';

const table = (): MetaTable => MetaTable.create(new ArrayBuffer(MetaTable.geometry(1 << 20, 16).slotsAt + 64 * SLOT_SIZE), 16);

test('the mark says sole, and unbounded only when told; marking again replaces the flag', (t) => {
  const m = table();
  t.false(m.isSole(3));
  m.markSole(3);
  t.true(m.isSole(3));
  t.false(m.isSoleUnbounded(3), 'no flag: bounded');
  m.markSole(3, true);
  t.true(m.isSole(3));
  t.true(m.isSoleUnbounded(3));
  t.false(m.isSoleUnbounded(4), 'another volume');
  m.markSole(3, false);
  t.false(m.isSoleUnbounded(3));
  m.markSole(3, true);
  m.clearSole(3);
  t.false(m.isSole(3));
  t.false(m.isSoleUnbounded(3), 'no mark: nothing');
});

test('a slot that held attributes before the mark does not read as unbounded', (t) => {
  const m = table();
  // Fill every slot with attributes whose first value would read as the flag, then mark.
  for (let ino = 1; ino <= 64; ino++) m.putAttr(3, ino, Array.from({ length: 16 }, () => 1));
  m.markSole(3);
  if (m.isSole(3)) t.false(m.isSoleUnbounded(3));
  else t.pass('the mark was not kept (the table was full): bounded anyway');
});

test('the publisher marks sole volumes unbounded without a quota and with room; a quota or a full disk clears the flag', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-sole-'));
  const store = Store.open(dir);
  t.teardown(() => { store.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  store.createVolume('free');
  store.createVolume('capped', { quota: 1 << 30 });
  const publisher = new MetaPublisher();
  const m = table();
  const d = new Dispatcher(store, { name: 'a', volumes: ['free', 'capped'] }, crypto.randomBytes(32), { commit: () => Promise.resolve(), verifier: new Uint8Array(8), meta: publisher.sink('a') });
  const free = store.volume('free').rec.id, capped = store.volume('capped').rec.id;
  publisher.add({ name: 'a', volumes: ['free', 'capped'], key: d.key, table: m, sole: [{ id: free, noQuota: true }, { id: capped, noQuota: false }] });
  t.true(m.isSoleUnbounded(free));
  t.true(m.isSole(capped));
  t.false(m.isSoleUnbounded(capped), 'a quota bounds it');

  const admin = publisher.sink(null);
  store.setQuota('free', undefined, 1000); // an inode quota bounds it too
  admin.boundsChanged?.(store.volume('free'));
  t.false(m.isSoleUnbounded(free));
  store.setQuota('free', undefined, null);
  store.setQuota('capped', undefined);
  admin.boundsChanged?.(store.volume('free'));
  admin.boundsChanged?.(store.volume('capped'));
  t.true(m.isSoleUnbounded(free));
  t.true(m.isSoleUnbounded(capped), 'quota lifted');

  publisher.roomy(false); // the host's disk is nearly full
  t.false(m.isSoleUnbounded(free));
  t.true(m.isSole(free), 'still sole');
  publisher.roomy(true);
  t.true(m.isSoleUnbounded(free));

  admin.willChange?.(store.volume('free')); // `prism put`: not sole any more, for good
  t.false(m.isSole(free));
  publisher.roomy(false);
  publisher.roomy(true);
  t.false(m.isSole(free), 'not marked again');
});
