// RESERVE, CREATE_AT, MKDIR_AT (posted creates, issue 13): a VM makes only inodes the host reserved
// for it, each once, with the time it chose; another VM's numbers, a forged or reused one are refused.
import test from 'ava';
import crypto from 'node:crypto';
import path from 'node:path';
import { Dispatcher } from '../../src/host/dispatch.js';
import { Proc } from '../../src/protocol/procs.js';
import { attrFromWire, type WireAttr } from '../../src/protocol/wire.js';
import { Store } from '../../src/store/store.js';
import { callNow, codeOf } from '../helpers/dispatch.js';
import { tmpDir } from '../helpers/tmp.js';

function setup(t: Parameters<typeof tmpDir>[0]) {
  const dir = path.join(tmpDir(t), 'store');
  const store = Store.open(dir);
  t.teardown(() => store.abandon());
  const v = store.createVolume('vol');
  const secret = crypto.randomBytes(32);
  const vm = (name: string) => new Dispatcher(store, { name, volumes: ['vol'] }, secret, { commit: () => Promise.resolve(), verifier: new Uint8Array(8) });
  const a = vm('a'), b = vm('b');
  const call = callNow, code = codeOf;
  const root = (d: Dispatcher) => d.key.make({ volumeId: v.rec.id, ino: v.rootIno });
  return { store, dir, v, a, b, call, code, root };
}

const T: [number, number] = [1_700_000_000, 123_456_789];

test('CREATE_AT and MKDIR_AT make the reserved inodes with the time given; attributes as CREATE and MKDIR make them', (t) => {
  const { v, a, call, root } = setup(t);
  const [first, handles] = call(a, Proc.RESERVE, [root(a), 4]) as [number, Uint8Array[]];
  t.is(handles.length, 4);
  t.is(Buffer.compare(Buffer.from(handles[1]!), a.key.make({ volumeId: v.rec.id, ino: first + 1 })), 0, 'consecutive, with their handles');
  const [w] = call(a, Proc.CREATE_AT, [root(a), Buffer.from('f'), 0o640, 7, 8, handles[0], T]) as [WireAttr];
  const f = attrFromWire(w);
  t.is(f.ino, first);
  t.deepEqual({ mode: f.mode, uid: f.uid, gid: f.gid, nlink: f.nlink, size: f.size, blocks: f.blocks }, { mode: 0o100640, uid: 7, gid: 8, nlink: 1, size: 0, blocks: 0 });
  for (const x of [f.atime, f.mtime, f.ctime, f.btime]) t.deepEqual(x, T);
  t.deepEqual(v.getattr(v.rootIno).mtime, T, 'the directory\'s mtime is the time given');
  // A set-group-ID directory: its group, and its bit for a subdirectory, as MKDIR.
  const [sw] = call(a, Proc.MKDIR_AT, [root(a), Buffer.from('s'), 0o2775, 0, 50, handles[1], T]) as [WireAttr];
  const s = attrFromWire(sw);
  t.deepEqual({ ino: s.ino, mode: s.mode, gid: s.gid, nlink: s.nlink, size: s.size, blocks: s.blocks }, { ino: first + 1, mode: 0o42775, gid: 50, nlink: 2, size: 4096, blocks: 8 });
  const sFh = a.key.make({ volumeId: v.rec.id, ino: s.ino });
  const [dw] = call(a, Proc.MKDIR_AT, [sFh, Buffer.from('d'), 0o755, 9, 9, handles[2], T]) as [WireAttr];
  const d = attrFromWire(dw);
  t.deepEqual({ mode: d.mode, uid: d.uid, gid: d.gid }, { mode: 0o42755, uid: 9, gid: 50 });
  t.is(v.getattr(s.ino).nlink, 3);
  // An ordinary create later takes a number past the reserved ones.
  t.true(v.create(v.rootIno, 'later', 0o644, 0, 0).ino >= first + 4);
});

test('a number used already, reserved for another VM, never reserved, or of a name that exists is refused; one sent again after it was applied is answered', (t) => {
  const { v, a, b, call, code, root } = setup(t);
  const [, ha] = call(a, Proc.RESERVE, [root(a), 3]) as [number, Uint8Array[]];
  const [, hb] = call(b, Proc.RESERVE, [root(b), 1]) as [number, Uint8Array[]];
  const make = (d: Dispatcher, name: string, fh: Uint8Array) => () => call(d, Proc.CREATE_AT, [root(d), Buffer.from(name), 0o644, 0, 0, fh, T]);
  t.is(code(make(a, 'x', ha[0]!)), 'ok');
  t.is(code(make(a, 'x', ha[0]!)), 'ok', 'the same make again (a resend): answered, nothing made twice');
  t.is(code(make(a, 'y', ha[0]!)), 'EINVAL', 'used already');
  // B's number with A's key does not verify; A's handle of B's number would have to be forged.
  t.is(code(make(a, 'z', hb[0]!)), 'ESTALE');
  const unreserved = a.key.make({ volumeId: v.rec.id, ino: v.create(v.rootIno, 'plain', 0o644, 0, 0).ino + 1000 });
  t.is(code(make(a, 'z', unreserved)), 'EINVAL', 'never reserved');
  t.is(code(make(a, 'plain', ha[1]!)), 'EEXIST');
  t.is(code(make(a, 'fine', ha[1]!)), 'EINVAL', 'a failed make uses its number up too');
  t.is(code(make(a, 'fine', ha[2]!)), 'ok');
  t.is(v.lookup(v.rootIno, 'x').nlink, 1);
});

test('a VM that hoards reserved numbers loses its oldest ones; the allocator stays past every number handed out, across a commit', (t) => {
  const { store, v, a, call, code, root } = setup(t);
  const all: Uint8Array[] = [];
  let last = 0;
  for (let i = 0; i < 6; i++) {
    const [first, hs] = call(a, Proc.RESERVE, [root(a), 255]) as [number, Uint8Array[]];
    t.is(hs.length, 128, 'at most 128 at a time');
    all.push(...hs);
    last = first + hs.length - 1;
  }
  t.is(code(() => call(a, Proc.CREATE_AT, [root(a), Buffer.from('old'), 0o644, 0, 0, all[0], T])), 'EINVAL');
  t.is(code(() => call(a, Proc.CREATE_AT, [root(a), Buffer.from('new'), 0o644, 0, 0, all[all.length - 1], T])), 'ok');
  store.commit();
  t.true(v.create(v.rootIno, 'after', 0o644, 0, 0).ino > last);
});
