import test from 'ava';
import {
  RingProducer, SLEEP_ATOMICS, SLEEP_NONE, WaitStrategy, readBlocking, waitReadable, waitReadableAsync, writeBlocking, type SharedWord,
} from '../../src/ring/index.js';
import { makeRing } from './util.js';

test('every mode times out on an empty ring, and leaves the sleeping flag clear', async (t) => {
  for (const mode of ['atomics', 'poll', 'spin'] as const) {
    const { c } = makeRing(4096, true);
    const w = new WaitStrategy({ mode, spinUs: 20 });
    const t0 = performance.now();
    t.false(waitReadable(c, w, 30), mode);
    const ms = performance.now() - t0;
    t.true(ms >= 29 && ms < 500, `${mode}: ${ms} ms`);
    t.is(Atomics.load(c.consumerFlag.i32, c.consumerFlag.index), SLEEP_NONE);
    t.false(await waitReadableAsync(c, w, 20), `${mode} async`);
    t.is(readBlocking(c, w, 0), null);
  }
});

test('a record already there is returned at once; a full ring times out the writer', (t) => {
  const { p, c } = makeRing(4096, true);
  const w = new WaitStrategy({ mode: 'atomics' });
  t.true(writeBlocking(p, new Uint8Array([1, 2, 3]), w, 0));
  t.deepEqual([...readBlocking(c, w, 0)!], [1, 2, 3]);
  while (p.write(new Uint8Array(100)));
  t.false(writeBlocking(p, new Uint8Array(100), w, 20));
});

test('the producer wakes only a sleeping consumer, the way its flag says; wake:false never looks', (t) => {
  const calls: Array<[SharedWord, number]> = [];
  const { buffer, loc, c } = makeRing(4096, true);
  {
    const p = new RingProducer(buffer, loc, { wake: (word, how) => calls.push([word, how]) });
    p.write(new Uint8Array(1));
    t.is(calls.length, 0, 'nobody sleeps: no wake');
    Atomics.store(c.consumerFlag.i32, c.consumerFlag.index, SLEEP_ATOMICS);
    p.write(new Uint8Array(1));
    t.is(calls.length, 1);
    t.is(calls[0][1], SLEEP_ATOMICS);
    t.is(calls[0][0].index, p.headWord.index);
    const quiet = new RingProducer(buffer, loc, { wake: false });
    quiet.write(new Uint8Array(1));
    t.is(calls.length, 1);
  }
});

test('a write that leaves the consumer asleep (wake false) still wakes it when the ring has no room: only it can make some', (t) => {
  const woke: number[] = [];
  const { buffer, loc, c } = makeRing(4096, true);
  const p = new RingProducer(buffer, loc, { wake: (_word, how) => woke.push(how) });
  const w = new WaitStrategy({ mode: 'poll' });
  Atomics.store(c.consumerFlag.i32, c.consumerFlag.index, SLEEP_ATOMICS);
  t.true(writeBlocking(p, new Uint8Array(100), w, 0, false));
  t.deepEqual(woke, [], 'room: left asleep');
  t.is(p.unconsumedBytes(), 112);
  t.is(p.wakes, 0);
  p.wakeConsumer();
  t.deepEqual(woke, [SLEEP_ATOMICS], 'woken when asked');
  while (p.write(new Uint8Array(100))) { /* fill */ }
  woke.length = 0;
  const wakes = p.wakes;
  t.false(writeBlocking(p, new Uint8Array(100), w, 5, false), 'no room, and nobody reads');
  t.true(woke.length >= 1, 'the sleeping consumer was woken to make room');
  t.is(p.wakes - wakes, woke.length, 'wakes are counted');
});
