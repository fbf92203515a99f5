// The blocking client's spin before sleeping for a reply (src/vrpc/reply-spin.ts).
import test from 'ava';
import { MAX_SPIN_MS, ReplySpin } from '../../src/vrpc/reply-spin.js';

test('no spin while the host sleeps; otherwise about as long as that procedure\'s replies took', (t) => {
  const s = new ReplySpin();
  t.is(s.spinMs(1, true), 0, 'the host asleep: the reply needs its thread wake-ups, sleep at once');
  t.is(s.spinMs(1, false), MAX_SPIN_MS, 'nothing learnt yet: spin the most');
  for (let i = 0; i < 20; i++) s.learn(1, 0.01, false);
  t.true(s.spinMs(1, false) > 0.01 && s.spinMs(1, false) < 0.03, 'replies of 10 µs: a spin a little longer');
  for (let i = 0; i < 40; i++) s.learn(2, 0.3, false);
  t.is(s.spinMs(2, false), 0, 'replies of 300 µs: a spin would not catch them');
  s.learn(1, 5, true);
  t.true(s.spinMs(1, false) < 0.03, 'a reply while the host slept teaches nothing');
  t.is(s.spinMs(9999, false), MAX_SPIN_MS, 'unknown procedures share a slot');
});
