// The host serving a VM over a shared-memory region to clients in this process (another process
// than the host): async and blocking clients, large payloads, and a hostile guest writing garbage
// into the rings.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { encodeRequest } from '../../src/protocol/codec.js';
import { Proc } from '../../src/protocol/procs.js';
import { attrFromWire, type WireAttr } from '../../src/protocol/wire.js';
import { nativeAvailable } from '../../src/native/ivshmem.js';
import { map, unmap } from '../../src/native/memory.js';
import { LIVE_UP, Region, SLEEP_NONE } from '../../src/ring/index.js';
import { connectTcp } from '../../src/vrpc/client.js';
import { shmPath } from '../../src/vrpc/shm-region.js';
import { connectShm } from '../../src/vrpc/shm-channel.js';
import { SyncShmClient } from '../../src/vrpc/shm-sync-client.js';
import { prism, startHost } from '../helpers/host.js';
import { tmpDir } from '../helpers/tmp.js';

// /dev/shm is the one thing a machine may lack; the addon is built by npm install, so a missing
// addon is a failure here, not a reason to skip.
const noShm = fs.existsSync('/dev/shm') ? undefined : '/dev/shm does not exist on this machine';
if (noShm) console.error(`host-shm.test: skipped: ${noShm}`);
const shmTest = noShm ? test.skip : test;

