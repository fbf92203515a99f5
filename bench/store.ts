// The store benchmark: clone and compose time against volume size, import against `cp -a` on the
// same file system in the same run, space for 10 identical imports, and the cost of a 1-byte write
// into a shared 1 GiB file.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bytes, table } from '../src/cli/format.js';
import { progress } from '../src/cli/progress.js';
import { importPath } from '../src/store/import.js';
import { BLOCK_SIZE } from '../src/store/layout.js';
import { Store } from '../src/store/store.js';
import type { Volume } from '../src/store/volume.js';

const now = () => process.hrtime.bigint();
const msSince = (t: bigint) => Number(now() - t) / 1e6;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** n small files in directories of 100, written through the store API. */
function fill(store: Store, v: Volume, n: number): void {
  const bar = progress(`fill ${n}`, ' files');
  let dir = v.rootIno;
  for (let i = 0; i < n; i++) {
    if (i % 100 === 0) dir = v.mkdir(v.rootIno, `d${i / 100}`, 0o755, 0, 0).ino;
    const f = v.create(dir, `f${i}`, 0o644, 0, 0);
    v.write(f.ino, 0, Buffer.from(`file ${i}\n`.repeat(1 + (i % 50))));
    if (i % 1000 === 0) { store.maybeCommit(); bar.update(i, n); }
  }
  store.commit();
  bar.stop();
}

function cloneAndCompose(store: Store, n: number) {
  const base = `base${n}`;
  fill(store, store.createVolume(base), n);
  const clone: number[] = [], cloneCommit: number[] = [], compose: number[] = [];
  for (let i = 0; i < 20; i++) {
    let t = now();
    store.clone(base, `c${n}-${i}`);
    clone.push(msSince(t));
    store.commit();
    cloneCommit.push(msSince(t));
    t = now();
    store.compose(`k${n}-${i}`, [{ volume: base, path: '/d0' }, { volume: `c${n}-${i}`, path: '/d1', dest: '/x/d1' }]);
    compose.push(msSince(t));
    store.commit();
  }
  return { files: n, cloneMs: median(clone), cloneWithCommitMs: median(cloneCommit), composeMs: median(compose) };
}

/** A source tree like a software install: many small files, some large ones. */
function makeTree(dir: string, files: number): number {
  let total = 0;
  const rnd = (i: number) => ((i * 2654435761) >>> 0) / 2 ** 32;
  for (let i = 0; i < files; i++) {
    const d = path.join(dir, `pkg${i % 200}`, `sub${i % 7}`);
    if (i < 1400) fs.mkdirSync(d, { recursive: true });
    const r = rnd(i);
    const size = i % 1000 === 0 ? 8 * 1024 * 1024 : Math.floor(r * r * 40_000);
    const b = Buffer.alloc(size);
    for (let k = 0; k + 4 <= size; k += 64) b.writeUInt32LE((i * 97 + k) >>> 0, k);
    fs.writeFileSync(path.join(d, `file${i}.dat`), b);
    total += size;
  }
  return total;
}

function timeCmd(cmd: string, args: string[]): number {
  const t = now();
  execFileSync(cmd, args, { stdio: 'ignore' });
  return msSince(t);
}

