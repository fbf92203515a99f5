// Pins (OPEN/CLOSE) belong to the VM that took them: one VM cannot free another's open-unlinked file
// by closing what it never opened, and a VM cannot pin without bound.
import test from 'ava';
import crypto from 'node:crypto';
import path from 'node:path';
import { Dispatcher } from '../../src/host/dispatch.js';
import { Proc } from '../../src/protocol/procs.js';
import { isPrismError, PrismError } from '../../src/errors.js';
import { Store } from '../../src/store/store.js';
import { MAX_PINS_PER_OWNER } from '../../src/store/pins.js';
import { callNow, codeOf } from '../helpers/dispatch.js';
import { tmpDir } from '../helpers/tmp.js';

function setup(t: Parameters<typeof tmpDir>[0]) {
  const store = Store.open(path.join(tmpDir(t), 'store'));
  t.teardown(() => store.abandon());
  const v = store.createVolume('shared');
  const secret = crypto.randomBytes(32);
  const vm = (name: string) => new Dispatcher(store, { name, volumes: ['shared'] }, secret, { commit: () => Promise.resolve(), verifier: new Uint8Array(8) });
  const a = vm('a'), b = vm('b');
  const fh = (d: Dispatcher, ino: number) => d.key.make({ volumeId: v.rec.id, ino });
  const call = callNow, code = codeOf;
  return { store, v, a, b, fh, call, code };
}

test('VM B closing a file it never opened does not free VM A\'s open-unlinked file', (t) => {
  const { v, a, b, fh, call } = setup(t);
  const f = v.create(v.rootIno, 'f', 0o644, 0, 0);
  v.write(f.ino, 0, Buffer.from('still here'));
  call(a, Proc.OPEN, [fh(a, f.ino)]);
  call(a, Proc.REMOVE, [fh(a, v.rootIno), Buffer.from('f')]);
  // B learns the inode number (it is in every attr) and closes it: it holds no pin, so nothing changes.
  const e = t.throws(() => call(b, Proc.CLOSE, [fh(b, f.ino)]));
  t.true(isPrismError(e, 'EBADF'), `B's CLOSE fails with EBADF, got ${String(e)}`);
  const r = call(a, Proc.READ, [fh(a, f.ino), 0, 100]);
  t.is(Buffer.from(r[0] as Uint8Array).toString(), 'still here', 'A still reads its open-unlinked file');
  // A's own close frees it.
  call(a, Proc.CLOSE, [fh(a, f.ino)]);
  t.throws(() => call(a, Proc.GETATTR, [fh(a, f.ino)]), { instanceOf: PrismError, message: /ESTALE/ });
  t.deepEqual(v.rec.orphans, []);
});

test('a file pinned by two VMs lives until both have closed it; pins count per VM', (t) => {
  const { v, a, b, fh, call } = setup(t);
  const f = v.create(v.rootIno, 'g', 0o644, 0, 0);
  call(a, Proc.OPEN, [fh(a, f.ino)]);
  call(a, Proc.OPEN, [fh(a, f.ino)]);
  call(b, Proc.OPEN, [fh(b, f.ino)]);
  call(b, Proc.REMOVE, [fh(b, v.rootIno), Buffer.from('g')]);
  call(b, Proc.CLOSE, [fh(b, f.ino)]);
  t.throws(() => call(b, Proc.CLOSE, [fh(b, f.ino)]), { message: /EBADF/ }, 'B had one pin, not A\'s two');
  call(a, Proc.CLOSE, [fh(a, f.ino)]);
  t.is(call(a, Proc.GETATTR, [fh(a, f.ino)]).length, 1, 'A still holds one pin');
  call(a, Proc.CLOSE, [fh(a, f.ino)]);
  t.throws(() => call(a, Proc.GETATTR, [fh(a, f.ino)]), { message: /ESTALE/ });
});

test('pins per VM are capped: past the cap OPEN fails with ENOSPC, for that VM only', (t) => {
  const { v, a, b, fh, call, code } = setup(t);
  const f = v.create(v.rootIno, 'h', 0o644, 0, 0);
  // Count pins as OPENs held (each is a reference the host keeps for the VM).
  let opened = 0;
  for (; opened < MAX_PINS_PER_OWNER; opened++) call(a, Proc.OPEN, [fh(a, f.ino)]);
  t.is(code(() => call(a, Proc.OPEN, [fh(a, f.ino)])), 'ENOSPC');
  const other = v.create(v.rootIno, 'i', 0o644, 0, 0);
  t.is(code(() => call(a, Proc.OPEN, [fh(a, other.ino)])), 'ENOSPC', 'a distinct inode counts against the same cap');
  t.is(code(() => call(b, Proc.OPEN, [fh(b, f.ino)])), 'ok', 'another VM is not affected');
  call(a, Proc.CLOSE, [fh(a, f.ino)]);
  t.is(code(() => call(a, Proc.OPEN, [fh(a, other.ino)])), 'ok', 'a close makes room again');
});
