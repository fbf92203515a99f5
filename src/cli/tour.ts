// `npm start`: a short tour of the store on the default embedded store. Imports a sample tree
// (this project's node_modules), clones it many times, composes a volume from two others, and prints
// what each step cost in time and space. Re-running replaces the previous tour's volumes.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { importPath } from '../store/import.js';
import { Store } from '../store/store.js';
import { bytes, table } from './format.js';
import { progress } from './progress.js';

const CLONES = 100;

function ms(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export async function tour(dir: string): Promise<void> {
  const root = path.resolve(fileURLToPath(import.meta.url), '../../../..');
  const sample = [path.join(root, 'node_modules'), path.join(process.cwd(), 'node_modules')].find((p) => fs.existsSync(p));
  if (!sample) throw new Error('no sample tree: run npm install first');
  const out = (s: string) => process.stdout.write(`${s}\n`);
  out(`Prism tour, store ${path.resolve(dir)}`);
  const store = Store.open(dir);
  try {
    for (const n of store.volumeNames()) if (n.startsWith('tour-')) store.removeVolume(n);
    store.commit();
    const before = store.stats();

    const bar = progress('import', ' files');
    let t0 = process.hrtime.bigint();
    store.createVolume('tour-base');
    const imp = await importPath(store, 'tour-base', sample, { onProgress: (p) => bar.update(p.files, p.totalFiles, bytes(p.bytes)) });
    bar.stop();
    const importMs = ms(t0);
    const afterImport = store.stats();

    t0 = process.hrtime.bigint();
    const cloneTimes: number[] = [];
    for (let i = 0; i < CLONES; i++) {
      const c0 = process.hrtime.bigint();
      store.clone('tour-base', `tour-vm${String(i).padStart(3, '0')}`);
      cloneTimes.push(ms(c0));
    }
    const c0 = process.hrtime.bigint();
    store.commit();
    const commitMs = ms(c0);
    const clonesMs = ms(t0);

    // Each VM diverges a little: a private config file.
    for (let i = 0; i < CLONES; i++) {
      const v = store.volume(`tour-vm${String(i).padStart(3, '0')}`);
      const f = v.create(v.rootIno, 'vm-id', 0o644, 0, 0);
      v.write(f.ino, 0, Buffer.from(`vm ${i}\n`));
    }
    store.commit();

    t0 = process.hrtime.bigint();
    const firstTwo = fs.readdirSync(sample).filter((n) => !n.startsWith('.')).slice(0, 2);
    store.compose('tour-composed', [
      { volume: 'tour-vm000', path: `/${firstTwo[0]}`, dest: `/lib/${firstTwo[0]}` },
      { volume: 'tour-vm001', path: `/${firstTwo[1] ?? firstTwo[0]}`, dest: `/opt/${firstTwo[1] ?? firstTwo[0]}` },
      { volume: 'tour-vm001', path: '/vm-id', dest: '/etc/vm-id' },
    ]);
    const composeMs = ms(t0);
    store.commit();

    const st = store.stats();
    const sorted = [...cloneTimes].sort((a, b) => a - b);
    out('');
    out(table([
      ['step', 'time', 'result'],
      ['import', `${importMs.toFixed(0)} ms`, `${imp.files} files, ${bytes(imp.bytes)} from ${sample}`],
      [`clone x${CLONES}`, `${clonesMs.toFixed(1)} ms`, `median ${(sorted[CLONES >> 1] * 1000).toFixed(1)} µs per clone, then ${commitMs.toFixed(1)} ms to commit all durably`],
      ['compose', `${composeMs.toFixed(3)} ms`, `tour-composed from 3 subtrees of 2 volumes`],
    ]));
    out('');
    out(table([
      ['space', ''],
      ['volumes', String(st.volumes)],
      ['logical bytes', bytes(st.logicalBytes)],
      ['physical bytes', bytes(st.physicalBytes)],
      ['added by import', bytes(afterImport.physicalBytes - before.physicalBytes)],
      ['added by clones + writes', bytes(st.physicalBytes - afterImport.physicalBytes)],
      ['saved by sharing', `${bytes(st.savedBytes)} (dedup ratio ${st.dedupRatio.toFixed(1)}x)`],
    ]));
    out('');
    out('Try: prism volume ls    prism ls tour-composed:/    prism volume diff tour-vm000 tour-vm001');
  } finally {
    store.close();
  }
}
