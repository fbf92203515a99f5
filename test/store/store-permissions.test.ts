// The store holds every VM's names, attributes and data: only its owner may read it. A new store is
// 0700 with 0600 files; a store made by an older version (0755 / 0644) is tightened when opened.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { hostSecret, tokenFile, vmToken } from '../../src/host/secrets.js';
import { Store } from '../../src/store/store.js';
import { tmpDir } from '../helpers/tmp.js';

const mode = (p: string) => fs.statSync(p).mode & 0o7777;

/** Every path in the store (two levels: the store, its files and directories, their files). */
function paths(dir: string): string[] {
  const out = [dir];
  for (const f of fs.readdirSync(dir)) {
    const p = path.join(dir, f);
    out.push(p);
    if (fs.statSync(p).isDirectory()) for (const g of fs.readdirSync(p)) out.push(path.join(p, g));
  }
  return out;
}

function expectPrivate(t: import('ava').ExecutionContext, dir: string): void {
  const all = paths(dir);
  for (const p of ['meta.mdb', 'meta.mdb-lock', 'LOCK', 'segments', 'host.key', 'vms']) {
    t.true(all.includes(path.join(dir, p)), `${p} exists`);
  }
  t.true(all.some((p) => p.endsWith('.seg')), 'a segment file exists');
  for (const p of all) {
    const want = fs.statSync(p).isDirectory() ? 0o700 : 0o600;
    t.is(mode(p), want, `${path.relative(dir, p) || '.'} is 0${want.toString(8)}, not 0${mode(p).toString(8)}`);
  }
}

function fill(store: Store, dir: string): void {
  const v = store.createVolume('v');
  v.write(v.create(v.rootIno, 'f', 0o644, 0, 0).ino, 0, Buffer.from('secret names and data'));
  store.commit();
  hostSecret(dir);
  vmToken(dir, 'vm1');
}

test('a new store is 0700 and every file in it 0600', (t) => {
  const old = process.umask(0o022);
  t.teardown(() => process.umask(old));
  const dir = path.join(tmpDir(t), 'store');
  const store = Store.open(dir);
  t.teardown(() => store.abandon());
  fill(store, dir);
  expectPrivate(t, dir);
});

test('a store left 0755 / 0644 by an older version is tightened when its owner opens it', (t) => {
  const dir = path.join(tmpDir(t), 'store');
  const s1 = Store.open(dir);
  fill(s1, dir);
  s1.close();
  for (const p of paths(dir)) fs.chmodSync(p, fs.statSync(p).isDirectory() ? 0o755 : 0o644);
  t.is(mode(path.join(dir, 'meta.mdb')), 0o644);
  t.is(mode(tokenFile(dir, 'vm1')), 0o644);
  const s2 = Store.open(dir);
  t.teardown(() => s2.abandon());
  expectPrivate(t, dir);
});
