// Fuzzing where issue 11's bugs were (test/helpers/fuzz.ts): 10^5 random and mutated frames per
// transport with extreme arguments, ring words mutated after resets and with requests in flight, a
// response ring the guest never releases, and host restarts raced by a scribbling guest. The host
// must stay alive, keep answering another VM, and not grow without bound. `npm run fuzz` runs 10^6.
import test from 'ava';
import fs from 'node:fs';
import { nativeAvailable } from '../../src/native/ivshmem.js';
import { fuzzAll, fuzzSetup } from '../helpers/fuzz.js';

const native = nativeAvailable();
const skip = !fs.existsSync('/dev/shm') ? '/dev/shm does not exist' : !native.ok ? native.reason : undefined;
if (skip) console.error(`fuzz-frames.test: skipped: ${skip}`);

(skip ? test.skip : test.serial)('fuzz: 10^5 frames per transport, ring words, a withheld ring and raced restarts leave the host up and serving', async (t) => {
  const s = await fuzzSetup();
  t.teardown(() => s.cleanup());
  const seed = Number(process.env.PRISM_FUZZ_SEED ?? 0x5eed);
  const r = await fuzzAll(s, { frames: 100_000, seed, restarts: 2, hostileSeconds: 3 });
  t.log(`seed ${seed}: tcp ${r.tcp.frames} frames (${r.tcp.replies} replies, ${r.tcp.reconnects} reconnects); shm ${r.shm.frames} frames (${r.shm.replies} replies, ${r.shm.resets} resets); ring words ${r.ringWords.writes} writes, ${r.ringWords.resets} resets; RSS ${(r.rssBefore / 2 ** 20).toFixed(0)} -> ${(r.rssAfter / 2 ** 20).toFixed(0)} MiB; bystander ${r.bystander.answered} NULLs, slowest ${r.bystander.worstMs.toFixed(0)} ms; ${r.seconds.toFixed(1)} s`);
  t.true(s.host.child.exitCode === null && s.host.child.signalCode === null, `the host is alive: ${s.host.stderr().slice(-1500)}`);
  t.true(r.tcp.frames >= 100_000 && r.shm.frames >= 100_000);
  t.true(r.tcp.replies > r.tcp.frames / 2, 'the host answered most TCP frames');
  t.true(r.shm.replies > r.shm.frames / 2, 'the host answered most shared-memory frames');
  t.true(r.ringWords.resets > 0, 'corrupted ring words were noticed and reset');
  t.is(r.bystander.failures, 0, 'the other VM was answered throughout (and again after the restarts)');
  t.true(r.bystander.answered > 100);
  // Bounded, not flat: the store's maps and the withheld replies (8 MiB in the host) count in RSS.
  t.true(r.rssAfter - r.rssBefore < 256 * 2 ** 20, `host RSS grew by ${((r.rssAfter - r.rssBefore) / 2 ** 20).toFixed(0)} MiB`);
});
