// Issue 11 item 3: a VM that asks for 1 MiB READs and never takes its replies (a TCP client that never
// reads its socket; a shm guest that never releases its response ring) must not grow the host's
// memory: its budget of reply bytes queued is spent, the host stops reading it, and another VM is
// still answered at once. On the unfixed host both grew by gigabytes within seconds.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { encode, encodeRequest } from '../../src/protocol/codec.js';
import { Proc, PROTOCOL_VERSION } from '../../src/protocol/procs.js';
import { nativeAvailable } from '../../src/native/ivshmem.js';
import { map, unmap } from '../../src/native/memory.js';
import { Region } from '../../src/ring/index.js';
import { connectTcp, type VrpcClient } from '../../src/vrpc/client.js';
import { shmPath } from '../../src/vrpc/shm-region.js';
import { connectShm } from '../../src/vrpc/shm-channel.js';
import { prism, rssMiB, startHost, type RunningHost } from '../helpers/host.js';
import { tmpDir } from '../helpers/tmp.js';

const noShm = fs.existsSync('/dev/shm') ? undefined : '/dev/shm does not exist on this machine';
const shmTest = noShm ? test.skip : test;

/** How long the hostile VM keeps asking. */
const ATTACK_MS = 8000;
/** What the host may grow by meanwhile (the unfixed host passed this within about a second). */
const MAX_GROWTH_MIB = 200;

const token = (store: string, vm: string) => fs.readFileSync(path.join(store, 'vms', `${vm}.token`), 'utf8').trim();

function frame(b: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(b.length);
  return Buffer.concat([h, b]);
}

/** Make vol1:/big, 1 MiB, and return its handle. */
async function bigFile(c: VrpcClient): Promise<Buffer> {
  const [root] = await c.call(Proc.ATTACH, ['vol1']) as [Buffer];
  const [fh] = await c.call(Proc.CREATE, [root, Buffer.from('big'), 0o644, 0, 0, true]) as [Buffer];
  await c.call(Proc.WRITE, [fh, 0, Buffer.alloc(1 << 20, 0x5a), 0]);
  return Buffer.from(fh);
}

interface Outcome { growth: number; nulls: number[]; }

/**
 * Run `attack` (one step each call; it returns when it could not send) for ATTACK_MS while vm2 calls
 * NULL every 20 ms; stop early once the host has grown past the limit (no need to take the machine down).
 */
