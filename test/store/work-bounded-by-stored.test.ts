// A guest names ranges; the store must work in proportion to what is stored, not to the range:
// SETATTR 2^40 / 2^50 then PUNCH_HOLE over all of it, ZERO_RANGE, truncate, SEEK, READ, COPY_RANGE
// each touch only the blocks that exist. Work is counted as calls
// into the volume's tree (each is one B-tree descent), with a budget that stops a runaway loop early.
import test, { type ExecutionContext } from 'ava';
import crypto from 'node:crypto';
import path from 'node:path';
import { Dispatcher } from '../../src/host/dispatch.js';
import { Proc } from '../../src/protocol/procs.js';
import { MAX_FILE_SIZE } from '../../src/posix/limits.js';
import { BLOCK_SIZE } from '../../src/store/layout.js';
import { Store } from '../../src/store/store.js';
import { tmpDir } from '../helpers/tmp.js';

const FALLOC_KEEP_SIZE = 1, FALLOC_PUNCH_HOLE = 2, FALLOC_ZERO_RANGE = 0x10;
const SEEK_DATA = 3, SEEK_HOLE = 4;
/** Tree calls allowed per request: a few per stored block plus a constant; a range walk needs millions. */
const BUDGET = 5000;

class OverBudget extends Error {}

function setup(t: ExecutionContext) {
  const dir = tmpDir(t);
  const store = Store.open(path.join(dir, 'store'));
  t.teardown(() => store.abandon());
  const v = store.createVolume('v');
  const d = new Dispatcher(store, { name: 'vm', volumes: ['v'] }, crypto.randomBytes(32), { commit: () => Promise.resolve(), verifier: new Uint8Array(8) });
  const fh = (ino: number) => d.key.make({ volumeId: v.rec.id, ino });
  // Count descents into the tree; past the budget, throw out of the loop that is running away.
  let work = 0;
  const tree = store.tree;
  const count = <A extends unknown[], R>(fn: (...a: A) => R) => (...a: A): R => {
    if (++work > BUDGET) throw new OverBudget(`more than ${BUDGET} tree calls in one request`);
    return fn(...a);
  };
  tree.get = count(tree.get.bind(tree));
  tree.put = count(tree.put.bind(tree));
  tree.del = count(tree.del.bind(tree));
  tree.each = count(tree.each.bind(tree));
  tree.first = count(tree.first.bind(tree));
  /** Run one request with a fresh budget; returns its result and the work it took. */
  const call = (proc: Proc, args: unknown[]): { r: unknown[]; work: number } => {
    work = 0;
    const r = d.call(proc, args);
    if (r instanceof Promise) throw new Error('unexpected wait');
    return { r, work };
  };
  /** Run something outside any request's budget (a background flush). */
  const unbounded = (fn: () => void): void => {
    work = -Infinity;
    try { fn(); } finally { work = 0; }
  };
  return { dir, store, v, fh, call, unbounded };
}

/** A file of `size` bytes holding one block of data at each of `at` (block-aligned offsets). */
function sparseFile(s: ReturnType<typeof setup>, name: string, size: number, at: number[]): number {
  const { v, fh, call } = s;
  const f = v.create(v.rootIno, name, 0o644, 0, 0).ino;
  call(Proc.SETATTR, [fh(f), [null, null, null, size, null, null]]);
  for (const off of at) call(Proc.WRITE, [fh(f), off, crypto.randomBytes(BLOCK_SIZE), 0]);
  return f;
}

for (const size of [2 ** 40, MAX_FILE_SIZE]) {
  test(`PUNCH_HOLE|KEEP_SIZE over a 2^${Math.log2(size)}-byte sparse file walks its blocks, not its range`, (t) => {
    const s = setup(t);
    const { fh, call, v } = s;
    const data = [0, 2 ** 30, size / 2, size - BLOCK_SIZE];
    const f = sparseFile(s, 'big', size, data);
    const { work } = call(Proc.FALLOCATE, [fh(f), 0, size, FALLOC_KEEP_SIZE | FALLOC_PUNCH_HOLE]);
    t.true(work < 200, `punching a hole over everything took ${work} tree calls for ${data.length} blocks`);
    t.is(v.blockList(f).length, 0, 'every block is gone');
    t.is(v.getattr(f).size, size, 'KEEP_SIZE kept the size');
    const r = call(Proc.READ, [fh(f), size / 2, 4096]).r;
    t.true(Buffer.from(r[0] as Uint8Array).equals(Buffer.alloc(4096)), 'what was data reads as zeros');
  });
}

test('ZERO_RANGE with unaligned ends over a huge range keeps what lies outside it', (t) => {
  const s = setup(t);
  const { fh, call, v } = s;
  const size = 2 ** 44;
  const f = sparseFile(s, 'z', size, [0, 2 ** 40, size - BLOCK_SIZE]);
  const before = Buffer.from(call(Proc.READ, [fh(f), 0, 100]).r[0] as Uint8Array);
  const tail = Buffer.from(call(Proc.READ, [fh(f), size - 100, 100]).r[0] as Uint8Array);
  const { work } = call(Proc.FALLOCATE, [fh(f), 100, size - 200, FALLOC_KEEP_SIZE | FALLOC_ZERO_RANGE]);
  t.true(work < 300, `zeroing took ${work} tree calls`);
  t.true(Buffer.from(call(Proc.READ, [fh(f), 0, 100]).r[0] as Uint8Array).equals(before), 'the head survives');
  t.true(Buffer.from(call(Proc.READ, [fh(f), size - 100, 100]).r[0] as Uint8Array).equals(tail), 'the tail survives');
  t.true(Buffer.from(call(Proc.READ, [fh(f), 2 ** 40, 100]).r[0] as Uint8Array).equals(Buffer.alloc(100)));
  t.deepEqual(v.blockList(f).map(([i]) => i), [0, size / BLOCK_SIZE - 1], 'only the two edge blocks are stored');
});

