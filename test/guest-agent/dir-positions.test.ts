// Directory positions (src/guest-agent/fuse/dir-positions.ts): a reader that resumes from a position
// after the directory changed sees every unchanged name exactly once, which is what lets the agent
// keep listings per directory and the kernel open directories without asking.
import test from 'ava';
import { entriesThatFit, firstAfter, inPositionOrder, positionOf, type PositionedListing } from '../../src/guest-agent/fuse/dir-positions.js';
import type { FuseDirEntry } from '../../src/guest-agent/fuse/fs.js';

const entry = (name: string): FuseDirEntry => ({ name, ino: 1n, type: 8 });
const listing = (names: Iterable<string>): PositionedListing => inPositionOrder(['.', '..', ...names].map(entry));
const SIZE = (e: FuseDirEntry): number => 24 + e.name.length;

test('positions: "." and ".." first, names above them, exact in a double and distinct over 200,000 names', (t) => {
  t.is(positionOf('.'), 1);
  t.is(positionOf('..'), 2);
  const seen = new Set<number>();
  for (let i = 0; i < 200_000; i++) {
    const p = positionOf(`file-${i}.o`);
    if (p <= 2 || p >= 2 ** 53 || !Number.isInteger(p)) t.fail(`position ${p} of file-${i}.o`);
    seen.add(p);
  }
  t.is(seen.size, 200_000);
  t.is(positionOf('same'), positionOf('same'));
  t.deepEqual(listing(['b', 'a']).entries.slice(0, 2).map((e) => e.name), ['.', '..']);
});

test('a reader resuming after creates, unlinks and renames between its pages sees each unchanged name once', (t) => {
  const names = new Set(Array.from({ length: 500 }, (_, i) => `f${i}`));
  const unchanged = new Set(names);
  const seen: string[] = [];
  let pos = 0;
  let round = 0;
  for (;;) {
    // Every page comes from a fresh listing of the directory as it is now, as after a change.
    const l = listing(names);
    const start = firstAfter(l, pos);
    const n = entriesThatFit(l, start, 400, SIZE);
    if (n === 0) break;
    for (let i = start; i < start + n; i++) seen.push(l.entries[i]!.name);
    pos = l.positions[start + n - 1]!;
    // Change the directory: one name goes, one comes, one is renamed.
    round++;
    const gone = `f${(round * 37) % 500}`, renamed = `f${(round * 53 + 7) % 500}`;
    for (const x of [gone, renamed]) { if (names.delete(x)) unchanged.delete(x); }
    names.add(`new${round}`);
    names.add(`moved${round}`);
  }
  t.true(round > 20, `${round} pages`);
  const counts = new Map<string, number>();
  for (const n of seen) counts.set(n, (counts.get(n) ?? 0) + 1);
  for (const n of unchanged) t.is(counts.get(n), 1, n);
  t.is(counts.get('.'), 1);
  t.is(counts.get('..'), 1);
  for (const [n, c] of counts) t.is(c, 1, `${n} returned ${c} times`);
});

test('a run of entries sharing a position is not split between two replies', (t) => {
  const at = (positions: number[]): PositionedListing => ({ entries: positions.map((_, i) => entry(`n${i}`)), positions });
  const ten = (): number => 10;
  // Room for three: the third would start a run that goes on past the reply, so only the first goes.
  t.is(entriesThatFit(at([3, 5, 5, 5, 9]), 0, 30, ten), 1);
  // The run that follows fits whole from there.
  t.is(entriesThatFit(at([3, 5, 5, 5, 9]), 1, 30, ten), 3);
  // A run that alone fills the reply is split (nothing else could be answered).
  t.is(entriesThatFit(at([5, 5, 5, 5]), 0, 20, ten), 2);
  // Everything fits: all of it.
  t.is(entriesThatFit(at([3, 4, 4]), 0, 100, ten), 3);
  t.is(firstAfter(at([3, 5, 5, 5, 9]), 5), 4);
  t.is(firstAfter(at([3, 5, 5, 5, 9]), 0), 0);
  t.is(firstAfter(at([3, 5, 5, 5, 9]), 9), 5);
});