async function underAttack(host: RunningHost, vm2: VrpcClient, attack: () => boolean): Promise<Outcome> {
  const pid = host.child.pid!;
  const before = rssMiB(pid);
  const nulls: number[] = [];
  let stop = false, peak = before;
  const end = Date.now() + ATTACK_MS;
  const prober = (async () => {
    while (!stop) {
      const t0 = performance.now();
      await vm2.call(Proc.NULL);
      nulls.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  while (Date.now() < end) {
    // Yield every step: this process also times vm2's calls.
    if (!attack()) await new Promise((r) => setTimeout(r, 2));
    else await new Promise((r) => setImmediate(r));
    peak = Math.max(peak, rssMiB(pid));
    if (peak - before > MAX_GROWTH_MIB) break;
  }
  stop = true;
  await prober;
  return { growth: peak - before, nulls };
}

function check(t: ExecutionContext, host: RunningHost, o: Outcome): void {
  const sorted = [...o.nulls].sort((a, b) => a - b);
  const p50 = sorted[Math.floor(sorted.length / 2)] ?? Infinity;
  const p95 = sorted[Math.floor(sorted.length * 0.95)] ?? Infinity;
  const max = sorted[sorted.length - 1] ?? Infinity;
  t.log(`host grew ${o.growth.toFixed(0)} MiB; vm2 NULL x${sorted.length}: p50 ${p50.toFixed(2)} ms, p95 ${p95.toFixed(2)} ms, max ${max.toFixed(1)} ms`);
  t.is(host.child.exitCode, null, 'the host lives');
  t.true(o.growth < MAX_GROWTH_MIB, `host memory grew by ${o.growth.toFixed(0)} MiB`);
  t.true(sorted.length >= 20, 'vm2 was answered throughout');
  // Generous for a loaded 2-core machine (a lone outlier is the machine, not the host): the unfixed
  // host took seconds for most calls.
  t.true(p50 < 50, `vm2 NULL p50 ${p50.toFixed(1)} ms`);
  t.true(p95 < 500, `vm2 NULL p95 ${p95.toFixed(1)} ms`);
}

test('a TCP client that never reads its replies cannot grow the host; other VMs are still served', async (t) => {
  const store = path.join(tmpDir(t), 'store');
  for (const v of ['vol1', 'vol2']) t.is(prism(store, ['volume', 'create', v]).code, 0);
  const host = await startHost(store, ['--no-shm', '--vm', 'vm1=vol1', '--vm', 'vm2=vol2']);
  t.teardown(() => { host.child.kill('SIGKILL'); });
  const addr = `127.0.0.1:${host.port}`;
  const c1 = await connectTcp(addr, 'vm1', token(store, 'vm1'));
  const fh = await bigFile(c1);
  c1.close();
  const vm2 = await connectTcp(addr, 'vm2', token(store, 'vm2'));
  // The hostile client: a raw socket with no 'data' listener, so it never reads a byte.
  const s = net.connect({ host: '127.0.0.1', port: host.port });
  s.on('error', () => {});
  await new Promise((r) => s.once('connect', r));
  s.write(frame(encode(['prism-vrpc', PROTOCOL_VERSION, 'vm1', token(store, 'vm1')])));
  let id = 1;
  const batch = () => Buffer.concat(Array.from({ length: 64 }, () => frame(encodeRequest({ id: id++, proc: Proc.READ, args: [fh, 0, 1 << 20] }))));
  const o = await underAttack(host, vm2, () => {
    if (s.writableNeedDrain || s.destroyed) return false;
    s.write(batch());
    return true;
  });
  s.destroy();
  check(t, host, o);
  vm2.close();
});

/** A host serving vm1 and vm2 over shm, vm1's handle of a 1 MiB file, a client of vm2, and vm1's request ring. */
async function shmSetup(t: ExecutionContext) {
  const native = nativeAvailable();
  if (!native.ok) throw new Error(`the native addon is not built: ${native.reason}`);
  const store = path.join(tmpDir(t), 'store');
  for (const v of ['vol1', 'vol2']) t.is(prism(store, ['volume', 'create', v]).code, 0);
  const dir = fs.mkdtempSync('/dev/shm/prism-test-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const host = await startHost(store, ['--shm-dir', dir, '--no-meta', '--vm', 'vm1=vol1', '--vm', 'vm2=vol2']);
  t.teardown(() => { host.child.kill('SIGKILL'); });
  const c1 = await connectShm(shmPath('vm1', dir), 'vm1');
  const fh = await bigFile(c1);
  c1.close();
  const vm2 = await connectShm(shmPath('vm2', dir), 'vm2');
  t.teardown(() => vm2.close());
  // The hostile guest writes requests into its request ring and never touches the response ring.
  const buf = map(shmPath('vm1', dir), {});
  t.teardown(() => unmap(buf));
  const region = Region.attach(buf);
  const tx = region.producer(0, 'request');
  t.true(tx.write(encode(['prism-vrpc', PROTOCOL_VERSION, 'vm1', ''])));
  return { host, dir, fh, vm2, region, tx };
}

shmTest('a shm guest that never releases its response ring cannot grow the host; other VMs are still served', async (t) => {
  const { host, fh, vm2, tx } = await shmSetup(t);
  let id = 1;
  const o = await underAttack(host, vm2, () => {
    for (let i = 0; i < 64; i++) if (!tx.write(encodeRequest({ id: id++, proc: Proc.READ, args: [fh, 0, 1 << 20] }))) return false;
    return true;
  });
  check(t, host, o);
});

// A hello is not a request, but it is answered: it must count against the budget too.
shmTest('a shm guest sending nothing but hellos, never releasing its response ring, cannot grow the host', async (t) => {
  const { host, vm2, tx } = await shmSetup(t);
  // Valid hellos, for this VM (answered "ok") and for another (answered with an error).
  const hellos = ['vm1', 'vm2'].map((vm) => encode(['prism-vrpc', PROTOCOL_VERSION, vm, '']));
  const o = await underAttack(host, vm2, () => {
    for (let i = 0; i < 64; i++) if (!tx.write(hellos[i & 1]!)) return false;
    return true;
  });
  check(t, host, o);
});

// Back-pressure must let go: a VM paused for its queued replies is read again once it takes them,
// also when the last of them leave the host's queue all at once.
shmTest('a shm guest that withheld its response ring and then takes its replies is served again', async (t) => {
  const { host, dir, fh, region, tx } = await shmSetup(t);
  // 100 READs of 1 MiB: far more than the 8 MiB of replies the host queues before it stops reading.
  for (let id = 1; id <= 100; id++) t.true(tx.write(encodeRequest({ id, proc: Proc.READ, args: [fh, 0, 1 << 20] })));
  await new Promise((r) => setTimeout(r, 1000));
  // Take every reply until none has come for a second.
  const rx = region.consumer(0, 'response');
  let taken = 0;
  for (let quietSince = Date.now(); Date.now() - quietSince < 1000;) {
    if (rx.read()) { taken++; quietSince = Date.now(); } else await new Promise((r) => setTimeout(r, 1));
  }
  t.is(taken, 101, 'every reply came (the hello\'s and 100 READs\')');
  const c1 = await connectShm(shmPath('vm1', dir), 'vm1', { timeoutMs: 10_000 });
  t.teardown(() => c1.close());
  await c1.call(Proc.NULL);
  t.is(host.child.exitCode, null, 'the host lives');
});
