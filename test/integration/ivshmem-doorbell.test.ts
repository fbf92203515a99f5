// Issue 14: the host's ivshmem server and the doorbell (docs/doorbell.md). A peer connecting as QEMU
// does gets the protocol's messages and descriptors in order; an agent on this machine waits with the
// doorbell (its stats say so, and its replies came by interrupts); without it, as before; a peer that
// rings in a storm costs the host little; and the host says in the region whether a peer is there.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { doorbellAddon } from '../../src/native/doorbell.js';
import { map, unmap } from '../../src/native/memory.js';
import { Region } from '../../src/ring/index.js';
import { agentStats, fuseSkipReason } from '../helpers/agent.js';
import { prism, startHost } from '../helpers/host.js';
import { mountedVolume } from '../helpers/mounted-volume.js';
import { tmpDir } from '../helpers/tmp.js';

const reason = fuseSkipReason();
if (reason) console.error(`ivshmem-doorbell.test: skipped: ${reason}`);
const t = reason ? test.skip : test.serial;
const a = doorbellAddon.load();

/** Every message a peer gets right after connecting: [value, fd]. */
async function greeting(socket: string, n: number): Promise<{ fd: number; messages: Array<[bigint, number]> }> {
  const fd = a!.connect(socket);
  const messages: Array<[bigint, number]> = [];
  const deadline = Date.now() + 5000;
  while (messages.length < n && Date.now() < deadline) {
    const m = a!.receive(fd);
    if (m) messages.push(m);
    else a!.waitReadable(fd, 100);
  }
  return { fd, messages };
}

function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
}

t('a peer gets version 0, its id, the region, the host\'s eventfd and its own, as QEMU expects; the region says when one is there', async (tt) => {
  const dir = tmpDir(tt);
  const store = path.join(dir, 'store');
  prism(store, ['volume', 'create', 'v']);
  const vm = `db${process.pid}`;
  const host = await startHost(store, ['--vm', `${vm}=v`]);
  const socket = `/dev/shm/prism-${vm}.ivshmem`;
  tt.teardown(async () => { await host.stop(); for (const f of ['', '-meta', '.ivshmem']) fs.rmSync(`/dev/shm/prism-${vm}${f}`, { force: true }); });
  tt.is(fs.statSync(socket).mode & 0o777, 0o600);
  const buf = map(`/dev/shm/prism-${vm}`);
  tt.teardown(() => { unmap(buf); });
  const region = Region.attach(buf);
  tt.false(region.doorbell('host'), 'no peer yet');

  const first = await greeting(socket, 5);
  const [version, id, shm, hostPeer, own] = first.messages;
  tt.deepEqual([version![0], version![1]], [0n, -1]);
  tt.deepEqual([id![0], id![1]], [1n, -1]);
  tt.is(shm![0], -1n);
  tt.is(fs.fstatSync(shm![1]).size, fs.statSync(`/dev/shm/prism-${vm}`).size, 'the region itself');
  tt.is(fs.fstatSync(shm![1]).ino, fs.statSync(`/dev/shm/prism-${vm}`).ino);
  tt.is(hostPeer![0], 0n, 'the host is peer 0');
  tt.true(hostPeer![1] >= 0);
  tt.is(own![0], 1n, 'then its own vector');
  tt.true(own![1] >= 0);
  await new Promise((r) => setTimeout(r, 100));
  tt.true(region.doorbell('host'), 'the host says a peer is connected');

  const second = await greeting(socket, 2);
  tt.is(second.messages[1]![0], 2n, 'ids are not reused while connected');
  for (const m of [...first.messages, ...second.messages]) if (m[1] >= 0) a!.close(m[1]);
  a!.close(first.fd);
  await new Promise((r) => setTimeout(r, 100));
  tt.true(region.doorbell('host'), 'one peer is left');
  a!.close(second.fd);
  await new Promise((r) => setTimeout(r, 200));
  tt.false(region.doorbell('host'), 'the last peer left');
  await host.stop();
  tt.false(fs.existsSync(socket), 'a stopped host removes its socket');
});

t('an agent on this machine waits with the doorbell: its replies come by interrupts, not a futex', async (tt) => {
  const m = await mountedVolume(tt, 'shm');
  for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(m.mp, `f${i}`), `file ${i}\n`);
  // Calls the agent waits for (a close does not wait for the host: docs/agent.md): COMMITs.
  for (let i = 0; i < 10; i++) {
    const fd = fs.openSync(path.join(m.mp, `f${i}`), 'r+');
    fs.writeSync(fd, 'F');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  }
  for (let i = 0; i < 50; i++) tt.is(fs.readFileSync(path.join(m.mp, `f${i}`), 'utf8'), `${i < 10 ? 'F' : 'f'}ile ${i}\n`);
  const s = await agentStats(m.agent);
  tt.is(s.transport, 'shared memory, doorbell (eventfd)');
  tt.true(s.counters.doorbellRings > 0, `${s.counters.doorbellRings} rings`);
  tt.true(s.counters.doorbellInterrupts > 0, `${s.counters.doorbellInterrupts} interrupts`);
  tt.true(Region.attach(map(m.region)).doorbell('guest'), 'the agent says it rings');
});

t('--no-doorbell: the agent waits on a futex, as before', async (tt) => {
  const m = await mountedVolume(tt, 'shm', { agentArgs: ['--no-doorbell'] });
  fs.writeFileSync(path.join(m.mp, 'f'), 'x');
  const s = await agentStats(m.agent);
  tt.is(s.transport, 'shared memory, futex');
  tt.is(s.counters.doorbellRings, 0);
});

t('a peer ringing the host in a storm costs the host little, and the mount keeps working', async (tt) => {
  const m = await mountedVolume(tt, 'shm');
  const socket = `${m.region}.ivshmem`;
  const storm = await greeting(socket, 5);
  const hostFd = storm.messages[3]![1];
  const before = cpuMs(m.host.child.pid!);
  const t0 = Date.now();
  let rings = 0;
  while (Date.now() - t0 < 2000) { for (let i = 0; i < 1000; i++) a!.signal(hostFd); rings += 1000; await new Promise((r) => setImmediate(r)); }
  const used = cpuMs(m.host.child.pid!) - before;
  tt.log(`${rings} rings in 2 s: host CPU ${used} ms`);
  tt.true(used < 400, `the host spent ${used} ms of CPU in 2 s of ${rings} rings`);
  fs.writeFileSync(path.join(m.mp, 'after'), 'ok');
  tt.is(fs.readFileSync(path.join(m.mp, 'after'), 'utf8'), 'ok');
  for (const x of storm.messages) if (x[1] >= 0) a!.close(x[1]);
  a!.close(storm.fd);
});
