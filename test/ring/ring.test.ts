import test from 'ava';
import fc from 'fast-check';
import {
  HEAD, PAD_MARK, RING_CTRL_SIZE, RingConsumer, RingCorrupt, RingProducer, TAIL, recordBytes, type RingLocation,
} from '../../src/ring/index.js';
import { fill, makeRing, matches, prng } from './util.js';

test('an empty ring: peek and read give null, a record goes through', (t) => {
  const { p, c } = makeRing(4096);
  t.is(c.peek(), null);
  t.is(c.read(), null);
  t.false(c.hasRecord());
  t.true(p.isEmpty());
  const v = p.reserve(5)!;
  t.is(v.length, 5);
  v.set([1, 2, 3, 4, 5]);
  t.is(c.peek(), null, 'nothing is visible before commit');
  p.commit();
  t.false(p.isEmpty());
  t.deepEqual([...c.peek()!], [1, 2, 3, 4, 5]);
  t.deepEqual([...c.peek()!], [1, 2, 3, 4, 5], 'peek is idempotent until release');
  c.release();
  t.is(c.peek(), null);
  t.true(p.isEmpty());
  t.true(p.write(new Uint8Array(0)));
  t.is(c.read()!.length, 0, 'zero-length records exist');
});

test('commit may be shorter than the reservation; abort publishes nothing', (t) => {
  const { p, c } = makeRing(4096);
  const v = p.reserve(100)!;
  v.set([9, 8, 7]);
  p.commit(3);
  t.deepEqual([...c.read()!], [9, 8, 7]);
  p.reserve(10);
  p.abort();
  t.is(c.peek(), null);
  t.throws(() => p.commit(), { message: /nothing reserved/ });
  p.reserve(10);
  t.throws(() => p.reserve(10), { message: /not committed/ });
  t.throws(() => p.commit(11), { instanceOf: RangeError });
  p.commit(0);
  t.throws(() => c.release(), { message: /nothing peeked/ });
});

test('a full ring: reserve returns null until the consumer releases', (t) => {
  const { p, c } = makeRing(4096);
  let n = 0;
  while (p.reserve(56)) {
    p.commit();
    n++;
  }
  t.is(n, 4096 / recordBytes(56), 'records fill the ring exactly');
  t.is(p.freeBytes(), 0);
  t.false(p.canReserve(0));
  t.truthy(c.read());
  t.true(p.canReserve(56));
  t.false(p.canReserve(57));
  t.truthy(p.reserve(56));
  p.commit();
  let m = 0;
  while (c.read()) m++;
  t.is(m, n);
  t.true(p.isEmpty());
});

test('payload limits: size - 8 bytes fit from any offset; more is a RangeError', (t) => {
  const size = 8192;
  for (const start of [0, 8, 4096, 8184]) {
    const { p, c } = makeRing(size);
    if (start > 0) {
      // Move both counters to `start`.
      t.true(p.write(new Uint8Array(start - 8)));
      t.truthy(c.read());
    }
    const big = new Uint8Array(size - 8);
    fill(big, start);
    let view = p.reserve(big.length);
    if (!view) {
      // The first attempt published a PAD; once the consumer skips it, the record fits at 0.
      t.is(c.peek(), null);
      view = p.reserve(big.length);
    }
    t.truthy(view, `from offset ${start}`);
    view!.set(big);
    p.commit();
    t.true(matches(c.peek()!, start));
    c.release();
    t.throws(() => p.reserve(size - 7), { instanceOf: RangeError });
    t.throws(() => p.reserve(-1), { instanceOf: RangeError });
    t.throws(() => p.reserve(1.5), { instanceOf: RangeError });
  }
});

test('a 1 MiB payload through a 2 MiB ring, many times, at shifting offsets', (t) => {
  const { p, c } = makeRing(2 << 20);
  const rnd = prng(7);
  for (let i = 0; i < 12; i++) {
    const len = (1 << 20) + Math.floor(rnd() * 4096);
    let v = p.reserve(len);
    if (!v) {
      t.is(c.read(), null);
      v = p.reserve(len);
    }
    fill(v!, i);
    p.commit();
    // A small record in between shifts the next offset.
    const small = Math.floor(rnd() * 300);
    const s = p.reserve(small);
    if (s) {
      fill(s, 1000 + i);
      p.commit();
    }
    const got = c.peek()!;
    t.is(got.length, len);
    t.true(matches(got, i));
    c.release();
    if (s) t.true(matches(c.read()!, 1000 + i));
    t.is(c.read(), null);
  }
});

