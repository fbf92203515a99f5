// A thread that sleeps on the futex of a ring's head word and tells the channel's event loop when a
// record arrives while the loop is idle (armed). Two ways to be told of a record:
//
// - woken: the producer shares our kernel and sees the consumer flag the loop set when it armed, so it
//   FUTEX_WAKEs us. Then this thread stays in futex_wait on the head word even while the loop is busy
//   (flag clear: nobody wakes it), and arming is two stores by the loop, no wake-up of this thread: a
//   futex_wait compares the word only when it starts, so a stale value does not matter once asleep.
// - polling: a guest in a VM cannot wake us. While armed the futex wait times out (0.25 ms after a
//   record, doubling up to pollMs) and the head is checked then; while busy this thread sleeps on the
//   control word, and the loop wakes it when it arms (control[2] = 1 tells it to).
//
// Every peer starts in polling; a wake-up that brings a record while armed switches to woken. Wake-ups
// that bring nothing (a peer waking without cause, or moving its head word under a busy loop) switch
// back for good past a rate, so a guest that floods futex wakes or rewrites the word costs the host no
// more than it did with a thread that slept on the control word while busy.
import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { futexWait } from '../native/futex.js';
import { map } from '../native/memory.js';
import { LIVE_UP, SLEEP_NONE, STATE_OFFSET } from '../ring/index.js';

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
// control[0]: 0 = the loop is busy, 1 = armed with control[1] = the head it saw, 2 = stop.
// control[2]: 1 = polling (the loop notifies control[0] when it arms), 0 = woken (it does not).
const control = new Int32Array(d.control);
const guestState = STATE_OFFSET.guest / 4;

const FIRST_POLL_MS = 0.25;
/**
 * Longest pause between polls of a region no agent has attached to (or one that left): an agent's
 * first message then waits up to this long, and a host serving many VMs whose guests are not running
 * wakes a few times a second for each instead of fifty.
 */
const NO_AGENT_POLL_MS = 250;
/** Longest sleep on the head word while woken (a peer that stopped waking us is noticed by then). */
const WOKEN_SLEEP_MS = 1000;
/** Wake-ups that bring nothing, per second, past which the peer is polled for good. */
const MAX_IDLE_WAKES = 64;

let pollMs = FIRST_POLL_MS;
let idleWakes = 0;
let idleWakesSince = Date.now();
let polledForGood = false;

/** Hand the record to the loop, unless it disarmed itself meanwhile (its own look, or a timer). */
function deliver(): void {
  if (Atomics.compareExchange(control, 0, 1, 0) !== 1) return;
  // Cleared here, not by the loop: a producer must not wake this thread again for records the loop
  // is about to read anyway.
  Atomics.store(words, flag, SLEEP_NONE);
  parentPort!.postMessage(0);
}

function idleWake(): void {
  const now = Date.now();
  if (now - idleWakesSince > 1000) { idleWakes = 0; idleWakesSince = now; }
  if (++idleWakes > MAX_IDLE_WAKES) { polledForGood = true; Atomics.store(control, 2, 1); }
}

for (;;) {
  if (Atomics.load(control, 0) === 2) break;
  const polling = Atomics.load(control, 2) === 1;
  if (polling && Atomics.load(control, 0) === 0) { Atomics.wait(control, 0, 0, 1000); continue; }
  // The head before the state: a record committed after an arming we do not see yet is then seen by
  // the loop's own last look, and one committed after that look moves the head past `now` or wakes us.
  const now = Atomics.load(words, head);
  const state = Atomics.load(control, 0);
  if (state === 2) break;
  if (state === 1 && now !== Atomics.load(control, 1)) { deliver(); continue; }
  if (state === 0 && polling) continue;
  const r = futexWait(buf, d.headOffset, now, polling ? pollMs : WOKEN_SLEEP_MS);
  if (r === 'not-equal') { // moved since we looked: look again
    // A guest rewriting its head word without pause would keep this thread spinning while the loop
    // is busy: such looks count as wake-ups that bring nothing.
    if (state === 0) idleWake();
    continue;
  }
  const armed = Atomics.load(control, 0) === 1;
  if (armed && Atomics.load(words, head) !== Atomics.load(control, 1)) {
    if (r === 'timed-out') {
      // Found by polling: this peer does not wake us; poll often for its next record.
      pollMs = FIRST_POLL_MS;
      Atomics.store(control, 2, 1);
    } else if (!polledForGood) {
      Atomics.store(control, 2, 0);
    }
    deliver();
  } else if (r === 'timed-out') {
    if (polling) pollMs = Math.min(Atomics.load(words, guestState) === LIVE_UP ? d.pollMs : NO_AGENT_POLL_MS, pollMs * 2);
  } else {
    idleWake();
  }
}
