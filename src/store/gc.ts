// gc: give back the space of dead blocks. Segment files are append-only, so a segment's dead bytes come
// back only when its live blocks are copied forward into the active segment and the file is deleted.
//
// Crash safety is the ordering: the copies are appended and made durable, the block index is pointed at
// them in one commit, and only then is the old segment deleted. A crash before the commit leaves the
// index pointing at the old, intact segment (the copies are dead bytes past the committed end); a crash
// after it leaves an old segment no block refers to, which the next gc deletes.
import { PrismError, isPrismError } from '../errors.js';
import type { BlockRec } from './blocks.js';
import type { Store } from './store.js';

export interface GcReport {
  segmentsBefore: number;
  segmentsAfter: number;
  /** Segments deleted: compacted (live blocks moved) or holding no live block at all. */
  segmentsCompacted: number;
  blocksMoved: number;
  /** Segment file bytes before minus after (0 if nothing could be deleted). */
  bytesReclaimed: number;
  /** Live blocks that could not be read (EIO): they stay, and so does their segment. */
  blocksUnreadable: number;
}

export interface GcOptions {
  /** Compact a segment when live bytes / file size is below this (default 0.5). */
  threshold?: number;
  onProgress?: (done: number, total: number) => void;
}

export function gc(store: Store, opts: GcOptions = {}): GcReport {
  const steps = gcSteps(store, opts);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/**
 * gc one segment at a time: a serving host runs the other work between steps (src/host/admin.ts),
 * waiting first for any commit in progress (its fsyncs open segment files gc may delete). The block
 * index may change between steps (a VM frees or shares blocks), so each step moves what the index
 * holds for the segment then, not what it held at the start.
 */
export function* gcSteps(store: Store, opts: GcOptions = {}): Generator<void, GcReport> {
  if (store.readOnly) throw new PrismError('EROFS', 'gc needs the store to itself');
  const threshold = opts.threshold ?? 0.5;
  const progress = opts.onProgress ?? (() => {});
  store.commit(); // blocks with no references leave the index here
  const segs = store.segments;
  const before = segs.list();
  const bytesBefore = before.reduce((n, s) => n + segs.size(s), 0);

  // The active segment is compacted too once it is mostly dead: start a new one so it can be.
  const activeLive = store.segStatsDb.get(segs.active)?.live ?? 0;
  if (segs.end > 0 && activeLive / segs.end < threshold) {
    segs.rollNow();
    store.commit(); // the new active segment must be recorded before the old one can go
  }
  // Pick by the recorded statistics, but move (and protect) what the block index actually holds.
  const activeAtStart = segs.active;
  const candidates = new Set<number>();
  for (const s of before) {
    if (s === activeAtStart) continue;
    const size = segs.size(s);
    const live = store.segStatsDb.get(s)?.live ?? 0;
    if (live === 0 || size === 0 || live / size < threshold) candidates.add(s);
  }
  const live = new Map<number, Array<[Buffer, BlockRec]>>();
  if (candidates.size) {
    for (const { key, value } of store.blocksDb.getRange()) {
      if (!candidates.has(value.s)) continue;
      let l = live.get(value.s);
      if (!l) { l = []; live.set(value.s, l); }
      l.push([Buffer.from(key), value]);
    }
  }

  const order = [...candidates].sort((a, b) => a - b);
  const written = new Set<number>(); // segments gc appended to: never deleted by this run
  const deletable = (s: number) => s !== segs.active && !written.has(s);
  let compacted = 0, moved = 0, unreadable = 0, done = 0;
  const empty: number[] = [];
  if (live.size) segs.rollNow(); // copies go to a fresh segment, never into one being compacted
  for (const s of order) {
    const blocks = live.get(s);
    if (!blocks) { empty.push(s); continue; }
    blocks.sort((a, b) => a[1].o - b[1].o); // read the old segment front to back
    let keep = false;
    for (const [hash, was] of blocks) {
      const rec = store.blocks.get(hash); // as it is now: freed, or its count changed, since the start
      if (!rec || rec.s !== was.s || rec.o !== was.o) continue;
      let data: Buffer;
      try {
        data = segs.read(rec, rec.n, hash);
      } catch (e) {
        if (!isPrismError(e, 'EIO')) throw e;
        unreadable++;
        keep = true; // the block stays where it is, so does its segment
        continue;
      }
      const loc = segs.append(hash, data);
      written.add(loc.s);
      store.blocks.set(hash, { ...rec, s: loc.s, o: loc.o });
      moved++;
    }
    store.commit(); // makes the copies durable, then points the index at them
    if (!keep && deletable(s)) {
      store.blocks.dropCache(); // cached blocks may be views of the segment's mapping
      segs.remove(s);
      compacted++;
    }
    progress(++done, order.length);
    yield;
  }
  // No committed block lives in these (checked against the index after the first commit).
  for (const s of empty) {
    if (deletable(s)) {
      store.blocks.dropCache();
      segs.remove(s);
      compacted++;
    }
    progress(++done, order.length);
  }
  if (order.length === 0) progress(0, 0);

  const after = segs.list();
  const bytesAfter = after.reduce((n, s) => n + segs.size(s), 0);
  return {
    segmentsBefore: before.length,
    segmentsAfter: after.length,
    segmentsCompacted: compacted,
    blocksMoved: moved,
    bytesReclaimed: Math.max(0, bytesBefore - bytesAfter),
    blocksUnreadable: unreadable,
  };
}
