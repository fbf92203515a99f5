// The host server as a separate process, a client in this one, over TCP: operations, tokens, handle
// isolation between VMs, restart with the same handles, and hostile input.
import test from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { isPrismError } from '../../src/errors.js';
import { encode, encodeRequest } from '../../src/protocol/codec.js';
import { Proc, PROTOCOL_VERSION } from '../../src/protocol/procs.js';
import { attrFromWire, setAttrToWire, type WireAttr } from '../../src/protocol/wire.js';
import { connectTcp, type VrpcClient } from '../../src/vrpc/client.js';
import { prism, startHost } from '../helpers/host.js';
import { tmpDir } from '../helpers/tmp.js';

const token = (store: string, vm: string) => fs.readFileSync(path.join(store, 'vms', `${vm}.token`), 'utf8').trim();

async function rejects(t: import('ava').ExecutionContext, p: Promise<unknown>, code: string): Promise<void> {
  const e = await t.throwsAsync(p);
  t.true(isPrismError(e) && e.code === code, `expected ${code}, got ${String(e)}`);
}

function setup(t: import('ava').ExecutionContext): string {
  const store = path.join(tmpDir(t), 'store');
  for (const v of ['vol1', 'vol2']) t.is(prism(store, ['volume', 'create', v]).code, 0);
  return store;
}

test('a client in another process works a volume over TCP; handles survive a host restart', async (t) => {
  const store = setup(t);
  let host = await startHost(store, ['--no-shm', '--vm', 'vm1=vol1']);
  let c: VrpcClient = await connectTcp(`127.0.0.1:${host.port}`, 'vm1', token(store, 'vm1'));
  t.deepEqual(await c.call(Proc.NULL), []);
  const [root] = await c.call(Proc.ATTACH, ['vol1']) as [Buffer];
  const [dir] = await c.call(Proc.MKDIR, [root, Buffer.from('etc'), 0o755, 0, 0]) as [Buffer];
  const [file, wattr] = await c.call(Proc.CREATE, [dir, Buffer.from('hosts'), 0o644, 0, 0, true]) as [Buffer, WireAttr];
  t.is(attrFromWire(wattr).size, 0);
  const payload = Buffer.alloc(300_000, 7);
  const [after, count] = await c.call(Proc.WRITE, [file, 0, payload, 0]) as [WireAttr, number];
  t.is(count, payload.length);
  t.is(attrFromWire(after).size, payload.length);
  // Many calls in flight at once, answered by id.
  const reads = await Promise.all(Array.from({ length: 50 }, (_, i) => c.call(Proc.READ, [file, i * 1000, 1000])));
  t.true(reads.every((r) => (r[0] as Buffer).length === 1000 && (r[0] as Buffer)[0] === 7));
  await rejects(t, c.call(Proc.LOOKUP, [dir, Buffer.from('nope')]), 'ENOENT');
  await rejects(t, c.call(Proc.MKDIR, [root, Buffer.from('etc'), 0o755, 0, 0]), 'EEXIST');
  const [entries, eof] = await c.call(Proc.READDIRPLUS, [root, Buffer.alloc(0), 100]) as [Array<[Buffer, Buffer, number[]]>, boolean];
  t.true(eof);
  t.deepEqual(entries.map((e) => e[0].toString()), ['etc']);
  await c.call(Proc.SETATTR, [file, setAttrToWire({ mode: 0o600, mtime: [1_000_000_000, 5] })]);
  await c.call(Proc.COMMIT, [file]);
  c.close();
  t.is(await host.stop(), 0, 'SIGTERM stops the host cleanly');

  host = await startHost(store, ['--no-shm', '--vm', 'vm1=vol1']);
  c = await connectTcp(`127.0.0.1:${host.port}`, 'vm1', token(store, 'vm1'));
  const [attr] = await c.call(Proc.GETATTR, [file]) as [WireAttr];
  const a = attrFromWire(attr);
  t.is(a.size, payload.length, 'the old handle still works after a restart');
  t.is(a.mode & 0o7777, 0o600);
  t.deepEqual(a.mtime, [1_000_000_000, 5]);
  c.close();
  await host.stop();
  t.is(prism(store, ['cat', 'vol1:/etc/hosts']).out.length, payload.length);
});

