// The agent's kept unstable data: what a COMMIT's verifier covers and what must be sent again.
import test from 'ava';
import { PrismError } from '../../src/errors.js';
import { Proc } from '../../src/protocol/procs.js';
import { attrFromWire } from '../../src/protocol/wire.js';
import * as unstable from '../../src/guest-agent/unstable.js';

const { UnstableData } = unstable;
/** What an entry costs beyond its data (0 before it was counted). */
const E = (unstable as { ENTRY_BYTES?: number }).ENTRY_BYTES ?? 0;

const V1 = Buffer.alloc(8, 1), V2 = Buffer.alloc(8, 2);
const fh = (n: number) => Buffer.from([1, 0, 0, 0, n]);

test('a COMMIT with the same verifier lets go of what it covers; another verifier keeps it, stale', (t) => {
  let restarts = 0, releases = 0;
  const u = new UnstableData(() => { releases++; }, () => { restarts++; });
  const a = u.file(fh(1));
  const w1 = u.add(a, Proc.WRITE, [], 100, false);
  const w2 = u.add(a, Proc.WRITE, [], 50, false);
  t.is(u.bytes, 150 + 2 * E);
  u.answered(a, w1, V1);
  u.answered(a, w2, V1);
  t.false(u.stale(a));
  const cutoff = u.sendCut;
  const late = u.add(a, Proc.WRITE, [], 10, false); // after the COMMIT was sent: not covered
  u.answered(a, late, V1);
  u.covered(V2, cutoff); // the host restarted: nothing is covered
  t.is(restarts, 1);
  t.is(u.bytes, 160 + 3 * E);
  t.true(u.stale(a), 'acknowledged by a past instance: to be sent again');
  // Sent again and answered by the new instance after that COMMIT went out: not covered by it.
  const resent = u.sendCut;
  for (const e of [w1, w2]) { u.resending(e); u.answered(a, e, V2); }
  u.covered(V2, resent);
  t.is(u.bytes, 160 + 3 * E, 'changes sent again after the COMMIT was sent are not covered by it');
  u.answered(a, late, V2);
  t.false(u.stale(a));
  const now = u.sendCut;
  const later = u.add(a, Proc.WRITE, [], 5, false);
  u.answered(a, later, V2);
  u.covered(V2, now);
  t.is(u.bytes, 5 + E, 'only what was sent after the COMMIT stays');
  t.true(u.uncovered(a, u.cutoff));
  u.covered(V2, u.sendCut);
  t.is(u.bytes, 0);
  t.is(u.peek(fh(1)), undefined, 'an empty log is forgotten');
  t.true(releases > 0);
});

test('a COMMIT covers a prefix per file: nothing after a change it does not cover', (t) => {
  const u = new UnstableData(() => {}, () => {});
  u.saw(V1);
  const a = u.file(fh(1)), b = u.file(fh(2));
  const a1 = u.add(a, Proc.WRITE, [], 1, false);
  const a2 = u.add(a, Proc.WRITE, [], 1, false);
  const b1 = u.add(b, Proc.WRITE, [], 1, false);
  u.answered(a, a1, V1);
  u.answered(b, b1, V1);
  // a2 unanswered: a1 can go, a2 stays; b1 goes.
  u.covered(V1, u.sendCut);
  t.is(a.entries.length, 1);
  t.is(a.entries[0], a2);
  t.is(u.peek(fh(2)), undefined);
  u.failed(a, a2); // refused by the host: nothing to keep
  t.is(u.bytes, 0);
});

test('a COMMIT covering 100k changes lets them go at once (not one splice each)', (t) => {
  const u = new UnstableData(() => {}, () => {});
  u.saw(V1);
  const a = u.file(fh(1));
  const n = 100_000;
  const all = [];
  for (let i = 0; i < n; i++) all.push(u.add(a, Proc.WRITE, [], 10, false));
  for (const e of all) u.answered(a, e, V1);
  const t0 = performance.now();
  u.covered(V1, u.sendCut);
  const ms = performance.now() - t0;
  t.is(u.bytes, 0);
  t.is(u.peek(fh(1)), undefined);
  t.true(ms < 2000, `took ${ms.toFixed(0)} ms`);
});

test('changes without data (truncations, FALLOCATE) count against the bound too', (t) => {
  const u = new UnstableData(() => {}, () => {});
  const a = u.file(fh(1));
  u.add(a, Proc.SETATTR, [], 0, false);
  u.add(a, Proc.FALLOCATE, [], 0, false);
  t.true(u.bytes >= 2 * 64, `${u.bytes} bytes counted for two entries`);
});

// Hazard: a host killed before it committed a new file comes back without it and gives its inode
// number, so its handle, to the next file made. What the agent kept for the lost file (and its sticky
// error) must not be sent to the new one, nor reported by it; a create that opens the same file keeps it.
test('a create answered for a file born since forgets what was kept under its handle; the same file keeps it', (t) => {
  const u = new UnstableData(() => {}, () => {});
  const a = u.file(fh(7));
  a.born = unstable.bornOf(attrFromWire([7, 0o100644, 1, 0, 0, 0, 5, 1, 0, 0, 0, 0, 0, 0, 1000, 5]));
  t.is(a.born, '1000.5');
  const w = u.add(a, Proc.WRITE, [], 100, false);
  u.answered(a, w, V1);
  u.forget(fh(7), '1000.5');
  t.is(u.peek(fh(7)), a, 'the same file (same birth): kept');
  t.is(a.entries.length, 1);
  u.forget(fh(7), '2000.1');
  t.is(u.peek(fh(7)), undefined, 'another file with that handle: forgotten');
  t.is(u.bytes, 0);
  const b = u.file(fh(8));
  u.fail(b, new PrismError('EIO', 'lost'));
  u.forget(fh(8)); // a MKDIR/MKNOD/SYMLINK: surely a new file
  t.is(u.takeError(fh(8)), null, 'no sticky error of an earlier file');
});
