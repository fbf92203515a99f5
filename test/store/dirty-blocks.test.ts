// Blocks written in part over stored ones (dirty-blocks.ts keeps only the pages written): random
// writes, reads, truncations, hole punches and flushes against a plain Buffer of the same file.
import test from 'ava';
import fc from 'fast-check';
import path from 'node:path';
import { Store } from '../../src/store/store.js';
import { BLOCK_SIZE } from '../../src/store/layout.js';
import { PAGE_SIZE } from '../../src/store/dirty-blocks.js';
import { tmpDir } from '../helpers/tmp.js';

type Op =
  | { op: 'write'; off: number; len: number; seed: number }
  | { op: 'read'; off: number; len: number }
  | { op: 'truncate'; size: number }
  | { op: 'punch'; off: number; len: number }
  | { op: 'flush' };

const SPAN = 3 * BLOCK_SIZE + 5000;
// Offsets and lengths near page and block edges as often as anywhere else.
const edge = fc.oneof(
  fc.nat(SPAN),
  fc.tuple(fc.nat(3), fc.integer({ min: -2, max: 2 })).map(([b, d]) => Math.max(0, b * BLOCK_SIZE + d)),
  fc.tuple(fc.nat(Math.ceil(SPAN / PAGE_SIZE)), fc.integer({ min: -1, max: 1 })).map(([p, d]) => Math.max(0, p * PAGE_SIZE + d)),
);
const len = fc.oneof(fc.integer({ min: 1, max: 300 }), fc.constantFrom(PAGE_SIZE, PAGE_SIZE + 1, 2 * PAGE_SIZE), fc.integer({ min: 1, max: BLOCK_SIZE + 10 }));
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('write' as const), off: edge, len, seed: fc.nat(255) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('read' as const), off: edge, len }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('truncate' as const), size: edge }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('punch' as const), off: edge, len }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('flush' as const) }) },
);

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff || 1;
  return b;
}

test('writes in part over stored blocks read back, truncate, punch and flush like a plain buffer', (t) => {
  const store = Store.open(path.join(tmpDir(t), 'store'));
  t.teardown(() => store.abandon());
  const v = store.createVolume('a');
  let n = 0;
  fc.assert(
    fc.property(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => {
      const f = v.create(v.rootIno, `f${n++}`, 0o644, 0, 0);
      // Stored blocks under every write to come: three whole ones and a short last one.
      let model = bytes(SPAN, 99);
      v.write(f.ino, 0, model);
      v.flushFile(f.ino);
      for (const o of ops) {
        if (o.op === 'write') {
          const data = bytes(o.len, o.seed);
          v.write(f.ino, o.off, data);
          if (o.off + o.len > model.length) model = Buffer.concat([model, Buffer.alloc(o.off + o.len - model.length)]);
          data.copy(model, o.off);
        } else if (o.op === 'read') {
          const got = v.read(f.ino, o.off, o.len).data;
          const want = model.subarray(Math.min(o.off, model.length), Math.min(o.off + o.len, model.length));
          if (!got.equals(want)) return false;
        } else if (o.op === 'truncate') {
          v.setattr(f.ino, { size: o.size });
          model = o.size <= model.length ? Buffer.from(model.subarray(0, o.size)) : Buffer.concat([model, Buffer.alloc(o.size - model.length)]);
        } else if (o.op === 'punch') {
          if (o.off >= model.length) continue;
          v.fallocate(f.ino, o.off, o.len, { keepSize: true, punchHole: true, zeroRange: false });
          model.fill(0, o.off, Math.min(model.length, o.off + o.len));
        } else {
          v.flushFile(f.ino);
        }
        if (v.getattr(f.ino).size !== model.length) return false;
      }
      const before = v.read(f.ino, 0, model.length + 10).data;
      v.flushFile(f.ino);
      const after = v.read(f.ino, 0, model.length + 10).data;
      return before.equals(model) && after.equals(model);
    }),
    { numRuns: 150 },
  );
  t.pass('every run agreed with the model (fast-check reports the first that did not)');
});

test('a page written in part keeps the stored bytes around it, before and after the flush', (t) => {
  const store = Store.open(path.join(tmpDir(t), 'store'));
  t.teardown(() => store.abandon());
  const v = store.createVolume('a');
  const f = v.create(v.rootIno, 'f', 0o644, 0, 0);
  const base = bytes(2 * BLOCK_SIZE, 5);
  v.write(f.ino, 0, base);
  v.flushFile(f.ino);
  store.commit();
  // A whole page needs nothing of the stored block; a partial one needs its neighbours.
  v.write(f.ino, BLOCK_SIZE + 3 * PAGE_SIZE, Buffer.alloc(PAGE_SIZE, 0xaa));
  v.write(f.ino, 100, Buffer.from('xyz'));
  const want = Buffer.from(base);
  want.fill(0xaa, BLOCK_SIZE + 3 * PAGE_SIZE, BLOCK_SIZE + 4 * PAGE_SIZE);
  want.write('xyz', 100);
  t.true(v.read(f.ino, 0, want.length).data.equals(want));
  v.flushFile(f.ino);
  store.commit();
  store.blocks.dropCache();
  t.true(v.read(f.ino, 0, want.length).data.equals(want), 'the flushed blocks hold the pages over the stored bytes');
});