test('wrap-around with random record sizes keeps every byte and the order', (t) => {
  for (const seed of [1, 2, 3, 4]) {
    const size = 4096 << (seed % 3);
    const { p, c } = makeRing(size);
    const rnd = prng(seed);
    let sent = 0;
    let got = 0;
    const lens: number[] = [];
    for (let step = 0; step < 40000; step++) {
      if (rnd() < 0.55) {
        const r = rnd();
        const len = r < 0.6 ? Math.floor(rnd() * 64) : r < 0.95 ? Math.floor(rnd() * 1024) : Math.floor(rnd() * (size - 8));
        const v = p.reserve(len);
        if (v) {
          fill(v, sent);
          p.commit();
          lens.push(len);
          sent++;
        }
      } else {
        const v = c.peek();
        if (v) {
          if (v.length !== lens[got] || !matches(v, got)) return t.fail(`seed ${seed}: record ${got} differs`);
          c.release();
          got++;
        }
      }
    }
    while (c.peek()) {
      t.true(matches(c.peek()!, got));
      c.release();
      got++;
    }
    t.is(got, sent);
    t.true(sent > 1000, `seed ${seed}: ${sent} records`);
  }
});

test('counters wrap at 2^32', (t) => {
  const size = 4096;
  const buffer = new ArrayBuffer(RING_CTRL_SIZE + size);
  const loc: RingLocation = { ctrlOffset: 0, dataOffset: RING_CTRL_SIZE, size };
  const ctrl = new Int32Array(buffer, 0, RING_CTRL_SIZE / 4);
  ctrl[HEAD] = ctrl[TAIL] = (2 ** 32 - 3 * size - 64) | 0;
  const p = new RingProducer(buffer, loc);
  const c = new RingConsumer(buffer, loc);
  const rnd = prng(99);
  let sent = 0;
  let got = 0;
  for (let i = 0; i < 5000; i++) {
    const v = p.reserve(Math.floor(rnd() * 700));
    if (v) {
      fill(v, sent++);
      p.commit();
    }
    if (rnd() < 0.5) {
      const r = c.read();
      if (r) t.true(matches(r, got++));
    }
  }
  while (c.peek()) t.true(matches(c.read()!, got++));
  t.is(got, sent);
  t.true((Atomics.load(ctrl, HEAD) >>> 0) < 2 ** 31, 'the head did wrap');
});

test('property: any interleaving of writes and reads delivers records in order', (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.nat(5000).map((n) => ({ w: n })), fc.constant({ r: true })), { maxLength: 300 }),
      (ops) => {
        const { p, c } = makeRing(8192);
        const model: number[] = [];
        let seq = 0;
        for (const op of ops) {
          if ('w' in op) {
            const v = p.reserve(op.w);
            if (v) {
              fill(v, seq);
              p.commit();
              model.push(seq++);
            } else {
              // Refused only when the ring really lacks room (or it published a PAD).
              if (model.length === 0 && c.peek() === null) {
                const again = p.reserve(op.w);
                if (!again) return false;
                fill(again, seq);
                p.commit();
                model.push(seq++);
              }
            }
          } else {
            const v = c.read();
            const want = model.shift();
            if (want === undefined ? v !== null : v === null || !matches(v, want)) return false;
          }
        }
        for (const want of model) if (!matches(c.read() ?? new Uint8Array([1]), want)) return false;
        return c.read() === null;
      },
    ),
    { numRuns: 300 },
  );
  t.pass();
});

// --- a hostile peer ----------------------------------------------------------------------------

function corruptCase(
  t: import('ava').ExecutionContext,
  what: string,
  poke: (ctrl: Int32Array, words: Uint32Array) => void,
  side: 'consumer' | 'producer' = 'consumer',
): void {
  const { buffer, p, c } = makeRing(4096);
  for (let i = 0; i < 3; i++) t.true(p.write(new Uint8Array(40).fill(i)));
  poke(new Int32Array(buffer, 0, RING_CTRL_SIZE / 4), new Uint32Array(buffer, RING_CTRL_SIZE, 1024));
  const end = side === 'consumer' ? c : p;
  const run = side === 'consumer' ? () => { while (c.read()); } : () => { while (p.reserve(100)) p.commit(); };
  const e = t.throws(run, { instanceOf: RingCorrupt }, what);
  t.is(end.corrupt, e ?? undefined, `${what}: the ring remembers its error`);
  // Broken for good: the same error again.
  const again = t.throws(side === 'consumer' ? () => c.peek() : () => p.reserve(0));
  t.is(again, e ?? undefined);
}

