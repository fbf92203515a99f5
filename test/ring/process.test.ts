// Across two real processes: this one (the guest end) and a child (the host end, fixtures/echo-child)
// mapping the same /dev/shm file through the addon.
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { futexWait, futexWake } from '../../src/native/futex.js';
import { nativeAvailable } from '../../src/native/ivshmem.js';
import { map, unmap } from '../../src/native/memory.js';
import {
  LIVE_UP, Region, WaitStrategy, peekBlocking, reserveBlocking, type Geometry, type RingConsumer, type RingProducer, type WaitMode,
} from '../../src/ring/index.js';
import { prng } from './util.js';

const native = nativeAvailable();
const childJs = fileURLToPath(new URL('./fixtures/echo-child.js', import.meta.url));
const ptest = native.ok ? test.serial : test.serial.skip;
let counter = 0;

// A missing addon is a failure, not a pass: the tests below need it (test/native-addons.test.ts says so for every test).
if (!native.ok) test('cross-process tests: the addon is built', (t) => { t.fail(`the addon is not built: ${native.reason}`); });

interface Peer {
  region: Region;
  tx: RingProducer;
  rx: RingConsumer;
  wait: WaitStrategy;
  child: ChildProcess;
  stderr: () => string;
}

async function startPeer(t: ExecutionContext, g: Geometry, mode: WaitMode, spinUs = 50): Promise<Peer> {
  const file = `/dev/shm/prism-ring-test-${process.pid}-${counter++}`;
  const buf = map(file, { size: 16 << 20, create: true });
  const region = Region.create(buf, g);
  const child = spawn(process.execPath, [childJs, file, mode, String(spinUs)], { stdio: ['ignore', 'inherit', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  let exited = false;
  child.on('exit', () => (exited = true));
  t.teardown(() => {
    child.kill('SIGKILL');
    fs.rmSync(file, { force: true });
    unmap(buf);
  });
  for (let i = 0; region.liveness('host').state !== LIVE_UP; i++) {
    if (exited || i > 2000) throw new Error(`the child did not come up: ${err}`);
    await sleep(5);
  }
  const { tx, rx } = region.endpoints('guest', 0);
  return { region, tx, rx, wait: new WaitStrategy({ mode, spinUs }), child, stderr: () => err };
}

const OP_ECHO = 1;
const OP_STAMP = 2;
const OP_CPU = 3;
const OP_QUIT = 4;

/** Request layout: [0] op, [4..8) seq, [8..16) child's stamp, [16..24) our send time, then a pattern. */
function send(p: Peer, op: number, seq: number, len: number): bigint {
  const v = reserveBlocking(p.tx, len, p.wait, 10_000);
  if (!v) throw new Error(`no room for request ${seq}: ${p.stderr()}`);
  return fillRequest(p, v, op, seq, len);
}

/** Send without waiting: null when the request ring has no room now. */
function trySend(p: Peer, op: number, seq: number, len: number): bigint | null {
  const v = p.tx.reserve(len);
  return v ? fillRequest(p, v, op, seq, len) : null;
}

function fillRequest(p: Peer, v: Uint8Array, op: number, seq: number, len: number): bigint {
  const dv = new DataView(v.buffer, v.byteOffset, v.length);
  v[0] = op;
  dv.setUint32(4, seq, true);
  for (let i = 24; i < len; i++) v[i] = (seq * 31 + i * 7) & 255;
  const t0 = process.hrtime.bigint();
  dv.setBigUint64(16, t0, true);
  p.tx.commit();
  return t0;
}

/** Receive one response; checks the echo. Returns [child stamp, receive time, copy of bytes 8..16]. */
function receive(p: Peer, seq: number, len: number, full = true): { stamp: bigint; at: bigint; f64: number } {
  const v = peekBlocking(p.rx, p.wait, 10_000);
  const at = process.hrtime.bigint();
  if (!v) throw new Error(`no response ${seq}: ${p.stderr()}`);
  const dv = new DataView(v.buffer, v.byteOffset, v.length);
  if (v.length !== len) throw new Error(`response ${seq}: ${v.length} bytes, expected ${len}`);
  if (dv.getUint32(4, true) !== seq) throw new Error(`response ${dv.getUint32(4, true)} where ${seq} was expected`);
  if (full) for (let i = 24; i < len; i++) if (v[i] !== ((seq * 31 + i * 7) & 255)) throw new Error(`response ${seq}: byte ${i} differs`);
  const r = { stamp: dv.getBigUint64(8, true), at, f64: dv.getFloat64(8, true) };
  p.rx.release();
  return r;
}

function quit(p: Peer): Promise<number | null> {
  const done = new Promise<number | null>((resolve) => p.child.once('exit', (code) => resolve(code)));
  send(p, OP_QUIT, 0, 24);
  return done;
}

function pct(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

function latency(p: Peer, n: number): { rt50: number; rt99: number; ow50: number } {
  const rt: number[] = [];
  const ow: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = send(p, OP_STAMP, i, 64);
    const r = receive(p, i, 64);
    if (i >= n / 10) {
      rt.push(Number(r.at - t0) / 1000);
      ow.push(Number(r.stamp - t0) / 1000);
    }
  }
  return { rt50: pct(rt, 0.5), rt99: pct(rt, 0.99), ow50: pct(ow, 0.5) };
}

const small: Geometry = { queuePairs: 1, requestRingSize: 64 << 10, responseRingSize: 64 << 10 };
const fmt = (l: { rt50: number; rt99: number; ow50: number }) =>
  `round trip p50 ${l.rt50.toFixed(2)} us, p99 ${l.rt99.toFixed(2)} us; one way p50 ${l.ow50.toFixed(2)} us`;

ptest('the addon: map, unmap, futex argument checks', (t) => {
  const file = `/dev/shm/prism-ring-test-${process.pid}-${counter++}`;
  t.teardown(() => fs.rmSync(file, { force: true }));
  t.throws(() => map(file), { message: /No such file/ });
  t.throws(() => map(file, { create: true }), { message: /needs opts.size/ });
  const a = map(file, { size: 8192, create: true });
  t.is(a.byteLength, 8192);
  t.is(fs.statSync(file).size, 8192);
  const b = map(file);
  new Int32Array(a)[5] = 77;
  t.is(new Int32Array(b)[5], 77, 'two mappings of one file share memory');
  const ro = map(file, { readonly: true, size: 4096 });
  t.is(new Int32Array(ro)[5], 77);
  t.throws(() => map(file, { size: 1 << 20 }), { instanceOf: RangeError });
  t.is(futexWait(a, 20, 0, 5), 'not-equal');
  t.is(futexWait(a, 20, 77, 5), 'timed-out');
  t.is(futexWake(a, 20, 1), 0);
  t.throws(() => futexWait(a, 2, 0, 1), { instanceOf: RangeError, message: /aligned/ });
  t.throws(() => futexWait(a, 8192, 0, 1), { instanceOf: RangeError });
  t.throws(() => futexWake(a, -4, 1), { instanceOf: RangeError });
  t.true(unmap(a));
  t.is(a.byteLength, 0, 'unmap detaches the buffer');
  t.false(unmap(a));
  t.throws(() => futexWake(a, 0, 1), { message: /detached/ });
  t.throws(() => unmap(new ArrayBuffer(8)), { instanceOf: TypeError });
  unmap(b);
  unmap(ro);
});

ptest('round trips across processes, spinning', async (t) => {
  const p = await startPeer(t, small, 'spin');
  const l = latency(p, 20_000);
  t.log(`spin: ${fmt(l)}`);
  t.is(await quit(p), 0);
});

ptest('round trips across processes, spin then futex sleep', async (t) => {
  const p = await startPeer(t, small, 'futex', 50);
  const l = latency(p, 20_000);
  t.log(`futex (spin 50 us first): ${fmt(l)}`);
  const q = await startPeer(t, small, 'futex', 0);
  const m = latency(q, 3_000);
  t.log(`futex (sleep at once, a futex wake on every message): ${fmt(m)}`);
  t.is(await quit(p), 0);
  t.is(await quit(q), 0);
});

ptest('round trips across processes, polling with backoff (as between guest and host)', async (t) => {
  const p = await startPeer(t, small, 'poll', 50);
  const l = latency(p, 5_000);
  t.log(`poll (spin 50 us first): ${fmt(l)}`);
  t.is(await quit(p), 0);
});

ptest('many requests in flight across processes: sizes at random, order and bytes kept', async (t) => {
  const p = await startPeer(t, { queuePairs: 1, requestRingSize: 32 << 10, responseRingSize: 32 << 10 }, 'futex', 20);
  const rnd = prng(11);
  const n = 20_000;
  const lens: number[] = [];
  let sent = 0;
  let got = 0;
  let maxInFlight = 0;
  while (got < n) {
    // Send while there is room and fewer than 64 are outstanding; then take what came back.
    // Never block on sending while responses are unread: the peer may be waiting for us to make
    // room in the response ring (both rings full would deadlock).
    while (sent < n && sent - got < 64) {
      const len = lens[sent] ?? 24 + (rnd() < 0.9 ? Math.floor(rnd() * 200) : Math.floor(rnd() * 8000));
      lens[sent] = len;
      if (trySend(p, OP_ECHO, sent, len) === null) break;
      sent++;
    }
    maxInFlight = Math.max(maxInFlight, sent - got);
    receive(p, got, lens[got]);
    got++;
    while (got < sent && p.rx.hasRecord()) {
      receive(p, got, lens[got]);
      got++;
    }
  }
  t.log(`${n} echoes, up to ${maxInFlight} in flight`);
  t.true(maxInFlight > 8);
  t.is(await quit(p), 0);
});

ptest('1 MiB payloads across processes', async (t) => {
  const p = await startPeer(t, { queuePairs: 1, requestRingSize: 4 << 20, responseRingSize: 4 << 20 }, 'futex', 50);
  const len = 1 << 20;
  const template = Buffer.alloc(len);
  for (let i = 0; i < len; i++) template[i] = (i * 7 + (i >> 10)) & 255;
  const n = 300;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const v = reserveBlocking(p.tx, len, p.wait, 10_000)!;
    v.set(template);
    v[0] = OP_ECHO;
    new DataView(v.buffer, v.byteOffset).setUint32(4, i, true);
    p.tx.commit();
    const r = peekBlocking(p.rx, p.wait, 10_000)!;
    t.is(r.length, len);
    t.is(new DataView(r.buffer, r.byteOffset).getUint32(4, true), i);
    if (i % 30 === 0) t.is(Buffer.compare(Buffer.from(r.buffer, r.byteOffset + 8, len - 8), template.subarray(8)), 0);
    p.rx.release();
  }
  const ms = performance.now() - t0;
  t.log(`${n} round trips of 1 MiB (copied in, echoed by the child, copied back) in ${ms.toFixed(0)} ms: ${(ms / n).toFixed(2)} ms each, ${(n / (ms / 1000)).toFixed(0)} MiB/s of requests`);
  t.is(await quit(p), 0);
});

ptest('an idle peer uses next to no CPU (futex and poll)', async (t) => {
  for (const mode of ['futex', 'poll'] as const) {
    const p = await startPeer(t, small, mode, 50);
    send(p, OP_CPU, 0, 24);
    receive(p, 0, 24);
    await sleep(1000);
    send(p, OP_CPU, 1, 24);
    const cpuUs = receive(p, 1, 24).f64;
    t.log(`${mode}: the idle child used ${(cpuUs / 1000).toFixed(1)} ms of CPU in 1 s (${(cpuUs / 10000).toFixed(2)}%)`);
    t.true(cpuUs < (mode === 'futex' ? 20_000 : 100_000), `${mode}: ${cpuUs} us`);
    t.is(await quit(p), 0);
  }
});
