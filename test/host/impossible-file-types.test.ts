// File types that do not exist never enter a volume: MKNOD takes a regular file, a device, a fifo or a
// socket (EINVAL at the protocol boundary otherwise), CREATE and MKDIR take permission bits only, and
// fsck reports (and repairs) an inode whose type is not a file type.
import test from 'ava';
import crypto from 'node:crypto';
import path from 'node:path';
import { Dispatcher } from '../../src/host/dispatch.js';
import { Proc } from '../../src/protocol/procs.js';
import { validateArgs } from '../../src/protocol/validate.js';
import { PrismError, type PosixCode } from '../../src/errors.js';
import { fsck } from '../../src/store/fsck.js';
import { S_IFMT, S_IFREG } from '../../src/posix/mode.js';
import { inodeKey, layerOf, localOf, type InodeRec } from '../../src/store/layout.js';
import { Store } from '../../src/store/store.js';
import { tmpDir } from '../helpers/tmp.js';

function setup(t: Parameters<typeof tmpDir>[0]) {
  const store = Store.open(path.join(tmpDir(t), 'store'));
  t.teardown(() => store.abandon());
  const v = store.createVolume('v');
  const d = new Dispatcher(store, { name: 'vm', volumes: ['v'] }, crypto.randomBytes(32), { commit: () => Promise.resolve(), verifier: new Uint8Array(8) });
  const root = d.key.make({ volumeId: v.rec.id, ino: v.rootIno });
  const code = (proc: Proc, args: unknown[]): PosixCode | 'ok' => {
    try { d.call(proc, args); return 'ok'; } catch (e) { if (e instanceof PrismError) return e.code; throw e; }
  };
  return { store, v, root, code };
}

const BAD_TYPES = [0o170000, 0o030000, 0o050000, 0o070000, 0o110000, 0o130000, 0o150000, 0o160000];

test('MKNOD of a file type that does not exist is EINVAL, and nothing is made', (t) => {
  const { v, root, code } = setup(t);
  for (const type of BAD_TYPES) {
    t.is(code(Proc.MKNOD, [root, Buffer.from(`n${type}`), type | 0o644, 0, 0, 0]), 'EINVAL', `type 0o${type.toString(8)}`);
  }
  t.is(code(Proc.MKNOD, [root, Buffer.from('dir'), 0o040755, 0, 0, 0]), 'EINVAL', 'mknod does not make directories');
  t.is(code(Proc.MKNOD, [root, Buffer.from('lnk'), 0o120777, 0, 0, 0]), 'EINVAL', 'nor symlinks');
  t.is(code(Proc.MKNOD, [root, Buffer.from('big'), 0o1100644, 0, 0, 0]), 'EINVAL', 'bits above the type');
  t.deepEqual(v.readdir(v.rootIno), [], 'nothing was made');
  for (const [name, mode] of [['fifo', 0o010644], ['chr', 0o020644], ['blk', 0o060644], ['sock', 0o140644], ['reg', 0o100644], ['plain', 0o644]] as const) {
    t.is(code(Proc.MKNOD, [root, Buffer.from(name), mode, 0, 0, 0]), 'ok', name);
  }
  t.deepEqual(v.readdir(v.rootIno).map((e) => e.type).sort(), [0o010000, 0o020000, 0o060000, 0o100000, 0o100000, 0o140000].sort());
});

test('CREATE and MKDIR take permission bits only', (t) => {
  t.throws(() => validateArgs(Proc.CREATE, [Buffer.from('h'), Buffer.from('f'), 0o170644, 0, 0, false]), { message: /EINVAL/ });
  t.throws(() => validateArgs(Proc.MKDIR, [Buffer.from('h'), Buffer.from('d'), 0o030755, 0, 0]), { message: /EINVAL/ });
  t.notThrows(() => validateArgs(Proc.CREATE, [Buffer.from('h'), Buffer.from('f'), 0o4755, 0, 0, false]));
});

test('the store itself refuses impossible types (CLI and import go around the protocol)', (t) => {
  const { v } = setup(t);
  t.throws(() => v.mknod(v.rootIno, 'x', 0o170644, 0, 0, 0), { message: /EINVAL/ });
  t.throws(() => v.mknod(v.rootIno, 'y', 0o030644, 0, 0, 0), { message: /EINVAL/ });
});

test('fsck reports an inode whose type does not exist, and --repair makes it an empty regular file', (t) => {
  const { store, v } = setup(t);
  const ino = v.mknod(v.rootIno, 'odd', 0o010644, 0, 0, 0).ino;
  // A store written by an older version that let 0o170644 in.
  const rec: InodeRec = { ...v.inode(ino), mode: 0o170644, rdev: 5 };
  const l = v.rec.layers[layerOf(ino)];
  l.root = store.tree.put(l.root, inodeKey(localOf(ino)), rec);
  store.changed(v);
  store.commit();
  const r = fsck(store);
  t.false(r.ok);
  t.deepEqual(r.problems.map((p) => p.kind), ['inode-type'], 'reported once, and nothing else');
  t.regex(r.problems[0].detail, /0o170644/);
  const fixed = fsck(store, { repair: true });
  t.true(fixed.problems.some((p) => p.kind === 'inode-type' && p.repaired));
  const after = fsck(store);
  t.true(after.ok, JSON.stringify(after.problems));
  t.is(v.getattr(ino).mode, S_IFREG | 0o644);
  t.is(v.readdir(v.rootIno)[0].type, S_IFREG);
  t.is(v.getattr(ino).mode & S_IFMT, S_IFREG);
});
