// Issue 11 item 4: before a TCP connection has authenticated, it may cost the host almost nothing:
// a hello is small (frames over a few KiB are refused), few connections may be waiting for theirs
// (the oldest is dropped for a new one), and not for long. On the unfixed host 800 connections each
// holding a partial 1 MiB frame took it to about 1 GiB and slowed every VM.
import test from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Proc } from '../../src/protocol/procs.js';
import { connectTcp } from '../../src/vrpc/client.js';
import { prism, rssMiB, startHost } from '../helpers/host.js';
import { tmpDir } from '../helpers/tmp.js';

const token = (store: string, vm: string) => fs.readFileSync(path.join(store, 'vms', `${vm}.token`), 'utf8').trim();

async function serve(t: import('ava').ExecutionContext) {
  const store = path.join(tmpDir(t), 'store');
  t.is(prism(store, ['volume', 'create', 'vol1']).code, 0);
  const host = await startHost(store, ['--no-shm', '--vm', 'vm1=vol1']);
  t.teardown(() => { host.child.kill('SIGKILL'); });
  return { store, host, addr: `127.0.0.1:${host.port}` };
}

/** Open a raw connection; resolves once connected. `closedAt` is set when the host closes it. */
function rawConnect(port: number): Promise<{ s: net.Socket; closed: () => number | undefined }> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let at: number | undefined;
    s.on('error', () => {});
    s.on('data', () => {});
    s.on('close', () => { at = Date.now(); });
    s.once('connect', () => resolve({ s, closed: () => at }));
  });
}

test('800 unauthenticated connections each sending part of a 1 MiB frame cost the host little; a VM is still served', async (t) => {
  const { store, host, addr } = await serve(t);
  const vm1 = await connectTcp(addr, 'vm1', token(store, 'vm1'));
  const pid = host.child.pid!;
  const before = rssMiB(pid);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(1 << 20);
  const body = Buffer.alloc((1 << 20) - 1, 0x41); // one byte short: the frame never completes
  const conns: net.Socket[] = [];
  t.teardown(() => { for (const s of conns) s.destroy(); });
  const lat: number[] = [];
  let peak = before;
  for (let i = 0; i < 800; i++) {
    const { s } = await rawConnect(host.port);
    conns.push(s);
    s.write(head);
    s.write(body);
    if (i % 50 === 49) {
      const t0 = performance.now();
      await vm1.call(Proc.NULL);
      lat.push(performance.now() - t0);
      peak = Math.max(peak, rssMiB(pid));
    }
  }
  // Let the host read what it will; then look at its memory and latency again.
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const t0 = performance.now();
    await vm1.call(Proc.NULL);
    lat.push(performance.now() - t0);
    peak = Math.max(peak, rssMiB(pid));
  }
  const growth = peak - before;
  lat.sort((a, b) => a - b);
  const p50 = lat[Math.floor(lat.length / 2)], max = lat[lat.length - 1];
  t.log(`host grew ${growth.toFixed(0)} MiB; vm1 NULL p50 ${p50.toFixed(2)} ms, max ${max.toFixed(1)} ms`);
  t.true(growth < 100, `host memory grew by ${growth.toFixed(0)} MiB`);
  t.true(p50 < 50, `NULL p50 ${p50.toFixed(1)} ms`);
  t.true(max < 1000, `NULL max ${max.toFixed(0)} ms`);
  // A new VM connection is still accepted.
  const again = await connectTcp(addr, 'vm1', token(store, 'vm1'));
  t.deepEqual(await again.call(Proc.NULL), []);
  again.close();
  vm1.close();
});

test('silent unauthenticated connections: the oldest are dropped beyond the cap, the rest after the handshake time', async (t) => {
  const { store, host, addr } = await serve(t);
  const start = Date.now();
  const conns = await Promise.all(Array.from({ length: 200 }, () => rawConnect(host.port)));
  t.teardown(() => { for (const c of conns) c.s.destroy(); });
  // A real VM still gets in while they wait (it takes the slot of the oldest).
  const vm1 = await connectTcp(addr, 'vm1', token(store, 'vm1'));
  t.deepEqual(await vm1.call(Proc.NULL), []);
  await new Promise((r) => setTimeout(r, 1000));
  const early = conns.filter((c) => c.closed() !== undefined).length;
  t.log(`${early} of 200 closed within ${Date.now() - start} ms`);
  t.true(early >= 200 - 64, `only ${early} of 200 silent connections were dropped at once`);
  // The rest go when their handshake time is up (5 s; 10 s before the fix).
  const deadline = start + 8000;
  while (Date.now() < deadline && conns.some((c) => c.closed() === undefined)) await new Promise((r) => setTimeout(r, 100));
  const open = conns.filter((c) => c.closed() === undefined).length;
  t.is(open, 0, `${open} silent connections still open after ${Date.now() - start} ms`);
  t.deepEqual(await vm1.call(Proc.NULL), [], 'the authenticated VM is not affected by the handshake timer');
  vm1.close();
});
