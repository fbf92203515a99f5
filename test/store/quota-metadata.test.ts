// A quota bounds everything a guest can make the host store: file data, and also extended attributes
// (name + value), symlink targets and directory entry names; an inode quota bounds the number of
// inodes. Through the dispatcher, as a guest would ask.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Dispatcher } from '../../src/host/dispatch.js';
import { Proc } from '../../src/protocol/procs.js';
import { PrismError, type PosixCode } from '../../src/errors.js';
import { fsck } from '../../src/store/fsck.js';
import { MAX_XATTR_VALUE } from '../../src/posix/limits.js';
import { Store } from '../../src/store/store.js';
import { tmpDir } from '../helpers/tmp.js';

const MiB = 1 << 20;

function setup(t: Parameters<typeof tmpDir>[0], opts: { quota?: number; inodeQuota?: number }) {
  const dir = path.join(tmpDir(t), 'store');
  const store = Store.open(dir);
  t.teardown(() => store.abandon());
  const v = store.createVolume('v', opts);
  const d = new Dispatcher(store, { name: 'vm', volumes: ['v'] }, crypto.randomBytes(32), { commit: () => store.commitDurable(), verifier: new Uint8Array(8) });
  const fh = (ino: number) => d.key.make({ volumeId: v.rec.id, ino });
  const code = (proc: Proc, args: unknown[]): PosixCode | 'ok' => {
    try { d.call(proc, args); return 'ok'; } catch (e) { if (e instanceof PrismError) return e.code; throw e; }
  };
  const made = (proc: Proc, args: unknown[]): number => {
    const r = d.call(proc, args) as unknown[];
    return (r[1] as number[])[0];
  };
  return { dir, store, v, fh, code, made };
}

/** Calls fn(i) until it does not answer 'ok'; returns how many succeeded and the code that stopped it. */
function until(fn: (i: number) => PosixCode | 'ok', max: number): { n: number; stop: PosixCode | 'ok' } {
  for (let i = 0; i < max; i++) {
    const c = fn(i);
    if (c !== 'ok') return { n: i, stop: c };
  }
  return { n: max, stop: 'ok' };
}

test('after EDQUOT on data, 64 KiB extended attributes are refused too (EDQUOT), and the metadata file stays small', (t) => {
  const { dir, store, v, fh, code, made } = setup(t, { quota: MiB });
  const f = made(Proc.CREATE, [fh(v.rootIno), Buffer.from('f'), 0o644, 0, 0, false]);
  const chunk = crypto.randomBytes(64 * 1024);
  const data = until((i) => code(Proc.WRITE, [fh(f), i * chunk.length, chunk, 0]), 64);
  t.is(data.stop, 'EDQUOT', 'data stops at the quota');
  const x = until((i) => code(Proc.SETXATTR, [fh(f), Buffer.from(`user.x${i}`), crypto.randomBytes(MAX_XATTR_VALUE), 0]), 2000);
  t.is(x.stop, 'EDQUOT', 'xattrs stop at the quota');
  t.true(x.n <= 1, `${x.n} 64 KiB attributes were taken after the quota was full`);
  store.commit();
  t.true(fs.statSync(path.join(dir, 'meta.mdb')).size < 16 * MiB, `meta.mdb is ${fs.statSync(path.join(dir, 'meta.mdb')).size} bytes`);
  t.true(fsck(store).ok);
});

test('extended attributes alone fill a quota: name and value are charged, removal gives the room back', (t) => {
  const { store, v, fh, code, made } = setup(t, { quota: MiB });
  const f = made(Proc.CREATE, [fh(v.rootIno), Buffer.from('f'), 0o644, 0, 0, false]);
  const value = crypto.randomBytes(MAX_XATTR_VALUE);
  const x = until((i) => code(Proc.SETXATTR, [fh(f), Buffer.from(`user.a${i}`), value, 0]), 100);
  t.is(x.stop, 'EDQUOT');
  t.true(x.n >= 14 && x.n <= 16, `${x.n} attributes of 64 KiB under 1 MiB`);
  t.is(code(Proc.REMOVEXATTR, [fh(f), Buffer.from('user.a0')]), 'ok');
  t.is(code(Proc.SETXATTR, [fh(f), Buffer.from('user.again'), value, 0]), 'ok', 'removing one made room for one');
  // Replacing a value charges only the difference.
  t.is(code(Proc.SETXATTR, [fh(f), Buffer.from('user.again'), value.subarray(0, 10), 2]), 'ok');
  t.is(code(Proc.SETXATTR, [fh(f), Buffer.from('user.again'), value, 2]), 'ok');
  t.true(fsck(store).ok, 'the usage recorded is the usage recounted');
  // Removing the file gives back its attributes.
  t.is(code(Proc.REMOVE, [fh(v.rootIno), Buffer.from('f')]), 'ok');
  const g = made(Proc.CREATE, [fh(v.rootIno), Buffer.from('g'), 0o644, 0, 0, false]);
  const y = until((i) => code(Proc.SETXATTR, [fh(g), Buffer.from(`user.b${i}`), value, 0]), 100);
  t.is(y.n, x.n, 'all the room came back');
  t.true(fsck(store).ok);
});

