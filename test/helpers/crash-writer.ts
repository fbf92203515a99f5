// Child process for the crash test: writes, clones and composes in a loop, committing after each step
// and printing "ack <i>" only after the commit returned. The test kills it with SIGKILL at random.
import { Store } from '../../src/store/store.js';

export function content(i: number): Buffer {
  const size = (i * 7919) % 300_000;
  const b = Buffer.alloc(size);
  for (let k = 0; k < size; k += 4096) b.write(`file ${i} offset ${k}\n`, k);
  return b;
}

const rewrite = (i: number) => Buffer.from(`rewritten ${i}\n`);

/** File i as the writer leaves it: rewritten at offset 0 once file i+1 exists. */
export function expected(i: number, rewritten: boolean): Buffer {
  const b = content(i);
  if (!rewritten) return b;
  const r = rewrite(i);
  return b.length >= r.length ? Buffer.concat([r, b.subarray(r.length)]) : r;
}

function main(): void {
  const dir = process.argv[2];
  const store = Store.open(dir);
  if (!store.has('main')) { store.createVolume('main'); store.commit(); }
  const v = store.volume('main');
  let i = v.readdir(v.rootIno).filter((e) => e.name.toString().startsWith('f')).length;
  for (;;) {
    const f = v.create(v.rootIno, `f${i}`, 0o644, 0, 0);
    v.write(f.ino, 0, content(i));
    // Rewrite a shared block of an older file: copy-on-write under clones.
    if (i > 0) v.write(v.resolve(`/f${i - 1}`), 0, rewrite(i - 1));
    if (i % 5 === 0) store.clone('main', `c${i}`);
    if (i % 7 === 0 && i > 0) store.compose(`k${i}`, [{ volume: 'main', path: `/f${i}`, dest: '/x/f' }]);
    if (i % 11 === 0 && store.has(`c${i - 10}`)) store.removeVolume(`c${i - 10}`);
    store.commit();
    process.stdout.write(`ack ${i}\n`);
    i++;
  }
}

if (process.argv[2]) main();