test('tokens, volumes and handles are per VM; forged and replayed handles are refused', async (t) => {
  const store = setup(t);
  const host = await startHost(store, ['--no-shm', '--vm', 'vm1=vol1', '--vm', 'vm2=vol2']);
  t.teardown(() => { host.child.kill('SIGKILL'); });
  await rejects(t, connectTcp(`127.0.0.1:${host.port}`, 'vm1', 'wrong-token'), 'EACCES');
  await rejects(t, connectTcp(`127.0.0.1:${host.port}`, 'vm1', token(store, 'vm2')), 'EACCES');
  const c1 = await connectTcp(`127.0.0.1:${host.port}`, 'vm1', token(store, 'vm1'));
  const c2 = await connectTcp(`127.0.0.1:${host.port}`, 'vm2', token(store, 'vm2'));
  await rejects(t, c2.call(Proc.ATTACH, ['vol1']), 'EACCES');
  const [root1] = await c1.call(Proc.ATTACH, ['vol1']) as [Buffer];
  const [secret] = await c1.call(Proc.CREATE, [root1, Buffer.from('secret'), 0o600, 0, 0, true]) as [Buffer];
  await c1.call(Proc.WRITE, [secret, 0, Buffer.from('vm1 only'), 1]);
  await rejects(t, c2.call(Proc.READ, [secret, 0, 100]), 'ESTALE');
  await rejects(t, c2.call(Proc.GETATTR, [root1]), 'ESTALE');
  const forged = Buffer.from(secret);
  forged.writeBigUInt64BE(forged.readBigUInt64BE(5) + 1n, 5); // another inode, same MAC
  await rejects(t, c1.call(Proc.GETATTR, [forged]), 'ESTALE');
  await rejects(t, c1.call(Proc.GETATTR, [Buffer.alloc(64, 0xff)]), 'ESTALE');
  await rejects(t, c1.call(Proc.READ, [secret, 0, 10 * 1024 * 1024]), 'EINVAL');
  await rejects(t, c1.call(Proc.LOOKUP, [root1, Buffer.from('a/b')]), 'EINVAL');
  await rejects(t, c1.call(999 as Proc, []), 'ENOSYS');
  c1.close();
  c2.close();
});

function rawConnect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
    s.on('error', reject);
  });
}

function frame(b: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(b.length);
  return Buffer.concat([h, b]);
}

test('fuzz: garbage, mutated and oversized frames never take the host down', async (t) => {
  const store = setup(t);
  const host = await startHost(store, ['--no-shm', '--vm', 'vm1=vol1']);
  t.teardown(() => { host.child.kill('SIGKILL'); });
  const tok = token(store, 'vm1');
  const hello = frame(encode(['prism-vrpc', PROTOCOL_VERSION, 'vm1', tok]));
  const valid = encodeRequest({ id: 1, proc: Proc.ATTACH, args: ['vol1'] });
  let seed = 12345;
  const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed; };
  for (let round = 0; round < 60; round++) {
    const s = await rawConnect(host.port);
    s.on('error', () => {});
    const kind = round % 4;
    if (kind === 0) s.write(Buffer.from(Array.from({ length: 1 + (rnd() % 200) }, () => rnd() & 0xff)));
    else if (kind === 1) { s.write(hello); const m = Buffer.from(valid); for (let k = 0; k < 3; k++) m[rnd() % m.length] = rnd() & 0xff; s.write(frame(m)); }
    else if (kind === 2) { s.write(hello); const h = Buffer.alloc(4); h.writeUInt32BE(0xfffffff0); s.write(h); s.write(Buffer.alloc(100)); }
    else { s.write(hello); s.write(frame(valid).subarray(0, 5 + (rnd() % 5))); }
    await new Promise((r) => setTimeout(r, 5));
    s.destroy();
  }
  // Replayed handshake with random bytes in every argument position, on one connection.
  const c = await connectTcp(`127.0.0.1:${host.port}`, 'vm1', tok);
  const [root] = await c.call(Proc.ATTACH, ['vol1']) as [Buffer];
  for (let i = 0; i < 300; i++) {
    const proc = [1, 2, 3, 6, 7, 8, 9, 12, 14, 16, 17, 21, 65, 66][rnd() % 14] as Proc;
    const args = Array.from({ length: rnd() % 7 }, () => {
      switch (rnd() % 6) {
        case 0: return root;
        case 1: return Buffer.from(Array.from({ length: rnd() % 80 }, () => rnd() & 0xff));
        case 2: return rnd();
        case 3: return -rnd();
        case 4: return 'x'.repeat(rnd() % 300);
        default: return [rnd(), null, true];
      }
    });
    try { await c.call(proc, args); } catch (e) { if (!isPrismError(e)) throw e; }
  }
  // Still serving, and the volume is intact.
  const [attr] = await c.call(Proc.GETATTR, [root]) as [WireAttr];
  t.is(attrFromWire(attr).mode & 0o170000, 0o040000);
  c.close();
  t.is(host.child.exitCode, null, 'the host is still running');
  t.is(await host.stop(), 0);
  t.is(prism(store, ['fsck']).code, 0, 'fsck is clean after the fuzzing');
});
