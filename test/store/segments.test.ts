// Segment files: records appended and read back through a read-only mapping of the segment.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { sha256 } from '../../src/store/blocks.js';
import { nativeAvailable } from '../../src/native/ivshmem.js';
import { Segments } from '../../src/store/segments.js';
import { tmpDir } from '../helpers/tmp.js';

const mapsOf = (file: string): number => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.endsWith(file)).length;

const t = nativeAvailable().ok ? test : test.skip;

t('reads that follow appends to the active segment do not map it again for every few records', (tt) => {
  const segs = new Segments(path.join(tmpDir(tt), 'segments'), 1, 0);
  // 300 blocks of 64 KiB (19 MiB), each read back right after it was appended, as a flush that reads
  // the block under the next one does.
  const written: Array<{ loc: { s: number; o: number }; hash: Buffer; data: Buffer }> = [];
  for (let i = 0; i < 300; i++) {
    const data = crypto.randomBytes(65536);
    const hash = sha256(data);
    written.push({ loc: segs.append(hash, data), hash, data });
    const back = written[Math.max(0, i - 1)]!;
    tt.true(segs.read(back.loc, back.data.length, back.hash).equals(back.data));
  }
  for (const w of written) tt.true(segs.read(w.loc, w.data.length, w.hash).equals(w.data));
  const maps = mapsOf(segs.file(1));
  tt.true(maps <= 2, `the active segment is mapped ${maps} times`);
  segs.close();
});

test.serial('the sync after a new segment file was made also fsyncs the segments directory, once', (tt) => {
  const dir = path.join(tmpDir(tt), 'segments');
  const segs = new Segments(dir, 1, 0);
  tt.teardown(() => segs.close());
  const opened = new Map<number, string>();
  const synced: string[] = [];
  const { openSync, fsyncSync } = fs;
  (fs as { openSync: unknown }).openSync = (p: fs.PathLike, ...rest: unknown[]) => {
    const fd = (openSync as (...a: unknown[]) => number)(p, ...rest);
    opened.set(fd, String(p));
    return fd;
  };
  (fs as { fsyncSync: unknown }).fsyncSync = (fd: number) => { synced.push(opened.get(fd) ?? '?'); fsyncSync(fd); };
  try {
    const data = crypto.randomBytes(1000);
    segs.append(sha256(data), data);
    segs.syncNow(segs.cut());
    tt.deepEqual(synced, [dir], 'the new file\'s directory');
    segs.append(sha256(Buffer.from('more')), Buffer.from('more'));
    segs.syncNow(segs.cut());
    tt.deepEqual(synced, [dir], 'not again for a file that had a name already');
  } finally {
    (fs as { openSync: unknown }).openSync = openSync;
    (fs as { fsyncSync: unknown }).fsyncSync = fsyncSync;
  }
});