test('garbage in a record header is RingCorrupt', (t) => {
  corruptCase(t, 'bad check word', (_c, w) => (w[1] = 123));
  corruptCase(t, 'length too large', (_c, w) => {
    w[0] = 4096;
    w[1] = ~4096 >>> 0;
  });
  corruptCase(t, 'length past the head', (_c, w) => {
    w[0] = 2000;
    w[1] = ~2000 >>> 0;
  });
  corruptCase(t, 'huge length', (_c, w) => {
    w[0] = 0xfffffffe;
    w[1] = 1;
  });
  corruptCase(t, 'PAD at offset 0', (_c, w) => {
    w[0] = PAD_MARK;
    w[1] = 0;
  });
  corruptCase(t, 'PAD with a check word', (_c, w) => {
    w[12] = PAD_MARK;
    w[13] = 5;
  });
  corruptCase(t, 'PAD past the head', (_c, w) => {
    w[12] = PAD_MARK;
    w[13] = 0;
  });
});

test('garbage counters are RingCorrupt', (t) => {
  corruptCase(t, 'unaligned head', (c) => (c[HEAD] = 13));
  corruptCase(t, 'head laps the tail', (c) => (c[HEAD] = 8192));
  corruptCase(t, 'head moves backwards', (c) => (c[HEAD] = -8));
  corruptCase(t, 'tail past the head', (c) => (c[TAIL] = 4096), 'producer');
  corruptCase(t, 'tail backwards', (c) => (c[TAIL] = -64), 'producer');
  corruptCase(t, 'unaligned tail', (c) => (c[TAIL] = 4), 'producer');
  const { buffer, loc } = makeRing(4096);
  new Int32Array(buffer)[HEAD] = 5000;
  // Constructing never throws (it runs where a guest's words are first read, e.g. right after a
  // reset): the ring is born broken and its first operation throws.
  const c = new RingConsumer(buffer, loc);
  const p = new RingProducer(buffer, loc);
  t.true(c.corrupt instanceof RingCorrupt);
  t.throws(() => c.peek(), { instanceOf: RingCorrupt });
  t.throws(() => p.reserve(8), { instanceOf: RingCorrupt });
  t.throws(() => c.hasRecord(), { instanceOf: RingCorrupt });
});

test('fuzz: random garbage anywhere in the ring never crashes nor hangs, only RingCorrupt', (t) => {
  const rnd = prng(2024);
  let corrupt = 0;
  let fine = 0;
  for (let iter = 0; iter < 3000; iter++) {
    const size = 4096;
    const { buffer, loc, p, c } = makeRing(size);
    const bytes = new Uint8Array(buffer);
    // Some honest traffic first, so garbage lands between real records.
    for (let i = 0, n = Math.floor(rnd() * 40); i < n; i++) {
      const v = p.reserve(Math.floor(rnd() * 300));
      if (v) {
        fill(v, i);
        p.commit();
      }
      if (rnd() < 0.4) c.read();
    }
    const kind = rnd();
    const mutations = 1 + Math.floor(rnd() * 8);
    for (let m = 0; m < mutations; m++) {
      if (kind < 0.3) {
        // Bytes of the control block (counters and flags).
        bytes[Math.floor(rnd() * 72)] = Math.floor(rnd() * 256);
      } else if (kind < 0.6) {
        bytes[RING_CTRL_SIZE + Math.floor(rnd() * size)] = Math.floor(rnd() * 256);
      } else {
        // Plausible-looking headers: lengths near the boundaries, PAD marks.
        const w = new Uint32Array(buffer, RING_CTRL_SIZE, size / 4);
        const at = Math.floor(rnd() * (size / 8)) * 2;
        const len = [0, 1, 4088, 4089, 0xffffffff, 0x7fffffff, Math.floor(rnd() * 5000)][Math.floor(rnd() * 7)];
        w[at] = len;
        w[at + 1] = rnd() < 0.7 ? ~len >>> 0 : Math.floor(rnd() * 2 ** 32);
      }
    }
    try {
      const c2 = rnd() < 0.5 ? c : new RingConsumer(buffer, loc);
      for (let i = 0; i < 200; i++) {
        const v = c2.peek();
        if (v) {
          // Views are always inside the ring's data area.
          if (v.byteOffset < RING_CTRL_SIZE || v.byteOffset + v.length > RING_CTRL_SIZE + size) throw new Error('view out of bounds');
          c2.release();
        }
        const w = p.reserve(Math.floor(rnd() * 500));
        if (w) p.commit(Math.floor(rnd() * (w.length + 1)));
      }
      fine++;
    } catch (e) {
      if (!(e instanceof RingCorrupt)) return t.fail(`iteration ${iter}: ${(e as Error).stack}`);
      corrupt++;
    }
  }
  t.log(`${corrupt} runs detected corruption, ${fine} ran through garbage that happened to be valid`);
  t.true(corrupt > 100 && fine > 100);
});
