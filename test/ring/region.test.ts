import test from 'ava';
import {
  LIVE_STOPPING, LIVE_UP, REGION_MAGIC, Region, RingCorrupt, fitGeometry, headerSize, pow2AtLeast, regionSize,
} from '../../src/ring/index.js';
import { prng } from './util.js';

test('create, attach, and talk over every queue pair', (t) => {
  const g = { queuePairs: 3, requestRingSize: 8192, responseRingSize: 16384 };
  const buf = new ArrayBuffer(pow2AtLeast(regionSize(g)));
  const host = Region.create(buf, g);
  t.is(host.generation, 1);
  const guest = Region.attach(buf);
  t.deepEqual(guest.geometry, g);
  t.is(guest.totalSize, buf.byteLength);
  for (let q = 0; q < 3; q++) {
    const gEnd = guest.endpoints('guest', q);
    const hEnd = host.endpoints('host', q);
    t.true(gEnd.tx.write(new TextEncoder().encode(`req ${q}`)));
    t.is(new TextDecoder().decode(hEnd.rx.read()!), `req ${q}`);
    t.true(hEnd.tx.write(new TextEncoder().encode(`resp ${q}`)));
    t.is(new TextDecoder().decode(gEnd.rx.read()!), `resp ${q}`);
  }
});

test('rings and control blocks never overlap and stay inside the region', (t) => {
  for (const qp of [1, 2, 7, 8, 64]) {
    const g = { queuePairs: qp, requestRingSize: 4096, responseRingSize: 8192 };
    const r = Region.create(new ArrayBuffer(regionSize(g)), g);
    const spans: Array<[number, number]> = [[0, 256]];
    for (let q = 0; q < qp; q++) {
      for (const dir of ['request', 'response'] as const) {
        const l = r.location(q, dir);
        spans.push([l.ctrlOffset, l.ctrlOffset + 256], [l.dataOffset, l.dataOffset + l.size]);
        t.is(l.dataOffset % 4096, 0);
        t.true(l.ctrlOffset + 256 <= headerSize(qp));
      }
    }
    spans.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < spans.length; i++) t.true(spans[i - 1][1] <= spans[i][0], `qp=${qp}: overlap at ${spans[i][0]}`);
    t.is(spans.at(-1)![1], regionSize(g));
    t.throws(() => r.location(qp, 'request'), { instanceOf: RangeError });
  }
});

test('generation, reset and liveness', (t) => {
  const g = fitGeometry(1 << 20, 2);
  const buf = new ArrayBuffer(1 << 20);
  const r1 = Region.create(buf, g);
  t.is(r1.generation, 1);
  const p = r1.producer(0, 'request');
  t.true(p.write(new Uint8Array(10)));
  t.is(Region.create(buf, g).generation, 2, 're-creating bumps the generation');
  t.is(r1.reset(), 3);
  t.true(r1.consumer(0, 'request').peek() === null, 'reset empties the rings');
  r1.setLiveness('host', LIVE_UP, 1234);
  r1.heartbeat('host');
  t.deepEqual(Region.attach(buf).liveness('host'), { state: LIVE_UP, heartbeat: 1, pid: 1234 });
  r1.setLiveness('guest', LIVE_STOPPING);
  t.is(r1.liveness('guest').state, LIVE_STOPPING);
  t.is(r1.liveness('host').state, LIVE_UP, 'sides do not share words');
});

test('fitGeometry uses powers of two that fit', (t) => {
  for (const [total, qp] of [[4 << 20, 1], [16 << 20, 1], [16 << 20, 4], [64 << 10, 2]] as const) {
    const g = fitGeometry(total, qp);
    t.true(regionSize(g) <= total);
    t.true(g.responseRingSize >= g.requestRingSize);
  }
  t.deepEqual(fitGeometry(16 << 20, 1), { queuePairs: 1, requestRingSize: 4 << 20, responseRingSize: 8 << 20 });
  t.throws(() => fitGeometry(8192, 1), { instanceOf: RangeError });
  t.throws(() => regionSize({ queuePairs: 1, requestRingSize: 5000, responseRingSize: 4096 }), { instanceOf: RangeError });
});

test('attach refuses a bad header with RingCorrupt', (t) => {
  const g = { queuePairs: 2, requestRingSize: 4096, responseRingSize: 4096 };
  const fresh = () => {
    const buf = new ArrayBuffer(regionSize(g));
    Region.create(buf, g);
    return buf;
  };
  t.throws(() => Region.attach(new ArrayBuffer(1 << 16)), { instanceOf: RingCorrupt, message: /not initialized/ });
  t.throws(() => Region.attach(new ArrayBuffer(100)), { instanceOf: RingCorrupt });
  const cases: Array<[string, number, number]> = [
    ['magic', 0, 0x12345678],
    ['version', 1, 2],
    ['header size', 2, 8192],
    ['queue pairs', 3, 0],
    ['queue pairs', 3, 1000],
    ['total size', 4, 1 << 30],
    ['total size too small', 4, 4096],
    ['total size hi', 5, 1],
    ['request ring size', 6, 5000],
    ['response ring size', 7, 1 << 31],
  ];
  for (const [what, word, value] of cases) {
    const buf = fresh();
    new Int32Array(buf)[word] = value;
    t.throws(() => Region.attach(buf), { instanceOf: RingCorrupt }, what);
  }
  // Random headers: RingCorrupt or a consistent region, never anything else.
  const rnd = prng(5);
  for (let i = 0; i < 2000; i++) {
    const buf = fresh();
    const w = new Int32Array(buf);
    for (let k = 0, n = 1 + Math.floor(rnd() * 3); k < n; k++) w[1 + Math.floor(rnd() * 8)] = (rnd() * 2 ** 32) | 0;
    if (rnd() < 0.5) w[0] = REGION_MAGIC;
    try {
      const r = Region.attach(buf);
      t.true(regionSize(r.geometry) <= buf.byteLength);
    } catch (e) {
      if (!(e instanceof RingCorrupt)) return t.fail(String(e));
    }
  }
});