export async function run() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-bench-'));
  const fsType = execFileSync('df', ['-T', work]).toString().split('\n')[1]?.split(/\s+/)[1] ?? '?';
  try {
    const store = Store.open(path.join(work, 'store'));
    try {
      // 1. clone/compose against size
      const small = cloneAndCompose(store, 1_000);
      const large = cloneAndCompose(store, 100_000);

      // 2. import against cp -a (then sync, as import ends with a durable commit)
      const src = path.join(work, 'src');
      const FILES = 20_000;
      const srcBytes = makeTree(src, FILES);
      execFileSync('cp', ['-a', src, path.join(work, 'warm')]); // page cache warm for everyone
      fs.rmSync(path.join(work, 'warm'), { recursive: true });
      // Three rounds, cp and import taking turns, medians reported: this machine is noisy.
      const cpRuns: number[] = [], cpSyncRuns: number[] = [], newRuns: number[] = [], dedupRuns: number[] = [];
      let first = { files: 0 };
      for (let round = 0; round < 3; round++) {
        const dst = path.join(work, `cp${round}`);
        const c = timeCmd('cp', ['-a', src, dst]);
        cpRuns.push(c);
        cpSyncRuns.push(c + timeCmd('sync', ['-f', dst]));
        fs.rmSync(dst, { recursive: true });
        const fresh = Store.open(path.join(work, `fresh${round}`));
        try {
          fresh.createVolume('a');
          let t = now();
          first = await importPath(fresh, 'a', src);
          newRuns.push(msSince(t));
          fresh.createVolume('b');
          t = now();
          await importPath(fresh, 'b', src);
          dedupRuns.push(msSince(t));
        } finally {
          fresh.close();
          fs.rmSync(path.join(work, `fresh${round}`), { recursive: true });
        }
      }
      const cpMs = median(cpRuns), cpSyncMs = median(cpSyncRuns), importNewMs = median(newRuns), importDedupMs = median(dedupRuns);
      const phys0 = store.stats().physicalBytes;
      let afterFirst = phys0;
      for (let i = 0; i < 10; i++) {
        store.createVolume(`imp${i}`);
        await importPath(store, `imp${i}`, src);
        if (i === 0) afterFirst = store.stats().physicalBytes;
      }
      const afterTen = store.stats().physicalBytes;

      // 3. 1-byte write into a shared 1 GiB file
      const big = store.createVolume('big');
      const f = big.create(big.rootIno, 'disk.img', 0o644, 0, 0);
      const chunk = Buffer.alloc(BLOCK_SIZE * 16);
      const bar = progress('1 GiB file', ' MiB');
      for (let off = 0; off < 2 ** 30; off += chunk.length) {
        for (let k = 0; k < chunk.length; k += 512) chunk.writeUInt32LE(off + k, k);
        big.write(f.ino, off, chunk);
        store.maybeCommit();
        bar.update(off / 2 ** 20, 1024);
      }
      bar.stop();
      store.commit();
      const beforeWrite = store.stats();
      const clone = store.clone('big', 'big-clone');
      clone.write(f.ino, 123_456_789, Buffer.from([0xab]));
      store.commit();
      const afterWrite = store.stats();
      const oneByte = { physicalGrowth: afterWrite.physicalBytes - beforeWrite.physicalBytes, segmentGrowth: afterWrite.segmentFileBytes - beforeWrite.segmentFileBytes, blocks: afterWrite.blocks - beforeWrite.blocks };

      const results = {
        fsType,
        cloneCompose: { small, large, cloneRatio: large.cloneMs / small.cloneMs, composeRatio: large.composeMs / small.composeMs },
        import: {
          files: first.files, bytes: srcBytes,
          cpMs, cpSyncMs, importNewMs, importDedupMs, runs: { cpRuns, cpSyncRuns, newRuns, dedupRuns },
          newVsCp: importNewMs / cpMs, newVsCpSync: importNewMs / cpSyncMs, dedupVsCp: importDedupMs / cpMs,
          newMBps: srcBytes / 1e6 / (importNewMs / 1e3), dedupMBps: srcBytes / 1e6 / (importDedupMs / 1e3),
        },
        tenImports: { logicalPerImport: srcBytes, physicalFirst: afterFirst - phys0, physicalTen: afterTen - phys0, ratio: (afterTen - phys0) / (afterFirst - phys0) },
        oneByteWrite: { ...oneByte, blockSize: BLOCK_SIZE },
      };
      const tbl = table([
        ['measure', 'value', 'note'],
        ['clone, 1k files', `${small.cloneMs.toFixed(3)} ms`, `with durable commit ${small.cloneWithCommitMs.toFixed(2)} ms`],
        ['clone, 100k files', `${large.cloneMs.toFixed(3)} ms`, `with durable commit ${large.cloneWithCommitMs.toFixed(2)} ms; ratio to 1k ${results.cloneCompose.cloneRatio.toFixed(2)}`],
        ['compose, 1k files', `${small.composeMs.toFixed(3)} ms`, '2 sources'],
        ['compose, 100k files', `${large.composeMs.toFixed(3)} ms`, `ratio to 1k ${results.cloneCompose.composeRatio.toFixed(2)}`],
        [`cp -a (${fsType})`, `${cpMs.toFixed(0)} ms`, `${FILES} files, ${bytes(srcBytes)}; + sync ${cpSyncMs.toFixed(0)} ms; medians of 3`],
        ['import, new content', `${importNewMs.toFixed(0)} ms`, `${results.import.newVsCp.toFixed(2)}x cp -a, ${results.import.newVsCpSync.toFixed(2)}x cp -a + sync, ${results.import.newMBps.toFixed(0)} MB/s`],
        ['import, already stored', `${importDedupMs.toFixed(0)} ms`, `${results.import.dedupVsCp.toFixed(2)}x cp -a, ${results.import.dedupMBps.toFixed(0)} MB/s`],
        ['10 identical imports', bytes(afterTen - phys0), `${results.tenImports.ratio.toFixed(3)}x one import (${bytes(afterFirst - phys0)})`],
        ['1-byte write, shared 1 GiB', bytes(oneByte.physicalGrowth), `${oneByte.blocks} new block(s) of ${bytes(BLOCK_SIZE)}`],
      ]);
      return { results, table: tbl };
    } finally {
      store.close();
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
