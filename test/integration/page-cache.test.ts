// Files' pages kept in the kernel across opens (FOPEN_KEEP_CACHE): with a metadata table a file
// read again and again is fetched from the host once, and a read still shows every change at once:
// the agent's own writes (they go through the kernel's page cache), another VM's writes and
// truncations and `prism put` (the change log's invalidations, pages included). The kernels cache
// attributes for 30 s here, so fresh data after another VM's change can only come from an
// invalidation. Without a table every open drops the pages, as before.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { agentStats, fuseSkipReason, type Agent } from '../helpers/agent.js';
import { prism } from '../helpers/host.js';
import { LONG_CACHE, twoVms } from '../helpers/two-vms.js';

const skip = fuseSkipReason();
const t = skip ? test.skip : test.serial;
if (skip) console.error(`page-cache.test: skipped: ${skip}`);

const long = LONG_CACHE;


/** READ calls the agent has sent the host so far. */
async function reads(a: Agent): Promise<number> {
  return (await agentStats(a)).counters.rpcsByProc.READ ?? 0;
}

const content = (tag: string, n: number): Buffer => Buffer.alloc(n, tag);

/** Reads a file through a descriptor that stays open: pread at 0 of the whole length each time. */
function preadAll(fd: number, n: number): Buffer {
  const b = Buffer.alloc(n + 1);
  return b.subarray(0, fs.readSync(fd, b, 0, b.length, 0));
}

t('a file read 10 times is fetched once; the agent\'s own writes show at once', async (tt) => {
  const { a } = await twoVms(tt, { a: long, b: long });
  const f = `${a.mp}/f`;
  fs.writeFileSync(f, content('x', 100_000));
  tt.deepEqual(fs.readFileSync(f), content('x', 100_000));
  const before = await reads(a);
  for (let i = 0; i < 10; i++) tt.deepEqual(fs.readFileSync(f), content('x', 100_000));
  tt.is(await reads(a) - before, 0, '10 reads after the first: none reach the host');

  fs.writeFileSync(f, content('y', 50_000));
  tt.deepEqual(fs.readFileSync(f), content('y', 50_000), 'own rewrite');
  const fd = fs.openSync(f, 'r+');
  fs.writeSync(fd, Buffer.from('zz'), 0, 2, 10);
  fs.closeSync(fd);
  const expected = content('y', 50_000);
  expected.write('zz', 10);
  tt.deepEqual(fs.readFileSync(f), expected, 'own pwrite');
  fs.truncateSync(f, 20);
  tt.deepEqual(fs.readFileSync(f), expected.subarray(0, 20), 'own truncate');
});

t('another VM\'s writes and truncations show at once, to a new open and to a descriptor held open', async (tt) => {
  const { a, b } = await twoVms(tt, { a: long, b: long });
  fs.writeFileSync(`${a.mp}/f`, content('a', 40_000));
  const B = `${b.mp}/f`;
  tt.deepEqual(fs.readFileSync(B), content('a', 40_000));
  const held = fs.openSync(B, 'r');
  tt.teardown(() => fs.closeSync(held));
  tt.deepEqual(preadAll(held, 40_000), content('a', 40_000));
  const b0 = await reads(b);
  for (let i = 0; i < 5; i++) tt.deepEqual(fs.readFileSync(B), content('a', 40_000));
  tt.is(await reads(b) - b0, 0, 'kept by b\'s kernel');

  // Same size, other bytes: only an invalidation of b's pages can show them (its attributes are 30 s).
  fs.writeFileSync(`${a.mp}/f`, content('b', 40_000));
  tt.deepEqual(fs.readFileSync(B), content('b', 40_000), 'rewritten by a, new open in b');
  tt.deepEqual(preadAll(held, 40_000), content('b', 40_000), 'rewritten by a, held descriptor in b');

  const fd = fs.openSync(`${a.mp}/f`, 'r+');
  fs.writeSync(fd, Buffer.from('cc'), 0, 2, 30_000);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  const expected = content('b', 40_000);
  expected.write('cc', 30_000);
  tt.deepEqual(preadAll(held, 40_000), expected, 'a pwrite by a');

  fs.truncateSync(`${a.mp}/f`, 100);
  tt.deepEqual(preadAll(held, 40_000), expected.subarray(0, 100), 'truncated by a');
  tt.deepEqual(fs.readFileSync(B), expected.subarray(0, 100));
});

t('a file replaced through the host (prism put) shows its new content at once', async (tt) => {
  const { store, a } = await twoVms(tt, { a: long, b: long });
  fs.writeFileSync(`${a.mp}/f`, 'old content\n');
  tt.is(fs.readFileSync(`${a.mp}/f`, 'utf8'), 'old content\n');
  tt.is(fs.readFileSync(`${a.mp}/f`, 'utf8'), 'old content\n');
  const src = path.join(path.dirname(store), 'new');
  fs.writeFileSync(src, 'new content!\n');
  const put = prism(store, ['put', 'vol:/f', src]);
  tt.is(put.code, 0, put.err);
  tt.is(fs.readFileSync(`${a.mp}/f`, 'utf8'), 'new content!\n');
});

t('with --no-meta every open fetches the file again (nothing tells the kernel of other VMs\' changes)', async (tt) => {
  const { a, b } = await twoVms(tt, { a: long, b: ['--no-meta'] });
  fs.writeFileSync(`${a.mp}/f`, content('a', 10_000));
  const before = await reads(b);
  for (let i = 0; i < 5; i++) tt.deepEqual(fs.readFileSync(`${b.mp}/f`), content('a', 10_000));
  tt.is(await reads(b) - before, 5);
});
