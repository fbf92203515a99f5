// The host's doorbell thread (src/vrpc/doorbell.ts, doorbell-worker.ts): an idle host channel sleeps
// in it and is told of each request, from a peer that wakes it (same kernel: after the first wake-up
// arming costs no wake-up of the thread) and from one that cannot (polled), and a peer flooding
// futex wakes is still served, with the thread back to polling.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { nativeAvailable } from '../../src/native/ivshmem.js';
import { map, unmap } from '../../src/native/memory.js';
import { Region, fitGeometry } from '../../src/ring/index.js';
import { ShmChannel } from '../../src/vrpc/shm-channel.js';

const native = nativeAvailable();
const peerJs = fileURLToPath(new URL('./fixtures/doorbell-peer.js', import.meta.url));
const dtest = native.ok && fs.existsSync('/dev/shm') ? test.serial : test.serial.skip;
let counter = 0;

/** An echoing host channel with a doorbell on a fresh region file, and a peer process driving it. */
async function run(t: ExecutionContext, count: number, gapMs: number, wakes: boolean, flood = 0) {
  const file = `/dev/shm/prism-doorbell-test-${process.pid}-${counter++}`;
  const buf = map(file, { size: 1 << 20, create: true });
  const region = Region.create(buf, fitGeometry(1 << 20));
  const ch = new ShmChannel(region, 'host', { file, fileIno: fs.statSync(file).ino });
  t.teardown(() => { ch.close(); fs.rmSync(file, { force: true }); unmap(buf); });
  ch.onMessage((m) => { ch.send(Uint8Array.from(m)); });
  const { stdout } = await promisify(execFile)(process.execPath, [peerJs, file, String(count), String(gapMs), wakes ? '1' : '0', String(flood)]);
  return { replies: Number(stdout.trim()), stats: { ...ch.doorbellStats! } };
}

dtest('a peer that wakes the doorbell: each request wakes the idle host once, and arming never wakes the thread again', async (t) => {
  const { replies, stats } = await run(t, 100, 2, true);
  t.is(replies, 100);
  // Most requests find the host asleep (2 ms apart); a request that comes while the loop is still
  // finishing its turn is read without the doorbell.
  t.true(stats.deliveries >= 50 && stats.deliveries <= 101, `deliveries ${stats.deliveries}`);
  t.true(stats.armWakes <= 2, `armings that woke the thread: ${stats.armWakes} (only until the peer first woke it)`);
});

dtest('a peer that cannot wake (a guest in a VM) is found by polling', async (t) => {
  const { replies, stats } = await run(t, 30, 2, false);
  t.is(replies, 30);
  t.true(stats.deliveries >= 15, `deliveries ${stats.deliveries}`);
  t.true(stats.armWakes >= stats.deliveries - 1, 'a polled peer: the thread sleeps on the control word while busy and is woken to arm');
});

dtest('a peer flooding futex wakes is served, and the thread goes back to polling it', async (t) => {
  const { replies, stats } = await run(t, 60, 1, true, 200);
  t.is(replies, 60);
  t.true(stats.armWakes > 10, `after the flood the thread is woken to arm again (${stats.armWakes})`);
});