/** A store with volume vol1 and a host serving it to vm1 over a region in a private directory. */
async function serve(t: import('ava').ExecutionContext) {
  const native = nativeAvailable();
  if (!native.ok) throw new Error(`the native addon is not built: ${native.reason}`);
  const store = path.join(tmpDir(t), 'store');
  t.is(prism(store, ['volume', 'create', 'vol1']).code, 0);
  const dir = fs.mkdtempSync('/dev/shm/prism-test-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const host = await startHost(store, ['--shm-dir', dir, '--vm', 'vm1=vol1']);
  t.teardown(() => { host.child.kill('SIGKILL'); });
  return { store, host, regionFile: shmPath('vm1', dir) };
}

shmTest('a client in another process than the host works a volume over shared memory', async (t) => {
  const { host, regionFile } = await serve(t);
  t.regex(host.out(), new RegExp(`shared memory ${regionFile}`));
  await t.throwsAsync(connectShm(regionFile, 'vm2'), { message: /EACCES/ });
  const c = await connectShm(regionFile, 'vm1');
  const [root] = await c.call(Proc.ATTACH, ['vol1']) as [Buffer];
  const [file] = await c.call(Proc.CREATE, [root, Buffer.from('big'), 0o644, 0, 0, true]) as [Buffer];
  const mib = Buffer.alloc(1 << 20);
  for (let i = 0; i < mib.length; i += 4) mib.writeUInt32LE(i, i);
  await c.call(Proc.WRITE, [file, 0, mib, 0]);
  const [back, eof] = await c.call(Proc.READ, [file, 0, 1 << 20]) as [Buffer, boolean];
  t.true(Buffer.from(back).equals(mib), '1 MiB written and read back over the rings');
  t.true(eof);
  const many = await Promise.all(Array.from({ length: 200 }, (_, i) => c.call(Proc.READ, [file, i * 4096, 4096])));
  t.true(many.every((r, i) => (r[0] as Buffer).readUInt32LE(0) === i * 4096), '200 requests in flight, each answered');
  await t.throwsAsync(c.call(Proc.LOOKUP, [root, Buffer.from('nope')]), { message: /ENOENT/ });
  for (const mode of ['futex', 'poll'] as const) {
    const s = new SyncShmClient(regionFile, 'vm1', mode);
    t.deepEqual(s.call(Proc.NULL), []);
    const [a] = s.call(Proc.GETATTR, [file]) as [WireAttr];
    t.is(attrFromWire(a).size, 1 << 20);
    s.close();
  }
  c.close();
  t.is(await host.stop(), 0);
});

shmTest('posts leave a sleeping host asleep: it is woken within milliseconds, at once by a call, and at once when posts pile up', async (t) => {
  const { host, regionFile } = await serve(t);
  const s = new SyncShmClient(regionFile, 'vm1', 'futex');
  t.teardown(() => s.close());
  const [root] = s.call(Proc.ATTACH, ['vol1']) as [Buffer];
  const [file] = s.call(Proc.CREATE, [root, Buffer.from('f'), 0o644, 0, 0, true]) as [Buffer];
  const view = map(regionFile, {});
  t.teardown(() => unmap(view));
  const flag = Region.attach(view).producer(0, 'request').consumerFlag;
  const asleep = () => Atomics.load(flag.i32, flag.index) !== SLEEP_NONE;
  const untilAsleep = async () => {
    for (let i = 0; i < 2000 && !asleep(); i++) await sleep(1);
    t.true(asleep(), 'an idle host sleeps');
  };
  let answered = 0;
  const counted = (err: Error | null) => { if (!err) answered++; };

  await untilAsleep();
  let wakes = s.hostWakes;
  s.post(Proc.NULL, [], counted);
  t.is(s.hostWakes, wakes, 'a small post leaves it asleep');
  for (let i = 0; i < 2000 && answered === 0; i++) { await sleep(1); s.collectArrived(); }
  t.is(answered, 1, 'and it is answered all the same, the host woken a moment later');

  await untilAsleep();
  wakes = s.hostWakes;
  s.post(Proc.NULL, [], counted);
  t.deepEqual(s.call(Proc.NULL), [], 'a call is answered at once');
  t.is(s.hostWakes, wakes + 1, 'the call woke the host');
  t.is(answered, 2, 'the post before the call was answered first');

  await untilAsleep();
  const chunk = Buffer.alloc(40 << 10, 1);
  wakes = s.hostWakes;
  s.post(Proc.WRITE, [file, 0, chunk, 0], counted);
  t.is(s.hostWakes, wakes, '40 KiB posted: still asleep');
  const stillAsleep = asleep(); // (unless its heartbeat woke it just now)
  s.post(Proc.WRITE, [file, chunk.length, chunk, 0], counted);
  if (stillAsleep) t.is(s.hostWakes, wakes + 1, '80 KiB posted: woken at once, to work beside the client');
  s.settle();
  t.is(answered, 4);
  const [a] = s.call(Proc.GETATTR, [file]) as [WireAttr];
  t.is(attrFromWire(a).size, 2 * chunk.length);
  t.is(await host.stop(), 0);
});

shmTest('a hostile guest: garbage records and corrupted ring words reset the region; the host lives on', async (t) => {
  const { store, host, regionFile } = await serve(t);
  const buf = map(regionFile, {});
  const region = Region.attach(buf);
  t.is(region.liveness('host').state, LIVE_UP, 'the host says it is up');
  let seed = 99;
  const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed; };
  // Records that are not CBOR, or CBOR of the wrong shape, or requests with forged handles.
  const tx = region.producer(0, 'request');
  for (let i = 0; i < 200; i++) {
    const kind = i % 3;
    const rec = kind === 0 ? Buffer.from(Array.from({ length: 1 + (rnd() % 300) }, () => rnd() & 0xff))
      : kind === 1 ? encodeRequest({ id: i, proc: Proc.GETATTR, args: [Buffer.alloc(29, rnd() & 0xff)] })
      : encodeRequest({ id: i, proc: rnd() % 100, args: [rnd(), 'x', null] });
    while (!tx.write(rec)) await new Promise((r) => setTimeout(r, 1));
  }
  await new Promise((r) => setTimeout(r, 300));
  // Now break the ring itself: a head far beyond the tail, and garbage in the data area.
  const ctrl = new Int32Array(buf, region.location(0, 'request').ctrlOffset, 64);
  Atomics.store(ctrl, 0, Atomics.load(ctrl, 16) + 123_457);
  const data = new Uint8Array(buf, region.location(0, 'request').dataOffset, 4096);
  for (let i = 0; i < data.length; i++) data[i] = rnd() & 0xff;
  await new Promise((r) => setTimeout(r, 300));
  unmap(buf);
  t.is(host.child.exitCode, null, 'the host survived');
  // The region is reset: a fresh client attaches and works; TCP works too. A guest that broke its
  // rings many times in a row is served again after a pause of up to a second, so the client retries
  // as an agent does.
  let c;
  for (let tries = 0; !c; tries++) {
    try {
      c = await connectShm(regionFile, 'vm1', { handshakeMs: 2000 });
    } catch (e) {
      if (tries >= 10) throw e;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  const [root] = await c.call(Proc.ATTACH, ['vol1']) as [Buffer];
  const [attr] = await c.call(Proc.GETATTR, [root]) as [WireAttr];
  t.is(attrFromWire(attr).mode & 0o170000, 0o040000);
  c.close();
  const tok = fs.readFileSync(path.join(store, 'vms', 'vm1.token'), 'utf8').trim();
  const tc = await connectTcp(`127.0.0.1:${host.port}`, 'vm1', tok);
  t.deepEqual(await tc.call(Proc.NULL), []);
  tc.close();
  t.is(await host.stop(), 0);
  t.regex(host.stderr(), /shared-memory rings reset/, 'the reset was logged');
});

const asRoot = process.getuid?.() === 0;
if (!asRoot) console.error('host-shm.test: full-tmpfs test skipped: mounting a small tmpfs needs root');
(asRoot && !noShm ? test.serial : test.skip)('a full shared-memory file system: the host refuses to start with ENOSPC, nothing half made', async (t) => {
  const store = path.join(tmpDir(t), 'store');
  t.is(prism(store, ['volume', 'create', 'vol1']).code, 0);
  const dir = tmpDir(t, 'prism-small-shm-');
  const mount = (size: string) => { const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]); if (r.status !== 0) throw new Error(String(r.stderr)); };
  const umount = () => spawnSync('umount', [dir]);
  // Room for the 16 MiB region, not for a 64 MiB metadata table.
  mount('20m');
  t.teardown(umount);
  const noTable = prism(store, ['host', 'serve', '--shm-dir', dir, '--vm', 'vm1=vol1']);
  t.is(noTable.code, 28, noTable.err);
  t.regex(noTable.err, /ENOSPC: cannot make the metadata table .*--meta-size/);
  t.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.new')), [], 'no half-written table left');
  umount();
  // Not even room for the region.
  mount('8m');
  const noRegion = prism(store, ['host', 'serve', '--shm-dir', dir, '--vm', 'vm1=vol1']);
  t.is(noRegion.code, 28, noRegion.err);
  t.regex(noRegion.err, /ENOSPC/);
  t.deepEqual(fs.readdirSync(dir), [], 'no half-written region left');
  // The store is untouched and opens fine.
  t.is(prism(store, ['volume', 'ls']).code, 0);
});