test('SEEK_DATA / SEEK_HOLE and truncation of a 2^50-byte sparse file are bounded', (t) => {
  const s = setup(t);
  const { fh, call } = s;
  const size = MAX_FILE_SIZE;
  const f = sparseFile(s, 's', size, [2 ** 45, 2 ** 45 + BLOCK_SIZE]);
  let r = call(Proc.SEEK, [fh(f), 0, SEEK_DATA]);
  t.is(r.r[0], 2 ** 45);
  t.true(r.work < 50, `SEEK_DATA took ${r.work}`);
  r = call(Proc.SEEK, [fh(f), 2 ** 45, SEEK_HOLE]);
  t.is(r.r[0], 2 ** 45 + 2 * BLOCK_SIZE);
  t.true(r.work < 50, `SEEK_HOLE took ${r.work}`);
  r = call(Proc.SEEK, [fh(f), 2 ** 45 + 2 * BLOCK_SIZE, SEEK_HOLE]);
  t.is(r.r[0], 2 ** 45 + 2 * BLOCK_SIZE);
  r = call(Proc.SETATTR, [fh(f), [null, null, null, 2 ** 45 + 100, null, null]]);
  t.true(r.work < 100, `truncating took ${r.work}`);
  r = call(Proc.SETATTR, [fh(f), [null, null, null, 0, null, null]]);
  t.true(r.work < 100, `truncating to 0 took ${r.work}`);
});

test('COPY_RANGE of a huge sparse range shares the blocks that exist and skips the holes', (t) => {
  const s = setup(t);
  const { fh, call, v } = s;
  const size = 2 ** 40;
  const src = sparseFile(s, 'src', size, [BLOCK_SIZE * 3, 2 ** 29]);
  const dst = sparseFile(s, 'dst', size, [BLOCK_SIZE * 5, 2 ** 29 + BLOCK_SIZE]);
  // One call copies up to the per-call limit (1 GiB of whole blocks): the rest is the caller's next call.
  const { r, work } = call(Proc.COPY_RANGE, [fh(src), 0, fh(dst), 0, size]);
  t.true((r[0] as number) >= 2 ** 29 + BLOCK_SIZE * 2, `copied ${String(r[0])}`);
  t.true(work < 400, `copying a mostly empty GiB took ${work} tree calls`);
  const upto = (r[0] as number) / BLOCK_SIZE;
  t.deepEqual(v.blockList(dst).map(([i]) => i).filter((i) => i < upto), [3, 2 ** 29 / BLOCK_SIZE], 'dst holds exactly src\'s blocks in the copied range');
  t.true(Buffer.from(call(Proc.READ, [fh(dst), BLOCK_SIZE * 3, 64]).r[0] as Uint8Array).equals(Buffer.from(call(Proc.READ, [fh(src), BLOCK_SIZE * 3, 64]).r[0] as Uint8Array)));
  t.is(v.getattr(dst).size, size);
});

// Export of a 2^50-byte sparse file: test/store/export-sparse.test.ts (run under a file size limit).

test('a 4 KiB WRITE into a file with thousands of partly written blocks is bounded, and its block count exact', (t) => {
  const s = setup(t);
  const { fh, call, v, unbounded } = s;
  const blocks = 3000;
  // Every other block already stored (whole), the rest fresh: both kinds among the dirty ones.
  const f = sparseFile(s, 'r', blocks * BLOCK_SIZE, Array.from({ length: blocks / 2 }, (_, i) => 2 * i * BLOCK_SIZE));
  const page = crypto.randomBytes(4096);
  for (let i = 0; i < blocks; i++) call(Proc.WRITE, [fh(f), i * BLOCK_SIZE + 4096, page, 0]);
  const { work } = call(Proc.WRITE, [fh(f), 7 * BLOCK_SIZE + 8192, page, 0]);
  t.true(work < 50, `one 4 KiB write took ${work} tree calls with ${blocks} dirty blocks`);
  // Stored blocks count as stored (whole); fresh ones up to the end of the file (whole here).
  const expected = blocks * BLOCK_SIZE;
  t.is(v.getattr(f).blocks * 512, expected, 'blocks before the flush');
  // Growing the file past a fresh last block: it then counts to the new end.
  call(Proc.WRITE, [fh(f), blocks * BLOCK_SIZE + 100, page, 0]);
  t.is(v.getattr(f).blocks, Math.ceil((expected + 100 + 4096) / 512), 'a fresh tail block counts to the end of the file');
  call(Proc.SETATTR, [fh(f), [null, null, null, (blocks - 1) * BLOCK_SIZE + 5000, null, null]]);
  t.is(v.getattr(f).blocks, Math.ceil((expected - BLOCK_SIZE + 5000) / 512), 'truncated into the last fresh block');
  unbounded(() => v.flush());
  t.is(v.getattr(f).blocks, Math.ceil((expected - BLOCK_SIZE + 5000) / 512), 'the same once stored');
});
