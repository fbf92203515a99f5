// Negative lookups answered by the agent from a complete directory in the metadata table: a create
// costs one RPC (CREATE, no LOOKUP miss before it) and a lookup of a missing name none (issue 13).
// The kernel then keeps the absence (a negative dentry) until a name made elsewhere invalidates it.
import fs from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { agentStats, fuseSkipReason } from '../helpers/agent.js';
import { prism } from '../helpers/host.js';
import { mountedVolume } from '../helpers/mounted-volume.js';
import { LONG_CACHE, twoVms } from '../helpers/two-vms.js';

const skip = fuseSkipReason();
const maybe = skip ? test.skip : test;
if (skip) test('negative lookups (skipped)', (t) => { t.log(skip); t.pass(); });

const N = 50;

maybe('creating files in a directory sends no LOOKUP per file; missing names are answered locally', async (t) => {
  const m = await mountedVolume(t, 'shm');
  const dir = path.join(m.mp, 'd');
  fs.mkdirSync(dir); // a new directory is shared complete at once: not even its first miss asks the host
  const before = (await agentStats(m.agent)).counters;
  for (let i = 0; i < N; i++) fs.closeSync(fs.openSync(path.join(dir, `f${i}`), 'wx'));
  for (let i = 0; i < N; i++) t.false(fs.existsSync(path.join(dir, `none${i}`)));
  const after = (await agentStats(m.agent)).counters;
  const sent = (p: string) => (after.rpcsByProc[p] ?? 0) - (before.rpcsByProc[p] ?? 0);
  t.is(sent('CREATE') + sent('CREATE_AT'), N, 'one RPC each (posted where the agent may: posted-creates.test.ts)');
  t.is(sent('LOOKUP'), 0, 'no LOOKUP RPC for a name the complete directory lacks');
  t.true(after.lookupsLocal - before.lookupsLocal >= 2 * N);
  t.true(fs.existsSync(path.join(dir, 'f0')));
  t.is(fs.readdirSync(dir).length, N);
  // A name the host adds (`prism put` through the running host) is in the table before put returns:
  // the complete directory never answers it absent.
  const src = path.join(m.dir, 'src.txt');
  fs.writeFileSync(src, 'from the host\n');
  t.is(prism(m.store, ['put', 'vol:/d/from-host', src]).code, 0);
  t.is(fs.readFileSync(path.join(dir, 'from-host'), 'utf8'), 'from the host\n');
});

maybe('a missing name looked up again is answered by the kernel, until a name made elsewhere shows at once', async (t) => {
  const { store, a, b } = await twoVms(t, { a: LONG_CACHE, b: LONG_CACHE });
  fs.mkdirSync(path.join(a.mp, 'd'));
  const A = (n: string) => path.join(a.mp, 'd', n), B = (n: string) => path.join(b.mp, 'd', n);
  t.false(fs.existsSync(A('x')));
  const before = (await agentStats(a)).counters;
  for (let i = 0; i < 10; i++) t.false(fs.existsSync(A('x')));
  const after = (await agentStats(a)).counters;
  // A late acknowledgement on a loaded machine gets a fenced and its kernel's cache dropped (by
  // design): then the name is looked up again, once.
  const dropped = after.cacheDrops - before.cacheDrops;
  const asked = after.lookupsLocal + after.lookupMisses - before.lookupsLocal - before.lookupMisses;
  t.true(asked <= dropped, `the kernel keeps the absence: ${asked} lookups reached the agent, ${dropped} cache drops`);

  // Made by the other VM: a's kernel is told before b's create returns (its entry timeout is 30 s).
  fs.writeFileSync(B('x'), 'from b\n');
  t.is(fs.readFileSync(A('x'), 'utf8'), 'from b\n');
  // Made through the host (prism put).
  t.false(fs.existsSync(A('y')));
  const src = path.join(path.dirname(store), 'src.txt');
  fs.writeFileSync(src, 'from the host\n');
  t.is(prism(store, ['put', 'vol:/d/y', src]).code, 0);
  t.is(fs.readFileSync(A('y'), 'utf8'), 'from the host\n');
  // Made by a itself, and renamed into place by b.
  t.false(fs.existsSync(A('z')));
  fs.writeFileSync(A('z'), 'own\n');
  t.is(fs.readFileSync(A('z'), 'utf8'), 'own\n');
  t.false(fs.existsSync(A('w')));
  fs.writeFileSync(B('tmp'), 'renamed\n');
  fs.renameSync(B('tmp'), B('w'));
  t.is(fs.readFileSync(A('w'), 'utf8'), 'renamed\n');
  // A directory made by b, looked up in vain by a first.
  t.false(fs.existsSync(A('sub')));
  fs.mkdirSync(B('sub'));
  t.true(fs.statSync(A('sub')).isDirectory());
});

maybe('with --no-meta a missing name is asked for every time (nothing would tell the kernel of a name made elsewhere)', async (t) => {
  const { a, b } = await twoVms(t, { a: LONG_CACHE, b: ['--no-meta', ...LONG_CACHE] });
  fs.mkdirSync(path.join(a.mp, 'd'));
  t.true(fs.statSync(path.join(b.mp, 'd')).isDirectory());
  const before = (await agentStats(b)).counters.rpcsByProc.LOOKUP ?? 0;
  for (let i = 0; i < 5; i++) t.false(fs.existsSync(path.join(b.mp, 'd', 'x')));
  t.is(((await agentStats(b)).counters.rpcsByProc.LOOKUP ?? 0) - before, 5, 'each lookup of x');
  fs.writeFileSync(path.join(a.mp, 'd', 'x'), 'x');
  t.true(fs.existsSync(path.join(b.mp, 'd', 'x')));
});