test('symlink targets and entry names are charged', (t) => {
  const { store, v, fh, code } = setup(t, { quota: 256 * 1024 });
  const target = Buffer.alloc(4095, 0x61);
  const s = until((i) => code(Proc.SYMLINK, [fh(v.rootIno), Buffer.from(`l${i}`), target, 0, 0]), 1000);
  t.is(s.stop, 'EDQUOT');
  t.true(s.n < 70, `${s.n} symlinks of 4095 bytes under 256 KiB`);
  t.true(fsck(store).ok);
  const { store: s2, v: v2, fh: fh2, code: code2, made } = setup(t, { quota: 256 * 1024 });
  const f = made(Proc.CREATE, [fh2(v2.rootIno), Buffer.from('f'), 0o644, 0, 0, false]);
  const long = (i: number) => Buffer.from(`${i}-`.padEnd(255, 'n'));
  const l = until((i) => code2(Proc.LINK, [fh2(f), fh2(v2.rootIno), long(i)]), 10_000);
  t.is(l.stop, 'EDQUOT', 'hard links with long names stop at the quota');
  t.true(l.n < 1100, `${l.n} links of 255-byte names under 256 KiB`);
  t.true(fsck(s2).ok);
});

test('an inode quota stops creates, mkdirs, symlinks and mknods with EDQUOT; unlink makes room', (t) => {
  const { store, v, fh, code } = setup(t, { inodeQuota: 10 });
  const root = fh(v.rootIno);
  const kinds: Array<(i: number) => PosixCode | 'ok'> = [
    (i) => code(Proc.CREATE, [root, Buffer.from(`f${i}`), 0o644, 0, 0, false]),
    (i) => code(Proc.MKDIR, [root, Buffer.from(`d${i}`), 0o755, 0, 0]),
    (i) => code(Proc.SYMLINK, [root, Buffer.from(`s${i}`), Buffer.from('x'), 0, 0]),
    (i) => code(Proc.MKNOD, [root, Buffer.from(`p${i}`), 0o010644, 0, 0, 0]),
  ];
  const r = until((i) => kinds[i % 4](i), 100);
  t.is(r.stop, 'EDQUOT');
  t.is(r.n, 9, 'the root is one of the 10 inodes');
  for (const k of kinds) t.is(k(1000), 'EDQUOT');
  t.is(store.statfs('v').ffree, 0);
  t.is(store.statfs('v').files, 10);
  t.is(code(Proc.REMOVE, [root, Buffer.from('f0')]), 'ok');
  t.is(kinds[0](2000), 'ok', 'an unlink made room for one inode');
  t.is(kinds[0](2001), 'EDQUOT');
  // Hard links are not inodes.
  const f = v.lookup(v.rootIno, 'f2000').ino;
  t.is(code(Proc.LINK, [fh(f), root, Buffer.from('f-link')]), 'ok');
  store.setQuota('v', undefined, 20);
  t.is(kinds[0](2002), 'ok', 'a larger inode quota makes room');
  t.true(fsck(store).ok);
});

test('usage of a store made before metadata was charged is recounted when the store is opened, and fsck agrees', (t) => {
  const dir = path.join(tmpDir(t), 'store');
  const s1 = Store.open(dir);
  const v = s1.createVolume('v');
  const f = v.create(v.rootIno, 'f', 0o644, 0, 0).ino;
  v.setxattr(f, 'user.a', Buffer.alloc(1000));
  v.symlink(v.rootIno, 'l', Buffer.alloc(500, 0x61), 0, 0);
  // What an older version recorded: no metadata bytes.
  v.rec.usage = { bytes: v.rec.usage!.bytes, inodes: v.rec.usage!.inodes } as typeof v.rec.usage;
  s1.changed(v);
  s1.close();
  const s2 = Store.open(dir);
  t.teardown(() => s2.abandon());
  const r = fsck(s2);
  t.true(r.ok, JSON.stringify(r.problems));
  s2.setQuota('v', 2000);
  const w = s2.volume('v');
  t.throws(() => w.setxattr(f, 'user.b', Buffer.alloc(1000)), { message: /EDQUOT/ }, 'what was there before counts');
});

test('a composed volume counts its metadata once, whatever the first change is', (t) => {
  const dir = path.join(tmpDir(t), 'store');
  const store = Store.open(dir);
  t.teardown(() => store.abandon());
  const a = store.createVolume('a');
  const d = a.mkdir(a.rootIno, 'd', 0o755, 0, 0).ino;
  const f = a.create(d, 'file', 0o644, 0, 0).ino;
  a.setxattr(f, 'user.k', Buffer.alloc(100));
  a.symlink(d, 'ln', 'target', 0, 0);
  for (const first of ['link', 'setxattr', 'removexattr'] as const) {
    const c = store.compose(`c-${first}`, [{ volume: 'a', path: '/d', dest: '/' }]);
    t.is(c.rec.usage, null, 'not counted yet');
    const file = c.resolve('/file');
    if (first === 'link') c.link(file, c.rootIno, 'again');
    else if (first === 'setxattr') c.setxattr(file, 'user.new', Buffer.alloc(10));
    else c.removexattr(file, 'user.k');
    const recorded = { ...c.rec.usage! };
    c.rec.usage = null;
    t.deepEqual(store.info(c.name).metadataBytes, recorded.meta, `${first}: the change was counted once`);
  }
});
