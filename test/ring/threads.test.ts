import test from 'ava';
import { Worker } from 'node:worker_threads';
import { RING_CTRL_SIZE, type RingLocation, type WaitMode } from '../../src/ring/index.js';

const workerFile = new URL('./fixtures/ring-worker.js', import.meta.url);

function runWorker(data: object): Promise<{ done?: number; ms?: number; error?: string; empty?: boolean }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(workerFile, { workerData: data });
    w.once('message', (m) => {
      resolve(m);
      void w.terminate();
    });
    w.once('error', reject);
    w.once('exit', (code) => reject(new Error(`worker exited (${code}) without an answer`)));
  });
}

async function pair(t: import('ava').ExecutionContext, mode: WaitMode, count: number, size: number, asyncConsumer = false) {
  const buffer = new SharedArrayBuffer(RING_CTRL_SIZE + size);
  const loc: RingLocation = { ctrlOffset: 0, dataOffset: RING_CTRL_SIZE, size };
  const common = { buffer, loc, count, mode, seed: 42, maxLen: 3000 };
  const [prod, cons] = await Promise.all([
    runWorker({ ...common, role: 'producer', async: false }),
    runWorker({ ...common, role: 'consumer', async: asyncConsumer }),
  ]);
  t.is(prod.error, undefined);
  t.is(cons.error, undefined);
  t.is(cons.done, count);
  t.true(cons.empty);
  t.log(`${mode}${asyncConsumer ? ' (async consumer)' : ''}: ${count} messages in ${cons.ms!.toFixed(0)} ms (${((cons.ms! * 1000) / count).toFixed(2)} us each)`);
}

test('100k messages between two worker threads (spin then Atomics.wait), in order', (t) => pair(t, 'atomics', 100_000, 64 << 10));
test('100k messages between two worker threads in a tiny ring (always full)', (t) => pair(t, 'atomics', 100_000, 4096));
test('30k messages between two worker threads, polling with backoff', (t) => pair(t, 'poll', 30_000, 16 << 10));
test('30k messages, consumer waiting with Atomics.waitAsync', (t) => pair(t, 'atomics', 30_000, 16 << 10, true));
