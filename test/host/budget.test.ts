// The per-VM budget and the pre-authentication gate (src/host/budget.ts) over fake channels: when a
// VM is paused and resumed, deferred replies counted as in flight, turn slices, connection caps.
import test from 'ava';
import { LoopShare, PreAuthGate, VmBudget, type GatedChannel } from '../../src/host/budget.js';
import { MAX_MESSAGE } from '../../src/protocol/procs.js';

class FakeChannel implements GatedChannel {
  paused = false;
  closed = false;
  queuedBytes = 0;
  maxMessage = MAX_MESSAGE;
  readonly transient = false;
  private drains: Array<() => void> = [];
  private closes: Array<(e?: Error) => void> = [];
  send(): boolean { return !this.closed; }
  sendParts(): boolean { return !this.closed; }
  onMessage(): void {}
  onClose(cb: (e?: Error) => void): void { this.closes.push(cb); }
  onDrain(cb: () => void): void { this.drains.push(cb); }
  close(): void { if (this.closed) return; this.closed = true; for (const cb of this.closes) cb(); }
  pause(): void { this.paused = true; }
  resume(): void { this.paused = false; }
  setMaxMessage(n: number): void { this.maxMessage = n; }
  drain(to: number): void { this.queuedBytes = to; for (const cb of this.drains) cb(); }
}

const nextTurn = () => new Promise<void>((r) => setImmediate(r));

test('requests in flight (deferred replies) pause every channel of the VM until one ends', async (t) => {
  const b = new VmBudget('vm', { maxInFlight: 4, sliceRequests: 1000, sliceMs: 1e9 });
  const a = new FakeChannel(), c = new FakeChannel();
  const sa = b.attach(a, true)!, sc = b.attach(c, false)!;
  for (let i = 0; i < 3; i++) sa.begin();
  t.false(a.paused);
  sc.begin(); // the fourth, on the other channel
  t.true(a.paused && c.paused, 'both channels of the VM stop being read');
  await nextTurn();
  t.true(a.paused, 'a new turn does not resume a VM that holds its whole budget');
  sa.end();
  t.false(a.paused || c.paused, 'resumed once a reply is out');
  t.is(b.snapshot().inFlight, 3);
  t.is(b.snapshot().pauses, 1);
  t.is(b.snapshot().peakInFlight, 4);
});

test('reply bytes queued pause the VM; it resumes when they drain below half', (t) => {
  const b = new VmBudget('vm', { maxQueuedBytes: 1000, sliceRequests: 1000, sliceMs: 1e9 });
  const a = new FakeChannel();
  const s = b.attach(a, true)!;
  s.begin();
  a.queuedBytes = 1200; // the reply went into the queue
  s.end();
  t.true(a.paused);
  a.drain(700);
  t.true(a.paused, 'still over half');
  a.drain(400);
  t.false(a.paused);
  t.is(b.snapshot().peakQueuedBytes, 1200);
});

test('one VM gets a slice of each event-loop turn (count or time), then the next turn', async (t) => {
  const b = new VmBudget('vm', { sliceRequests: 8, sliceMs: 1e9 });
  const a = new FakeChannel();
  const s = b.attach(a, true)!;
  for (let i = 0; i < 7; i++) { s.begin(); s.end(); }
  t.false(a.paused);
  s.begin(); s.end();
  t.true(a.paused, 'the eighth request in one turn ends the slice');
  await nextTurn();
  t.false(a.paused, 'the next turn resumes it');
  t.is(b.snapshot().pauses, 0, 'slices are not counted as budget exhaustion');

  const timed = new VmBudget('vm2', { sliceRequests: 1000, sliceMs: 5 });
  const c = new FakeChannel();
  const sc = timed.attach(c, true)!;
  sc.begin(); sc.spent(1, 3); sc.end();
  t.false(c.paused);
  sc.begin(); sc.spent(1, 3); sc.end();
  t.true(c.paused, '6 ms of handler time in one turn ends the slice');
  await nextTurn();
  t.false(c.paused);
});

test('a VM holds at most maxConnections TCP connections; a closed one frees its place', (t) => {
  const b = new VmBudget('vm', { maxConnections: 2 });
  const a = new FakeChannel(), c = new FakeChannel();
  t.truthy(b.attach(a, true));
  t.truthy(b.attach(c, true));
  t.is(b.attach(new FakeChannel(), true), null);
  t.truthy(b.attach(new FakeChannel(), false), 'a shared-memory region is not a connection');
  a.close();
  t.truthy(b.attach(new FakeChannel(), true));
});

test('a channel attached while the VM is paused starts paused', (t) => {
  const b = new VmBudget('vm', { maxInFlight: 1 });
  const s = b.attach(new FakeChannel(), true)!;
  s.begin();
  const late = new FakeChannel();
  b.attach(late, true);
  t.true(late.paused);
  s.end();
  t.false(late.paused);
});

test('pre-auth gate: small frames, the oldest waiting connection makes room, the handshake clock', async (t) => {
  const gate = new PreAuthGate({ maxPending: 3, maxFrame: 512, handshakeMs: 50 });
  const chans = Array.from({ length: 5 }, () => new FakeChannel());
  const expired: number[] = [];
  chans.forEach((ch, i) => gate.admit(ch, `peer${i}`, () => { expired.push(i); ch.close(); }));
  t.is(chans[0].maxMessage, 512);
  t.deepEqual(chans.map((c) => c.closed), [true, true, false, false, false], 'the two oldest were dropped');
  t.is(gate.waiting, 3);
  gate.authenticated(chans[2]);
  t.is(chans[2].maxMessage, MAX_MESSAGE, 'full-size frames once authenticated');
  t.is(gate.waiting, 2);
  chans[3].close();
  t.is(gate.waiting, 1, 'a closed connection no longer counts');
  await new Promise((r) => setTimeout(r, 120));
  t.deepEqual(expired, [4], 'only the one still waiting ran out of time');
  t.false(chans[2].closed);
  t.is(gate.dropped, 3);
});

test('a VM over its share of the loop while another VM is served waits for the next window; alone it is not held', async (t) => {
  const share = new LoopShare(40);
  const hog = new VmBudget('hog', { sliceRequests: 1000, sliceMs: 1, maxLoopShare: 0.5 }, share);
  const other = new VmBudget('other', {}, share);
  const h = new FakeChannel(), o = new FakeChannel();
  const sh = hog.attach(h, true)!, so = other.attach(o, true)!;
  // Alone: 30 ms of a 40 ms window is fine, the next turn resumes it.
  sh.begin(); sh.spent(1, 30); sh.end();
  t.true(h.paused, 'its slice is spent');
  await nextTurn();
  t.false(h.paused, 'alone, it is not held');
  // Another VM is served now: the hog is over half the window, so it waits for the window to end.
  so.begin(); so.spent(1, 0.1); so.end();
  sh.begin(); sh.spent(1, 5); sh.end();
  await nextTurn();
  t.true(h.paused, 'held while the other VM is served');
  t.is(hog.snapshot().holds, 1);
  await new Promise((r) => setTimeout(r, 60));
  t.false(h.paused, 'resumed in the next window');
  t.false(o.paused);
});
