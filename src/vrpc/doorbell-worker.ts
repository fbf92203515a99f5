// A thread that sleeps on the futex of a ring's head word while the channel's event loop is idle, and
// tells it when a record arrives. A producer on the same kernel wakes it at once (it sets the ring's
// consumer-sleeping flag); a guest in a VM cannot, so the futex wait times out (every 0.25 ms after a
// record, backing off to pollMs) and the head is checked then. Either way an idle channel costs almost no CPU (Node timers are not cheap).
import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { futexWait } from '../native/futex.js';
import { map } from '../native/memory.js';
import { SLEEP_FUTEX, SLEEP_NONE } from '../ring/index.js';

interface Data { file: string; ino?: number; headOffset: number; flagOffset: number; control: SharedArrayBuffer; pollMs: number }

const d = workerData as Data;

/** The channel's file, if the name still holds it (never a link, nor another file put in its place). */
function mapChannelFile(): ArrayBuffer {
  const fd = fs.openSync(d.file, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  try {
    if (d.ino !== undefined && fs.fstatSync(fd).ino !== d.ino) throw new Error(`${d.file} is no longer the channel's file`);
    return map(fd, { guard: true });
  } finally {
    fs.closeSync(fd);
  }
}

const buf = mapChannelFile();
const words = new Int32Array(buf);
const head = d.headOffset / 4;
const flag = d.flagOffset / 4;
// control[0]: 0 = the channel is busy (sleep here), 1 = armed with control[1] = head seen, 2 = stop
const control = new Int32Array(d.control);

// A guest in a VM that just sent a request is likely to send the next soon: after a record found by
// polling, the interval starts short and doubles up to pollMs while nothing comes (a few wake-ups per
// burst). A peer that wakes us (same kernel) is not polled for.
const FIRST_POLL_MS = 0.25;
let pollMs = FIRST_POLL_MS;

for (;;) {
  const state = Atomics.load(control, 0);
  if (state === 2) break;
  if (state === 0) { Atomics.wait(control, 0, 0, 1000); continue; }
  const seen = Atomics.load(control, 1);
  Atomics.store(words, flag, SLEEP_FUTEX);
  const now = Atomics.load(words, head);
  const r = now === seen ? futexWait(buf, d.headOffset, seen, pollMs) : 'not-equal';
  Atomics.store(words, flag, SLEEP_NONE);
  if (Atomics.load(words, head) !== seen) {
    // Found by polling: the peer cannot wake us, so poll often for its next record. Woken: no need.
    pollMs = r === 'timed-out' ? FIRST_POLL_MS : d.pollMs;
    if (Atomics.compareExchange(control, 0, 1, 0) === 1) parentPort!.postMessage(0);
  } else if (r === 'timed-out') {
    pollMs = Math.min(d.pollMs, pollMs * 2);
  }
}
